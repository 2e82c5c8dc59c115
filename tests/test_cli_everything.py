"""``leansam everything``: outputs, and one clean error line for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from leansam.cli import main
from leansam.data.coco import decode_mask
from tests.test_cli import assert_clean_error, model_args, run

MODEL = "mobile_sam"


def test_boxes_strategy_writes_one_record_per_box(tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys):
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"bbox": [10, 10, 100, 80], "score": 0.9}, {"bbox": [300, 200, 200, 150]}]))
    out = tmp_path / "out"
    code, _, err = run(
        [
            "everything",
            mobile_sam_image_file,
            "--strategy",
            "boxes",
            "--boxes",
            boxes,
            *model_args(mobile_sam_ckpt, out),
        ],
        capsys,
    )
    assert code == 0, err
    meta = json.loads((out / "masks.json").read_text())
    assert meta["strategy"] == "boxes" and meta["stats"]["prompts_decoded"] == 2
    assert len(meta["masks"]) == 2
    for rec in meta["masks"]:
        m = decode_mask(rec["segmentation"], 480, 640)
        assert rec["area"] == int(m.sum())
    assert np.asarray(Image.open(out / "overlay.png")).shape == (480, 640, 3)


def test_grid_strategy_runs_with_progress(tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        [
            "everything",
            mobile_sam_image_file,
            "--points-per-side",
            "4",
            "--pred-iou-thresh",
            "0",
            "--stability-score-thresh",
            "0",
            *model_args(mobile_sam_ckpt, out),
        ],
        capsys,
    )
    assert code == 0, err
    meta = json.loads((out / "masks.json").read_text())
    assert meta["stats"]["prompts_decoded"] == 16
    assert all(r["predicted_iou"] == pytest.approx(r["predicted_iou"]) for r in meta["masks"])


@pytest.mark.parametrize(
    ("extra", "content", "pattern"),
    [
        (["--strategy", "boxes"], None, "needs --boxes"),
        (["--strategy", "boxes", "--boxes", "dets.json"], "[]", "no boxes"),
        (["--strategy", "boxes", "--boxes", "dets.json"], "{not json", "bad boxes file"),
        (["--strategy", "boxes", "--boxes", "dets.json"], '[{"bbox": [900, 900, 50, 50]}]', "bad boxes file"),
        (["--strategy", "boxes", "--boxes", "dets.json"], "", "not valid JSON"),  # empty file
        (
            ["--strategy", "boxes", "--boxes", "dets.json"],
            '[{"box": [1, 2, 3, 4]}]',
            "[0]: missing key 'bbox'",
        ),
        (
            ["--strategy", "boxes", "--boxes", "dets.json"],
            '[{"bbox": [1, 2, 3]}]',
            "[0].bbox: expected [x, y, width, height]",
        ),
        (["--strategy", "boxes", "--boxes", "dets.json"], '[{"bbox": [10, 10, 0, 20]}]', "has no area"),
        (["--strategy", "boxes", "--boxes", "missing.json"], None, "not found"),
        (["--points-per-side", "0"], None, "must be positive"),
        (["--points-per-side", "-3"], None, "must be positive"),
        (["--strategy", "hierarchical", "--points-per-side", "2"], None, "points_per_side >= 4"),
        (["--points-per-batch", "0"], None, "points_per_batch must be a positive integer"),
        (["--crop-n-layers", "-1"], None, "crop_n_layers must be a non-negative integer"),
        (["--min-mask-region-area", "-5"], None, "min_mask_region_area must be >= 0"),
        (["--box-nms-thresh", "nan"], None, "box_nms_thresh must be a finite number"),
        (
            ["--strategy", "boxes", "--boxes", "dets.json", "--crop-n-layers", "1"],
            '[{"bbox": [1, 1, 20, 20]}]',
            "crop_n_layers must be 0",
        ),
    ],
)
def test_bad_input_gives_one_error_line(
    tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys, extra, content, pattern
):
    if content is not None:
        (tmp_path / "dets.json").write_text(content)
    extra = [str(tmp_path / e) if e.endswith(".json") else e for e in extra]
    out = tmp_path / "out"
    code = main(
        [
            "everything",
            str(mobile_sam_image_file),
            *extra,
            *model_args(mobile_sam_ckpt, out),
        ]
    )
    err = capsys.readouterr().err
    assert_clean_error(code, err, out, pattern)
