"""TinySAM-recipe PTQ in PyTorch: real int8 layers, fidelity to fp32, fusion checks, save/load."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leansam
from leansam.checkpoints import CheckpointError
from leansam.compress import (
    OrtStaticConfig,
    TinySamPTQConfig,
    load_quantized,
    quantize_,
    save_quantized,
)
from leansam.compress.int8 import FloatWithActivation, FusedActivation, Int8Conv2d, Int8Linear
from leansam.io import InputError
from leansam.train.data import TINY_SYNTH, SynthSource
from leansam.zoo.default import NANO_TRANSFORM, tiny_sam

from .helpers import (  # noqa: F401 (one_thread: autouse fixture)
    FLOAT_KERNELS,
    embed,
    encoder_convs,
    iou,
    kernel_calls,
    load_images,
    make_images,
    needs_int8,
    one_thread,
    tiny_fp32,
)

pytestmark = needs_int8


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("calib"), n=4)


@pytest.fixture(scope="module")
def held_out():
    """Images of the bundled model's held-out set (seed 1000), never used for calibration."""
    src = SynthSource(3, seed=1000, config=TINY_SYNTH)
    return [src[i] for i in range(3)]


@pytest.fixture(scope="module")
def tiny_int8(calib_dir):
    model = copy.deepcopy(tiny_fp32())
    report = quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=4))
    return model, report


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_default_model_runs_int8_layers(tiny_int8):
    model, report = tiny_int8
    convs = [m for m in model.image_encoder.modules() if type(m) is nn.Conv2d]
    int8 = [m for m in model.image_encoder.modules() if isinstance(m, Int8Conv2d)]
    assert convs == [] and len(int8) == len(report.layers) == encoder_convs()
    assert all(m.weight_int8.dtype == torch.int8 for m in int8)
    assert report.kept_float == {} and report.fusion_check == "ok"
    # stem: conv -> (folded BN) -> ReLU module -> conv: ReLU fused, uint8 handed to the next conv
    assert report.handoffs.get("image_encoder.stem.0.0") == "image_encoder.stem.2.0"
    assert report.prepare["folded"], "the ResNet's conv + BatchNorm pairs should have been folded"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.image_encoder.modules())
    # the search never does worse than the full ranges on average, and each layer stays close
    assert np.mean([r.error_searched for r in report.layers]) <= np.mean(
        [r.error_minmax for r in report.layers]
    )
    assert max(r.error_searched for r in report.layers) < 0.05
    assert f"{encoder_convs()} layers int8" in report.summary()
    # one oneDNN int8 convolution per int8 layer per image, and no float convolution or matmul
    calls = kernel_calls(lambda: embed(model, np.zeros((64, 64, 3), np.uint8)))
    assert calls["onednn::qconv2d_pointwise"] == encoder_convs(), calls
    # the decoder's skip-feature projections (conv_s0 / conv_s1) run at encode time, in fp32 by design
    skip_convs = {"aten::convolution": 2} if model.mask_decoder.use_high_res_features else {}
    assert {k: calls[k] for k in FLOAT_KERNELS if calls[k]} == skip_convs, calls


def test_int8_follows_fp32_on_held_out_images(tiny_int8, held_out):
    model, _ = tiny_int8
    ref = tiny_fp32()
    for s in held_out:
        assert _cos(embed(model, s.image), embed(ref, s.image)) > 0.999
    # masks through the unchanged predictor, GT boxes of the held-out instances
    p_ref, p_q = leansam.SamPredictor(ref), leansam.SamPredictor(model)
    ious = []
    for s in held_out:
        p_ref.set_image(s.image)
        p_q.set_image(s.image)
        for m in s.masks:
            ys, xs = np.nonzero(m)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            a, _, _ = p_ref.predict(box=box, multimask_output=False)
            b, _, _ = p_q.predict(box=box, multimask_output=False)
            ious.append(iou(a[0], b[0]))
    assert len(ious) >= 5 and np.mean(ious) > 0.95, ious


def test_save_and_load(tiny_int8, held_out, tmp_path):
    model, _report = tiny_int8
    out = save_quantized(model, tmp_path / "q")
    manifest = json.loads((out / "quantization.json").read_text())
    assert manifest["model"] == "leansam_nano" and len(manifest["layers"]) == encoder_convs()
    assert manifest["report"]["config"]["method"] == "tinysam"
    # tensors only: loadable with weights_only=True
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(v.dtype == torch.int8 for v in state.values())
    again = load_quantized(out)
    img = held_out[0].image
    assert torch.equal(embed(again, img), embed(model, img))
    # overwriting an existing folder works (atomic replace)
    save_quantized(again, out)
    assert torch.equal(embed(load_quantized(out), img), embed(model, img))


def test_load_errors(tiny_int8, tmp_path):
    model, _ = tiny_int8
    out = save_quantized(model, tmp_path / "q")
    with pytest.raises(CheckpointError, match="not a quantized model"):
        load_quantized(tmp_path)
    (out / "model.pt").write_bytes((out / "model.pt").read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="sha256"):
        load_quantized(out)
    bad = json.loads((out / "quantization.json").read_text())
    bad["format_version"] = 99
    (out / "quantization.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="format version"):
        load_quantized(out)


def test_bad_input(calib_dir, tmp_path):
    model = copy.deepcopy(tiny_fp32())
    with pytest.raises(TypeError, match="quantize_onnx"):
        quantize_(model, OrtStaticConfig())
    with pytest.raises(InputError, match="no calibration images"):
        quantize_(model, TinySamPTQConfig())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no images"):
        quantize_(model, TinySamPTQConfig(calib_images=str(empty)))
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized(model, tmp_path / "x")


class _Toy(nn.Module):
    """B x 3 x 256 x 256 -> B x 128 x 16 x 16 with every case the recipe handles.

    A patchify conv + GELU (fusable), a token MLP Linear -> GELU -> Linear (int8 linears, fusable),
    a depthwise conv (stays fp32) + ReLU (fused in place). ``reuse="act"``: a conv whose output
    feeds a ReLU *and* a residual sum (fusing it would be wrong); ``reuse="handoff"``: the MLP's
    hidden activations also feed a residual term (handing them to fc2 as uint8 would be wrong).
    """

    def __init__(self, reuse: str = "") -> None:
        super().__init__()
        self.reuse = reuse
        self.stem = nn.Conv2d(3, 32, 16, 16)
        self.act0 = nn.GELU()
        self.fc1 = nn.Linear(32, 64)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(64, 128)
        self.dw = nn.Conv2d(128, 128, 3, padding=1, groups=128)
        self.act2 = nn.ReLU()
        self.pw = nn.Conv2d(128, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.stem(x))
        b, _c, h, w = x.shape
        hidden = self.act(self.fc1(x.flatten(2).transpose(1, 2)))
        t = self.fc2(hidden)
        if self.reuse == "handoff":
            t = t + hidden.mean(-1, keepdim=True)
        y = self.act2(self.dw(t.transpose(1, 2).reshape(b, 128, h, w)))
        if self.reuse == "act":
            z = self.pw(y)
            return self.act2(z) + z
        return self.pw(y)


def _toy(reuse: str = "") -> leansam.Sam:
    torch.manual_seed(0)
    model = tiny_sam(_Toy(reuse))
    model.transform = NANO_TRANSFORM
    return model.eval()


def test_linears_and_fusions(calib_dir, held_out):
    model = _toy()
    ref = copy.deepcopy(model)
    report = quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=2))
    enc = model.image_encoder
    assert isinstance(enc.fc1, Int8Linear) and enc.fc1.post_op == "gelu"
    assert isinstance(enc.fc2, Int8Linear) and enc.fc2.post_op == "none"
    assert isinstance(enc.stem, Int8Conv2d) and enc.stem.post_op == "gelu"
    assert isinstance(enc.dw, FloatWithActivation) and type(enc.dw.layer) is nn.Conv2d
    assert isinstance(enc.act, FusedActivation) and isinstance(enc.act2, FusedActivation)
    assert report.fusion_check == "ok" and len(report.fused) == 3
    # fc1 hands its GELU output to fc2 as uint8 (fc2's own input quantizer): no fp32 in between
    assert report.handoffs == {"image_encoder.fc1": "image_encoder.fc2"} and report.handoff_check == "ok"
    assert enc.fc1._output_args() == (float(enc.fc2.input_scale), int(enc.fc2.input_zero_point), torch.uint8)
    assert "groups=128" in report.kept_float["image_encoder.dw"]
    calls = kernel_calls(lambda: embed(model, held_out[0].image))
    assert calls["onednn::qlinear_pointwise"] == 2 and calls["onednn::qconv2d_pointwise"] == 2, calls
    assert calls["aten::convolution"] == 1  # the depthwise conv kept in float, nothing else
    for s in held_out:
        assert _cos(embed(model, s.image), embed(ref, s.image)) > 0.99


def test_fusion_is_refused_when_a_layer_output_is_reused(calib_dir, held_out):
    model = _toy(reuse="act")
    ref = copy.deepcopy(model)
    report = quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=2))
    # act2 consumed every output of pw, but pw's output also feeds the residual: the fp32 check
    # sees the difference and no activation is fused
    assert report.fusion_check.startswith("failed"), report.fusion_check
    assert report.fused == {}
    assert not any(isinstance(m, FusedActivation) for m in model.modules())
    assert model.image_encoder.pw.post_op == "none"
    for s in held_out:
        assert _cos(embed(model, s.image), embed(ref, s.image)) > 0.99


def test_handoff_is_refused_when_the_hidden_activations_are_reused(calib_dir, held_out):
    model = _toy(reuse="handoff")
    ref = copy.deepcopy(model)
    report = quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=2))
    assert report.fusion_check == "ok" and "image_encoder.fc1" in report.fused
    assert report.handoff_check.startswith("refused for 1 of 1") and report.handoffs == {}
    assert model.image_encoder.fc1._output_args()[2] == torch.float32
    for s in held_out:
        assert _cos(embed(model, s.image), embed(ref, s.image)) > 0.99


def test_options(calib_dir):
    model = _toy()
    report = quantize_(
        model,
        TinySamPTQConfig(
            calib_images=str(calib_dir),
            num_calib=1,
            search="minmax",
            exclude=("image_encoder.fc2",),
            fuse_activations=False,
        ),
    )
    assert all(r.act_ratio == 1.0 and r.weight_ratio == 1.0 for r in report.layers)
    assert report.kept_float["image_encoder.fc2"] == "excluded by the config"
    assert type(model.image_encoder.fc2) is nn.Linear
    assert report.fused == {} and report.fusion_check == "not requested"
    assert len(report.calibration) == 1
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir)))
    # per-channel linear scales differ per output feature; per-tensor ones are all equal
    per_tensor = _toy()
    quantize_(per_tensor, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=1))
    assert per_tensor.image_encoder.fc1.weight_scale.unique().numel() == 1
    per_channel = _toy()
    quantize_(
        per_channel, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=1, linear_granularity="channel")
    )
    assert per_channel.image_encoder.fc1.weight_scale.unique().numel() > 1
    with pytest.raises(ValueError, match="registry"):
        save_quantized(per_channel, calib_dir.parent / "toy")


@pytest.mark.slow
def test_mobile_sam_stand_in(tmp_path, calib_dir):
    """TinyViT (MobileSAM) on the stand-in weights: linears, convs, fusions and a SamPredictor run."""
    from tests import parity as P

    ckpt = P.write_stand_in_checkpoint("mobile_sam", tmp_path / "mobile_sam.pt")
    ref = leansam.build_model("mobile_sam", checkpoint=ckpt)
    model = copy.deepcopy(ref)
    report = quantize_(model, TinySamPTQConfig(calib_images=str(calib_dir), num_calib=3))
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 40
    assert sum(isinstance(m, Int8Conv2d) for m in model.modules()) == 14
    assert report.fusion_check == "ok" and report.fused
    # each MLP's fc1 hands its GELU output to fc2 as uint8 (10 TinyViT blocks)
    assert len(report.handoffs) == 10 and all(p.endswith("mlp.fc1") for p in report.handoffs)
    img = load_images(calib_dir)[-1]  # not among the 3 calibration images
    # random-valued stand-in weights and 3 calibration images: a loose bound (the benchmark's
    # random-weight model calibrated on 8 images measured 0.9986)
    assert _cos(embed(model, img), embed(ref, img)) > 0.98
    out = save_quantized(model, tmp_path / "q")
    assert torch.equal(embed(load_quantized(out), img), embed(model, img))
