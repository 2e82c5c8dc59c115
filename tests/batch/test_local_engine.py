"""Dataset runs on the local engine through the CLI: outputs, resume, failures, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

import leansam
from leansam.data.coco import decode_mask, mask_bbox
from leansam.io import load_image
from tests.test_cli import assert_clean_error, run

from .conftest import EVERYTHING_OPTS, N_IMAGES, folder_bytes, shard_lines

ROOT = Path(leansam.__file__).resolve().parents[1]


def _everything(dataset, out, capsys, *extra):
    return run(["everything", dataset, *EVERYTHING_OPTS, "--shard-size", "3", "--out", out, *extra], capsys)


def test_everything_over_a_folder_writes_shards_and_a_coco_file(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _everything(dataset, out, capsys)
    assert code == 0, err
    lines = shard_lines(out)
    assert [ln["file"] for ln in lines] == [f"00000{i}.jpg" for i in range(5)] + [
        "sub/000005.jpg",
        "sub/000006.jpg",
    ]
    assert len(list((out / "shards").glob("*.jsonl"))) == 3  # 7 images in shards of 3
    n_masks = 0
    for ln in lines:
        h, w = load_image(dataset / ln["file"]).shape[:2]
        assert (ln["status"], ln["height"], ln["width"]) == ("ok", h, w)
        for m in ln["masks"]:
            mask = decode_mask(m["segmentation"], h, w)
            assert m["area"] == int(mask.sum()) and m["bbox"] == mask_bbox(mask)
        n_masks += len(ln["masks"])
    assert n_masks > 0
    coco = COCO(str(out / "coco.json"))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == sorted(ln["file"] for ln in lines)
    assert len(coco.getAnnIds()) == n_masks == json.loads((out / "summary.json").read_text())["masks"]
    assert "7 images (7 labelled, 0 failed)" in err


def test_dataset_masks_are_the_single_image_commands_masks(dataset, tmp_path, capsys):
    code, _, err = _everything(dataset, tmp_path / "out", capsys)
    assert code == 0, err
    code, _, err = run(
        ["everything", dataset / "000002.jpg", *EVERYTHING_OPTS, "--out", tmp_path / "one"], capsys
    )
    assert code == 0, err
    single = json.loads((tmp_path / "one" / "masks.json").read_text())["masks"]
    line = next(ln for ln in shard_lines(tmp_path / "out") if ln["file"] == "000002.jpg")
    assert single and [m["segmentation"] for m in line["masks"]] == [m["segmentation"] for m in single]


def test_crash_then_rerun_labels_every_image_once_and_a_finished_run_is_idempotent(dataset, tmp_path, capsys):
    clean = tmp_path / "clean"
    assert _everything(dataset, clean, capsys)[0] == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEANSAM_BATCH_EXIT_AFTER": f"5:{tmp_path / 'died'}"}
    args = ["everything", str(dataset), *EVERYTHING_OPTS, "--shard-size", "3", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "leansam.cli", *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr  # died in the middle of the second shard
    assert len(shard_lines(out)) == 3 and not (out / "coco.json").exists()
    code, _, err = _everything(dataset, out, capsys)
    assert code == 0, err
    assert "3 image(s) already done" in err and "labelling 4 in 2 shard(s)" in err
    counts = Counter(ln["file"] for ln in shard_lines(out))
    assert len(counts) == N_IMAGES and set(counts.values()) == {1}
    # Same images, same masks as the uninterrupted run (shards are numbered differently).
    assert sorted(map(json.dumps, shard_lines(out))) == sorted(map(json.dumps, shard_lines(clean)))
    before = folder_bytes(out)
    code, _, err = _everything(dataset, out, capsys)
    assert code == 0 and "labelling 0 in 0 shard(s)" in err
    assert folder_bytes(out) == before


def test_an_unreadable_image_is_recorded_and_the_rest_finish(dataset, tmp_path, capsys):
    (dataset / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    code, _, err = _everything(dataset, out, capsys)
    assert code == 0, err
    failed = [ln for ln in shard_lines(out) if ln["status"] == "failed"]
    assert [f["file"] for f in failed] == ["broken.jpg"] and "not an image file" in failed[0]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["labelled"], summary["failed"]) == (N_IMAGES + 1, N_IMAGES, 1)
    assert summary["failures"][0]["file"] == "broken.jpg"
    assert "warning: skipped broken.jpg" in err
    assert "broken.jpg" not in {
        img["file_name"] for img in json.loads((out / "coco.json").read_text())["images"]
    }


def test_segment_takes_boxes_per_image_from_a_coco_file(synth_images, tmp_path, capsys):
    out = tmp_path / "out"
    ann_file = synth_images / "annotations.json"
    code, _, err = run(["segment", synth_images / "images", "--prompts", ann_file, "--out", out], capsys)
    assert code == 0, err
    gt = COCO(str(ann_file))
    lines = shard_lines(out)
    assert len(lines) == N_IMAGES
    for ln in lines:
        image_id = ln["image_id"]
        assert gt.imgs[image_id]["file_name"].endswith(ln["file"])
        anns = gt.loadAnns(gt.getAnnIds(imgIds=image_id))
        assert [m["category_id"] for m in ln["masks"]] == [a["category_id"] for a in anns]
        x, y, w, h = anns[0]["bbox"]
        assert ln["masks"][0]["box"] == [x, y, x + w, y + h]
    res = COCO(str(out / "coco.json"))
    assert set(res.getImgIds()) == set(gt.getImgIds())
    assert {c["id"] for c in res.dataset["categories"]} >= {
        a["category_id"] for a in gt.dataset["annotations"]
    }


def test_segment_with_the_same_box_for_every_image(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["segment", dataset, "--box", "5,5,60,60", "--multimask", "--out", out], capsys)
    assert code == 0, err
    lines = shard_lines(out)
    assert all(len(ln["masks"]) == 1 and ln["masks"][0]["box"] == [5, 5, 60, 60] for ln in lines)
    assert np.isfinite([ln["masks"][0]["score"] for ln in lines]).all()


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("empty", "no images found in"),
        ("missing", "names missing.jpg, which is not a file"),
        ("unreachable", "cannot reach the Ray cluster at 127.0.0.1:1"),
        ("workers", "--address and --workers need --engine ray"),
        ("single-ray", "--engine, --address and --workers are for dataset inputs"),
    ],
)
def test_bad_dataset_input_is_one_error_line_and_nothing_written(case, pattern, dataset, tmp_path, capsys):
    source, extra = dataset, []
    if case == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "missing":
        source = tmp_path / "list.txt"
        source.write_text(f"{dataset / '000000.jpg'}\nmissing.jpg\n")
    elif case == "unreachable":
        extra = ["--engine", "ray", "--address", "127.0.0.1:1"]
    elif case == "workers":
        extra = ["--workers", "2"]
    else:
        source, extra = dataset / "000000.jpg", ["--engine", "ray"]
    out = tmp_path / "out"
    code, _, err = run(["everything", source, *EVERYTHING_OPTS, "--out", out, *extra], capsys)
    assert_clean_error(code, err, out, pattern)


def test_an_output_folder_of_another_run_is_refused_untouched(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _everything(dataset, out, capsys)[0] == 0
    before = folder_bytes(out)
    code, _, err = run(["everything", dataset, "--points-per-side", "5", "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "holds results of a different run (differs in: generator)" in err
    assert folder_bytes(out) == before


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--engine", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--workers", "2"], "--address and --workers need --engine ray"),
    ],
)
def test_eval_engine_options_bad_input(extra, pattern, synth_images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--model", "leansam_nano", "--images", synth_images / "images"]
    args += ["--annotations", synth_images / "annotations.json", "--out", out, *extra]
    code, _, err = run(args, capsys)
    assert_clean_error(code, err, out, pattern)


def test_images_added_to_the_source_are_the_only_ones_labelled_on_the_next_run(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _everything(dataset, out, capsys)[0] == 0
    first = (out / "shards" / "shard-000000.jsonl").read_bytes()
    (dataset / "new.jpg").write_bytes((dataset / "000001.jpg").read_bytes())
    code, _, err = _everything(dataset, out, capsys)
    assert code == 0 and "7 image(s) already done" in err and "labelling 1 in 1 shard(s)" in err
    assert [ln["file"] for ln in shard_lines(out)][-1] == "new.jpg"
    assert (out / "shards" / "shard-000000.jsonl").read_bytes() == first
    assert len(json.loads((out / "coco.json").read_text())["images"]) == N_IMAGES + 1


def test_ray_engine_without_ray_installed_names_the_extra(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    code, _, err = run(["everything", dataset, *EVERYTHING_OPTS, "--engine", "ray", "--out", out], capsys)
    assert_clean_error(code, err, out, "--engine ray needs Ray Data: pip install 'leansam[ray]'")
