"""The fidelity gate (``leansam.fidelity`` / ``leansam compare``) and the ``leansam quantize`` command."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import leansam
from leansam.cli import main
from leansam.fidelity import CompareConfig, compare_models, greedy_match, grid_prompts
from leansam.io import InputError
from tests.compress.helpers import load_images, make_images, needs_int8, one_thread, tiny_fp32  # noqa: F401 (one_thread: autouse fixture)

# Settings under which the weak bundled model produces segment-everything masks at all.
WEAK = {"everything_iou_thresh": 0.4, "everything_stability_thresh": 0.3, "points_per_side": 8}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("cmp"), n=3, seed=11)


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code, err, pattern):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


def test_greedy_match():
    iou = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0]])
    # 0.9 takes (0, 0); row 1 then gets its best free column (1, 0.1); column 2 stays unmatched
    assert greedy_match(iou) == [(0, 0, 0.9), (1, 1, 0.1)]
    assert greedy_match(np.zeros((2, 3))) == []
    assert greedy_match(np.zeros((0, 3))) == []


def test_grid_prompts_cover_the_image():
    boxes, points = grid_prompts((100, 200), 4)
    assert boxes.shape == (4, 4) and points.shape == (4, 2)
    np.testing.assert_allclose(boxes[0], [10, 5, 90, 45])
    np.testing.assert_allclose(points[3], [150, 75])
    assert (boxes[:, 2] <= 200).all() and (boxes[:, 3] <= 100).all()


def test_identical_models_agree_perfectly(images):
    ref = tiny_fp32()
    report = compare_models(
        ref,
        copy.deepcopy(ref),
        images,
        CompareConfig(
            min_box_iou=1.0, min_point_iou=1.0, min_cosine=0.999999, min_everything_miou=1.0, **WEAK
        ),
    )
    assert report.passed, report.table()
    assert report.box_iou.mean == 1.0 and report.point_iou.min == 1.0
    assert report.box_iou.n == 3 * 16 and report.n_images == 3
    assert report.masks_reference > 0 and report.masks_reference == report.masks_candidate
    assert report.count_mismatch.mean == 0.0
    assert sum(r["prompts_from_everything"] for r in report.per_image) > 0


def test_a_damaged_candidate_fails_the_gate(images):
    ref = tiny_fp32()
    bad = copy.deepcopy(ref)
    with torch.no_grad():
        for p in bad.image_encoder.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * 0.8, alpha=1.0)
    report = compare_models(ref, bad, images, CompareConfig(min_box_iou=0.95, min_cosine=0.99, **WEAK))
    assert not report.passed
    assert {c.name for c in report.failures} >= {"cosine"}
    assert report.cosine.mean < 0.99
    d = report.to_dict()
    assert d["passed"] is False and json.dumps(d)
    assert "FAIL" in report.table()


def test_config_validation():
    with pytest.raises(ValueError, match="min_box_iou"):
        CompareConfig(min_box_iou=1.5)
    with pytest.raises(ValueError, match="everything"):
        CompareConfig(everything=False, min_everything_miou=0.5)
    with pytest.raises(InputError, match="uint8"):
        compare_models(tiny_fp32(), tiny_fp32(), [np.zeros((4, 4, 3), np.float32)])


@needs_int8
def test_cli_quantize_then_compare(images, tmp_path, capsys):
    out = tmp_path / "q"
    code, _, err = run(
        [
            "quantize",
            "--model",
            "leansam_nano",
            "--method",
            "tinysam",
            "--calib",
            images,
            "--num-calib",
            "2",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert (out / "model.pt").is_file() and (out / "quantization.json").is_file()
    gate = tmp_path / "gate.json"
    args = ["compare", "--reference", "leansam_nano", "--candidate", out, "--images", images, "--json", gate]
    args += [
        "--everything-iou-thresh",
        "0.4",
        "--everything-stability-thresh",
        "0.3",
        "--points-per-side",
        "8",
    ]
    code, stdout, err = run([*args, "--min-box-iou", "0.9", "--min-cosine", "0.999"], capsys)
    assert code == 0, stdout + err
    assert "PASS" in stdout and "| mask IoU, box prompt |" in stdout
    report = json.loads(gate.read_text())
    assert report["passed"] and report["box_iou"]["mean"] >= 0.9 and report["reference"] == "leansam_nano"
    # int8 is not bit-exact: a cosine of exactly 1 fails the gate with status 1 (not an error)
    code, stdout, err = run([*args, "--no-everything", "--min-cosine", "1.0"], capsys)
    assert code == 1, stdout + err
    assert stdout.strip().splitlines()[-1].startswith("FAIL: cosine")
    assert "error" not in err


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--reference", "no_such_model"], "unknown model"),
        (["--candidate", "{tmp}/missing"], "candidate not found"),
        (["--candidate", "{tmp}/garbage.pth"], "not a valid PyTorch"),
        (["--candidate", "{tmp}"], "neither a quantized model"),
        (["--images", "{tmp}/noimages"], "has no images"),
        (["--min-box-iou", "2"], "[0, 1]"),
    ],
)
def test_cli_compare_bad_input(args, pattern, images, tmp_path, capsys):
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "noimages").mkdir()
    base = {
        "--reference": "leansam_nano",
        "--candidate": str(tmp_path / "garbage.pth"),
        "--images": str(images),
    }
    extra = []
    for i in range(0, len(args), 2):
        v = args[i + 1].replace("{tmp}", str(tmp_path))
        if args[i] in base:
            base[args[i]] = v
        else:
            extra += [args[i], v]
    if "--candidate" not in args:
        base["--candidate"] = str(tmp_path / "garbage.pth") if pattern != "has no images" else str(tmp_path)
    flat = [x for kv in base.items() for x in kv]
    code, _, err = run(["compare", *flat, *extra, "--json", tmp_path / "r.json"], capsys)
    assert_clean_error(code, err, pattern)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--model", "no_such_model", "--calib", "{calib}"], "unknown model"),
        (["--model", "leansam_nano", "--calib", "{tmp}/empty"], "has no images"),
        (["--model", "leansam_nano", "--calib", "{tmp}/broken"], "not an image"),
        (["--model", "leansam_nano"], "needs calibration images"),
        (["--model", "leansam_nano", "--calib", "{calib}", "--w-bits", "12"], "w_bits"),
        (["--model", "leansam_nano", "--calib", "{calib}", "--per-channel", "yes"], "--per-channel not used"),
        (["--model", "leansam_nano", "--calib", "{calib}", "--config", "{tmp}/bad.json"], "unknown option"),
    ],
)
def test_cli_quantize_bad_input(args, pattern, images, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"nope")
    (tmp_path / "bad.json").write_text(json.dumps({"method": "tinysam", "bits": 8}))
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)).replace("{calib}", str(images)) for a in args]
    code, _, err = run(["quantize", "--method", "tinysam", "--out", out, *args], capsys)
    assert_clean_error(code, err, pattern)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".leansam-stage")]


def test_images_can_be_arrays(images):
    arrays = load_images(images)[:1]
    report = compare_models(
        tiny_fp32(), tiny_fp32(), arrays, CompareConfig(everything=False, prompts_per_image=4)
    )
    assert report.n_images == 1 and report.box_iou.n == 4 and report.everything_miou is None
    assert report.passed and report.checks == []
    assert leansam.SamPredictor  # the gate runs through the public predictor
