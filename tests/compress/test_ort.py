"""ONNX Runtime int8 quantization of the exported encoder (static QDQ and dynamic)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import leansam
from leansam.compress import OrtDynamicConfig, OrtStaticConfig, TinySamPTQConfig, quantize_onnx
from leansam.compress.ort import load_onnx_quantized
from leansam.io import InputError

from .helpers import embed, encoder_convs, make_images, one_thread, tiny_fp32  # noqa: F401 (autouse fixture)

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("calib"), n=4)


@pytest.fixture(scope="module")
def held_out_image():
    """An image of the bundled model's held-out set (never used for calibration)."""
    from leansam.train.data import TINY_SYNTH, SynthSource

    return SynthSource(1, seed=1000, config=TINY_SYNTH)[0].image


@pytest.fixture(scope="module")
def static_dir(calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ort") / "static"
    res = quantize_onnx("leansam_nano", OrtStaticConfig(num_calib=4), out, calib=calib_dir)
    return out, res


def _cos(a, b) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_static_qdq_folder(static_dir, held_out_image):
    out, res = static_dir
    assert sorted(p.name for p in out.iterdir()) == [
        ".leansam-outputs.json",
        "decoder.onnx",
        "encoder.int8.onnx",
        "quantization.json",
    ]
    manifest = json.loads((out / "quantization.json").read_text())
    assert manifest["model"] == "leansam_nano" and manifest["config"]["method"] == "ort-static"
    assert len(manifest["calibration"]) == 4
    # QDQ: every Conv input gets a QuantizeLinear/DequantizeLinear pair, weights are int8 initialisers
    n = encoder_convs(in_graph=True)
    assert res.ops["Conv"] == n and res.ops["QuantizeLinear"] >= n and res.quantized_nodes >= n
    import onnx

    graph = onnx.load(str(res.encoder)).graph
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    model = load_onnx_quantized(out, expect_model="leansam_nano")
    img = held_out_image
    assert _cos(embed(model, img), embed(tiny_fp32(), img)) > 0.995
    pred = leansam.SamPredictor(model)
    pred.set_image(img)
    masks, scores, _ = pred.predict(box=np.array([10, 10, 120, 120]), multimask_output=False)
    assert masks.shape == (1, *img.shape[:2]) and np.isfinite(scores).all()


def test_dynamic_with_conv_integer(held_out_image, tmp_path):
    res = quantize_onnx("leansam_nano", OrtDynamicConfig(op_types=("Conv",)), tmp_path / "dyn")
    assert res.ops.get("ConvInteger", 0) == encoder_convs(in_graph=True)
    assert res.ops.get("DynamicQuantizeLinear", 0) >= 1
    model = load_onnx_quantized(tmp_path / "dyn")
    img = held_out_image
    assert _cos(embed(model, img), embed(tiny_fp32(), img)) > 0.99
    # the default op types (MatMul, Gemm) find nothing to quantize in a pure conv net: say so
    none = quantize_onnx("leansam_nano", OrtDynamicConfig(), tmp_path / "none")
    assert none.quantized_nodes == 0 and "NOTHING was quantized" in none.summary()


def test_bad_input(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="OrtStaticConfig"):
        quantize_onnx("leansam_nano", TinySamPTQConfig(), tmp_path / "x")
    with pytest.raises(InputError, match="no calibration images"):
        quantize_onnx("leansam_nano", OrtStaticConfig(), tmp_path / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no images"):
        quantize_onnx("leansam_nano", OrtStaticConfig(), tmp_path / "x", calib=empty)
    assert not (tmp_path / "x").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'leansam\[onnx\]'"):
        quantize_onnx("leansam_nano", OrtDynamicConfig(), tmp_path / "x")


def test_onnx_candidate_in_the_gate(static_dir, calib_dir, capsys):
    from leansam.cli import main

    out, _ = static_dir
    args = ["compare", "--reference", "leansam_nano", "--candidate", str(out), "--images", str(calib_dir)]
    # The gate's plumbing with an ONNX candidate. The bundled model's int8 box IoU against fp32 on
    # this image is 0.80 and moves as training continues; the threshold keeps a 0.1 margin.
    code = main([*args, "--no-everything", "--max-images", "1", "--min-box-iou", "0.7"])
    assert code == 0, capsys.readouterr()
    assert torch.get_num_threads() == 1


def test_cli_without_onnxruntime(calib_dir, tmp_path, capsys, monkeypatch):
    from leansam.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "o"
    code = main(
        [
            "quantize",
            "--model",
            "leansam_nano",
            "--method",
            "ort-static",
            "--calib",
            str(calib_dir),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "pip install 'leansam[onnx]'" in err[0]
    assert not out.exists()
