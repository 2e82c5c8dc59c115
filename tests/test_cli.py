"""The ``leansam`` command line, end to end: outputs, and one clean error line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from leansam.cli import main
from leansam.data.coco import decode_mask
from tests import parity as P

MODEL = "mobile_sam"


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_args(ckpt, out):
    """The options every command here ends with: the MobileSAM model, its checkpoint, the output folder."""
    return ["--model", MODEL, "--checkpoint", str(ckpt), "--out", str(out)]


def assert_clean_error(code, err, out_dir, pattern):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".leansam-stage")]


def test_segment_writes_masks_json_pngs_and_overlay(tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        [
            "segment",
            mobile_sam_image_file,
            "--box",
            "300,200,560,420",
            "--point",
            "430,310",
            *model_args(mobile_sam_ckpt, out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "encoded" in err and "decoded 1 prompt" in err
    meta = json.loads((out / "masks.json").read_text())
    assert meta["model"] == MODEL and meta["image"] == {
        "file": str(mobile_sam_image_file),
        "height": 480,
        "width": 640,
    }
    (rec,) = meta["masks"]
    assert rec["prompt"] == {"points": [[430.0, 310.0, 1]], "box": [300.0, 200.0, 560.0, 420.0]}
    png = np.asarray(Image.open(out / rec["file"])) > 0
    assert np.array_equal(decode_mask(rec["segmentation"], 480, 640), png)
    assert rec["area"] == int(png.sum())
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (480, 640, 3)


def test_segment_matches_the_python_api(tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys):
    import leansam

    out = tmp_path / "out"
    code, _, err = run(
        [
            "segment",
            mobile_sam_image_file,
            "--point",
            "200,150",
            "--point",
            "420,330,0",
            "--multimask",
            *model_args(mobile_sam_ckpt, out),
        ],
        capsys,
    )
    assert code == 0, err
    meta = json.loads((out / "masks.json").read_text())
    predictor = leansam.SamPredictor(leansam.build_model(MODEL, checkpoint=mobile_sam_ckpt))
    predictor.set_image(np.asarray(Image.open(mobile_sam_image_file).convert("RGB")))
    masks, scores, _ = predictor.predict(np.array([[200, 150], [420, 330]]), np.array([1, 0]))
    assert len(meta["masks"]) == 3
    for rec, m, s in zip(meta["masks"], masks, scores):
        assert np.array_equal(decode_mask(rec["segmentation"], 480, 640), m)
        assert rec["score"] == pytest.approx(float(s), abs=1e-6)


def test_many_boxes_are_one_prompt_each(tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys):
    out = tmp_path / "out"
    args = ["segment", mobile_sam_image_file, *model_args(mobile_sam_ckpt, out)]
    for box in ("10,10,100,100", "120,80,330,260", "300,200,560,420"):
        args += ["--box", box]
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert "decoded 3 prompt(s) in one call" in err
    meta = json.loads((out / "masks.json").read_text())
    assert [r["prompt"]["box"][0] for r in meta["masks"]] == [10.0, 120.0, 300.0]


def test_exif_rotated_image_gives_masks_in_displayed_orientation(tmp_path, mobile_sam_ckpt, capsys):
    displayed = P.load_case(MODEL)["image"][:, :400]  # 480 x 400, portrait-ish
    Image.fromarray(displayed).save(tmp_path / "displayed.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(displayed, k=1)))  # what the camera wrote
    exif = stored.getexif()
    exif[0x0112] = 6  # viewer must rotate 90 degrees clockwise
    stored.save(tmp_path / "rotated.png", exif=exif)
    results = []
    for name in ("displayed.png", "rotated.png"):
        out = tmp_path / name.replace(".png", "")
        code, _, err = run(
            [
                "segment",
                tmp_path / name,
                "--point",
                "200,150",
                *model_args(mobile_sam_ckpt, out),
            ],
            capsys,
        )
        assert code == 0, err
        results.append(json.loads((out / "masks.json").read_text()))
    assert results[0]["image"]["height"] == results[1]["image"]["height"] == 480
    assert results[0]["masks"][0]["segmentation"] == results[1]["masks"][0]["segmentation"]


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "16bit", "cmyk"])
def test_other_pixel_formats_are_handled(tmp_path, mobile_sam_ckpt, kind, capsys):
    rgb = P.load_case(MODEL)["image"][::2, ::2]
    path = tmp_path / ("img.jpg" if kind == "cmyk" else "img.png")
    if kind == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "RGBA").save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(path)
    elif kind == "16bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(rgb).convert("CMYK").save(path)
    out = tmp_path / "out"
    code, _, err = run(
        [
            "segment",
            path,
            "--box",
            "20,20,200,150",
            *model_args(mobile_sam_ckpt, out),
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((out / "masks.json").read_text())["image"]["height"] == 240


def _bad_images(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    rgb = np.tile(P.load_case(MODEL)["image"], (2, 2, 1))
    Image.fromarray(rgb).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    Image.new("L", (4000, 4000)).save(tmp_path / "bomb.png")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["missing.jpg", "--point", "1,1"], "no such file"),
        (["text.jpg", "--point", "1,1"], "not an image"),
        (["cut.jpg", "--point", "1,1"], "truncated or corrupt"),
        (["cut.png", "--point", "1,1"], "truncated or corrupt"),
        (["bomb.png", "--point", "1,1", "--max-pixels", "1000000"], "above the limit"),
        (["full.png"], "no prompt given"),
        (["full.png", "--point", "5000,10"], "outside the 1280 x 960 image"),
        (["full.png", "--box=-5,0,100,100"], "outside the 1280 x 960 image"),
        (["full.png", "--point", "nan,3"], "finite"),
        (["full.png", "--box", "10,10,5,50"], "empty"),
        (["full.png", "--point", "1,2,7"], "label"),
        (["full.png", "--point", "1,1", "--model", "sam_vit_zz"], "unknown model 'sam_vit_zz'"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, capsys, args, pattern):
    _bad_images(tmp_path)
    out = tmp_path / "out"
    argv = [
        "segment",
        *[str(tmp_path / a) if a.endswith((".jpg", ".png")) else a for a in args],
        "--out",
        out,
    ]
    if "--model" not in args:
        argv += ["--model", MODEL, "--checkpoint", tmp_path / "never-read.pt"]
    code, _, err = run(argv, capsys)
    assert_clean_error(code, err, out, pattern)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_model", "missing"])
def test_bad_checkpoint_gives_one_error_line(
    tmp_path, mobile_sam_ckpt, mobile_sam_image_file, capsys, damage
):
    path = tmp_path / "ck.pt"
    if damage == "truncated":
        path.write_bytes(mobile_sam_ckpt.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    elif damage == "other_model":
        torch.save(P.stand_in_state_dict("efficientvit_sam_l0")[0], path)
    out = tmp_path / "out"
    code, _, err = run(
        [
            "segment",
            mobile_sam_image_file,
            "--point",
            "5,5",
            *model_args(path, out),
        ],
        capsys,
    )
    pattern = {
        "truncated": "truncated or corrupt",
        "garbage": "truncated or corrupt",
        "other_model": "use --model efficientvit_sam_l0",
        "missing": "checkpoint file not found",
    }[damage]
    assert_clean_error(code, err, out, pattern)
    assert MODEL in err and str(path) in err


def test_models_lists_the_registry(capsys):
    code, out, _ = run(["models", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["sam_vit_b"]["params"] == 93_735_472
    assert rows["sam_vit_b"]["license"] == "Apache-2.0"
    assert rows["sam_vit_b"]["cached"] in ("yes", "no")
    code, out, _ = run(["models", "sam_*"], capsys)
    assert code == 0 and "sam_vit_h" in out and "mobile_sam" not in out


def test_console_script_exit_code_and_single_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "leansam.cli", "segment", str(tmp_path / "nope.png"), "--point", "1,1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: no such file: {tmp_path / 'nope.png'}"]
