"""Inference shortcuts of shared layers compute exactly what their autograd forms compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leansam.models.common import LayerNorm2d
from leansam.models.tiny_fpn import add_upsampled


def test_layer_norm_in_place_inference_is_bitwise_the_autograd_form() -> None:
    torch.manual_seed(0)
    ln = LayerNorm2d(48, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 48, 20, 24) * 3 + 1
    trained = ln(x.clone().requires_grad_())  # grad enabled: the out-of-place form
    with torch.inference_mode():
        fast = ln(x)
    assert trained.requires_grad
    assert torch.equal(fast, trained.detach())
    u = x.mean(1, keepdim=True)  # the textbook formula, independently
    ref = ln.weight[:, None, None] * ((x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + 1e-6))
    assert torch.allclose(fast, (ref + ln.bias[:, None, None]).detach(), atol=1e-6)
    bf16 = torch.randn(1, 48, 8, 8, dtype=torch.bfloat16)  # mixed dtypes keep the promoting form
    with torch.inference_mode():
        assert ln(bf16).dtype == torch.float32


def test_add_upsampled_equals_nearest_interpolation() -> None:
    torch.manual_seed(0)
    for fine_hw, coarse_hw in (((64, 48), (32, 24)), ((15, 9), (8, 5))):  # the 2x broadcast, the fallback
        fine, coarse = torch.randn(2, 16, *fine_hw), torch.randn(2, 16, *coarse_hw)
        expected = fine + F.interpolate(coarse, size=fine_hw, mode="nearest")
        assert torch.equal(add_upsampled(fine, coarse), expected)
