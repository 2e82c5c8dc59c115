"""The int8 layers: they run oneDNN's int8 kernels and compute exactly the quantized arithmetic."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leansam.compress.int8 import (
    FloatWithActivation,
    FusedActivation,
    Int8Conv2d,
    Int8Linear,
    can_quantize_conv,
    quantize_uint8,
)

from .helpers import FLOAT_KERNELS, kernel_calls, needs_int8

pytestmark = needs_int8


def _quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().flatten(1).amax(1) / 127
    q = (w / scale.reshape((-1,) + (1,) * (w.ndim - 1))).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def _dequant_input(x: torch.Tensor, s: float, zp: int) -> torch.Tensor:
    return (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s


def test_quantize_uint8_matches_the_formula():
    # ATen rounds the float32 fused multiply-add x * (1/scale) + zero_point, so a value within an
    # ulp of a .5 tie can land one step from round(x / scale) + zero_point: the reference does the
    # same arithmetic. The planted value is such a near-tie (x / 0.05 = 74.500008, kernel gives 174).
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7) * 3
    x[0, 0, 0, 0] = 3.7250003814697266
    u = quantize_uint8(x, 0.05, 100)
    assert u.dtype == torch.uint8 and u.shape == x.shape
    inv = torch.tensor(1 / 0.05, dtype=torch.float32)
    ref = torch.clamp(torch.round(torch.addcmul(torch.full_like(x, 100.0), x, inv)), 0, 255).to(torch.uint8)
    assert torch.equal(u, ref)
    assert int(u[0, 0, 0, 0]) == 174
    xc = x.contiguous(memory_format=torch.channels_last)
    uc = quantize_uint8(xc, 0.05, 100)
    assert uc.is_contiguous(memory_format=torch.channels_last) and torch.equal(uc, ref)


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "pad", "post"),
    [
        (8, 16, 3, 1, 1, "none"),
        (3, 8, 3, 2, 1, "relu"),
        (16, 8, 1, 1, 0, "gelu"),
        (8, 8, 3, 1, 1, "hardswish"),
    ],
)
def test_int8_conv_is_the_quantized_arithmetic(cin, cout, k, stride, pad, post):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, pad)
    x = torch.randn(2, cin, 13, 11)
    s, zp = float(x.abs().max() * 2 / 255), 128
    wq, ws = _quantize_weight(conv.weight.detach())
    q = Int8Conv2d.like(conv, post)
    q.set_quantization(wq, ws, conv.bias.detach(), s, zp)
    y = q(x)
    calls = kernel_calls(lambda: q(x))
    assert calls["onednn::qconv2d_pointwise"] == 1 and not any(calls[k] for k in FLOAT_KERNELS), calls
    # The int8 kernel must give exactly what the dequantized operands give in fp32 (up to fp32
    # summation order), i.e. it really multiplies the int8 values with these scales.
    ref = F.conv2d(_dequant_input(x, s, zp), wq.float() * ws[:, None, None, None], conv.bias, stride, pad)
    ref = {"none": ref, "relu": F.relu(ref), "gelu": F.gelu(ref), "hardswish": F.hardswish(ref)}[post]
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4), float((y - ref).abs().max())
    # ... and differs from the fp32 layer by the quantization error only
    with torch.no_grad():
        fp = conv(x)
    fp = {"none": fp, "relu": F.relu(fp), "gelu": F.gelu(fp), "hardswish": F.hardswish(fp)}[post]
    rel = float((y - fp).norm() / fp.norm())
    assert 0 < rel < 0.05


@pytest.mark.parametrize("post", ["none", "relu", "gelu", "gelu_tanh"])
def test_int8_linear_is_the_quantized_arithmetic(post):
    torch.manual_seed(1)
    lin = nn.Linear(24, 40)
    x = torch.randn(3, 7, 24)
    s, zp = float((x.max() - x.min()) / 255), round(float(-x.min()) / float((x.max() - x.min()) / 255))
    wq, ws = _quantize_weight(lin.weight.detach())
    q = Int8Linear.like(lin, post)
    q.set_quantization(wq, ws, lin.bias.detach(), s, zp)
    y = q(x)
    calls = kernel_calls(lambda: q(x))
    assert calls["onednn::qlinear_pointwise"] == 1 and not any(calls[k] for k in FLOAT_KERNELS), calls
    ref = F.linear(_dequant_input(x, s, zp), wq.float() * ws[:, None], lin.bias)
    ref = {
        "none": ref,
        "relu": F.relu(ref),
        "gelu": F.gelu(ref),
        "gelu_tanh": F.gelu(ref, approximate="tanh"),
    }[post]
    assert y.shape == (3, 7, 40)
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4), float((y - ref).abs().max())


def test_state_dict_round_trip_repacks():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    wq, ws = _quantize_weight(conv.weight.detach())
    q = Int8Conv2d.like(conv)
    q.set_quantization(wq, ws, conv.bias.detach(), 0.02, 120)
    x = torch.randn(1, 4, 9, 9)
    y = q(x)  # packs the weight
    state = q.state_dict()
    assert state["weight_int8"].dtype == torch.int8
    assert set(state) == {"weight_int8", "weight_scale", "bias", "input_scale", "input_zero_point"}
    fresh = Int8Conv2d.like(conv)
    fresh(x)  # packs its (zero) weight first: loading must invalidate that
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), y)


def test_copies_and_pickles_repack():
    import pickle

    torch.manual_seed(3)
    lin = nn.Linear(8, 8)
    wq, ws = _quantize_weight(lin.weight.detach())
    q = Int8Linear.like(lin)
    q.set_quantization(wq, ws, lin.bias.detach(), 0.03, 128)
    x = torch.randn(5, 8)
    y = q(x)  # packed now
    assert torch.equal(copy.deepcopy(q)(x), y)
    assert torch.equal(pickle.loads(pickle.dumps(q))(x), y)


def test_only_dense_zero_padded_convs_are_int8():
    assert can_quantize_conv(nn.Conv2d(4, 4, 3))
    assert not can_quantize_conv(nn.Conv2d(4, 4, 3, groups=4))
    assert not can_quantize_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert not can_quantize_conv(nn.Conv2d(4, 4, 3, padding="same"))
    with pytest.raises(ValueError):
        Int8Conv2d.like(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="post_op"):
        Int8Linear(4, 4, post_op="hardswish")


def test_fused_activation_skips_only_the_marked_tensor_once():
    act = FusedActivation(nn.GELU())
    layer = FloatWithActivation(nn.Linear(5, 5), "gelu")
    layer.bind_activation(act)
    x = torch.randn(4, 5)
    y = layer(x)
    assert torch.equal(act(y), y)  # the layer already applied it
    assert torch.equal(act(y), F.gelu(y))  # the mark is consumed: a second call applies GELU
    z = torch.randn(4, 5)
    assert torch.equal(act(z), F.gelu(z))  # unmarked tensors get the activation
    # copies keep the binding to their own activation module
    pair = nn.Sequential(layer, act)
    twin = copy.deepcopy(pair)
    assert torch.equal(twin(x), pair(x))
    assert torch.equal(pair(x), F.gelu(nn.functional.linear(x, layer.layer.weight, layer.layer.bias)))


def test_int8_layers_refuse_non_cpu_tensors():
    q = Int8Linear(4, 4)
    meta = torch.empty(2, 4, device="meta")
    with pytest.raises(RuntimeError, match="CPU"):
        q(meta)
