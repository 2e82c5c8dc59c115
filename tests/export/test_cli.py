"""``leansam export onnx`` and ``--backend onnx`` on ``segment`` / ``everything``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from leansam.cli import main
from leansam.data.coco import decode_mask
from leansam.export import read_metadata
from tests.test_cli import assert_clean_error, run

NANO = "leansam_nano"
BOX = ["--box", "120,80,330,260", "--box", "300,200,560,420", "--point", "200,150"]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, scene):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(scene).save(path)
    return path


@pytest.fixture(scope="module")
def nano(exports):
    return exports.folder(NANO)


def _masks(out):
    meta = json.loads((out / "masks.json").read_text())
    h, w = meta["image"]["height"], meta["image"]["width"]
    return meta, [decode_mask(m["segmentation"], h, w) for m in meta["masks"]]


def test_export_writes_both_files_with_metadata(tmp_path, capsys):
    out = tmp_path / "onnx"
    code, _, err = run(["export", "onnx", "--model", NANO, "--out", out, "--upscale"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [".leansam-outputs.json", "decoder.onnx", "encoder.onnx"]
    enc, dec = read_metadata(out / "encoder.onnx"), read_metadata(out / "decoder.onnx")
    assert enc["leansam.role"] == "encoder" and dec["leansam.role"] == "decoder"
    assert enc["leansam.model"] == dec["leansam.model"] == NANO
    assert enc["leansam.weights"] == dec["leansam.weights"]
    assert json.loads(dec["leansam.decoder"])["upscale"] is True
    assert json.loads(enc["leansam.normalization"])["mean"] == [123.675, 116.28, 103.53]
    assert "decoder.onnx" in err and "encoder.onnx" in err


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--model", "mobile_samm"], "unknown model 'mobile_samm'"),
        (["--model", NANO, "--opset", "13"], "--opset must be at least 17"),
        (["--model", NANO, "--checkpoint", "missing.pt"], "checkpoint file not found"),
    ],
)
def test_export_bad_input_is_one_error_line(args, pattern, tmp_path, capsys):
    out = tmp_path / "onnx"
    code, _, err = run(["export", "onnx", *args, "--out", out], capsys)
    assert_clean_error(code, err, out, pattern)


def test_export_onto_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    code, _, err = run(["export", "onnx", "--model", NANO, "--out", target], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "not a folder" in lines[0]
    assert target.read_text() == "not a folder"


def test_segment_on_onnx_runtime_matches_torch(nano, image_file, tmp_path, capsys):
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    code, _, err = run(
        ["segment", image_file, "--model", NANO, *BOX, "--multimask", "--out", torch_out], capsys
    )
    assert code == 0, err
    code, _, err = run(
        ["segment", image_file, *BOX, "--multimask", "--backend", "onnx", "--onnx", nano, "--out", onnx_out],
        capsys,
    )
    assert code == 0, err
    assert "ONNX Runtime" in err
    ref_meta, ref = _masks(torch_out)
    got_meta, got = _masks(onnx_out)
    assert got_meta["model"] == NANO and str(nano) in got_meta["checkpoint"]
    assert len(got) == len(ref) == 6
    for a, b, ma, mb in zip(ref, got, ref_meta["masks"], got_meta["masks"]):
        assert np.count_nonzero(a != b) <= 1e-3 * a.size
        assert abs(ma["score"] - mb["score"]) <= 1e-3


def test_everything_on_onnx_runtime_matches_torch(nano, image_file, tmp_path, capsys):
    common = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    assert run(["everything", image_file, "--model", NANO, *common, "--out", torch_out], capsys)[0] == 0
    code, _, err = run(
        ["everything", image_file, *common, "--backend", "onnx", "--onnx", nano, "--out", onnx_out], capsys
    )
    assert code == 0, err
    _, ref = _masks(torch_out)
    _, got = _masks(onnx_out)
    assert len(ref) > 0 and len(got) == len(ref)
    for a, b in zip(ref, got):
        assert np.count_nonzero(a != b) <= 1e-3 * a.size


def test_backend_onnx_exports_once_into_the_cache(image_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    for i in range(2):
        code, _, err = run(
            ["segment", image_file, "--model", NANO, *BOX, "--backend", "onnx", "--out", tmp_path / f"o{i}"],
            capsys,
        )
        assert code == 0, err
        assert ("exporting leansam_nano" in err) == (i == 0)
    assert len(list((tmp_path / "home" / "onnx").glob("leansam_nano-*/encoder.onnx"))) == 1


def test_backend_errors_are_one_line(nano, image_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cases = [
        (
            ["--model", "mobile_sam", "--backend", "onnx", "--onnx", nano],
            "exported from model 'leansam_nano', not 'mobile_sam'",
        ),
        (["--backend", "onnx", "--onnx", tmp_path / "missing.onnx"], "no such ONNX file or folder"),
        (
            ["--backend", "onnx", "--onnx", nano / "decoder.onnx", "--onnx-decoder", nano / "encoder.onnx"],
            "given where",
        ),
        (["--onnx", nano], "need --backend onnx"),
        (["--backend", "onnx", "--onnx", nano, "--checkpoint", "x.pt"], "--checkpoint is for exporting"),
        (
            ["--backend", "onnx", "--onnx", nano, "--providers", "NoSuchExecutionProvider"],
            "not available here",
        ),
    ]
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx file" * 50)
    cases.append(
        (
            ["--backend", "onnx", "--onnx", corrupt, "--onnx-decoder", nano / "decoder.onnx"],
            "not a valid ONNX",
        )
    )
    for args, pattern in cases:
        code, _, err = run(["segment", image_file, *BOX, *args, "--out", out], capsys)
        assert_clean_error(code, err, out, pattern)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = run(
        ["segment", image_file, *BOX, "--backend", "onnx", "--onnx", nano, "--out", out], capsys
    )
    assert_clean_error(code, err, out, "pip install 'leansam[onnx]'")
    code, _, err = run(["everything", image_file, "--backend", "onnx", "--onnx", nano, "--out", out], capsys)
    assert_clean_error(code, err, out, "pip install 'leansam[onnx]'")


def test_export_without_onnx_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "onnx"
    code = main(["export", "onnx", "--model", NANO, "--out", str(out)])
    assert_clean_error(code, capsys.readouterr().err, out, "pip install 'leansam[onnx]'")
