"""Inference shortcuts of shared layers compute exactly what their autograd forms compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leansam.models.common import LayerNorm2d
from leansam.models.tiny_fpn import add_upsampled


def _layer_norm_and_input() -> tuple[LayerNorm2d, torch.Tensor]:
    """A LayerNorm2d with random affine weights and an off-centre input (seeded)."""
    torch.manual_seed(0)
    ln = LayerNorm2d(48, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    return ln, torch.randn(2, 48, 20, 24) * 3 + 1


def test_layer_norm_in_place_inference_is_bitwise_the_autograd_form() -> None:
    ln, x = _layer_norm_and_input()
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


def test_layer_norm_channels_last_matches_the_explicit_form() -> None:
    ln, x = _layer_norm_and_input()
    with torch.no_grad():
        explicit = ln(x)
        fused = ln(x.contiguous(memory_format=torch.channels_last))
    assert fused.is_contiguous(memory_format=torch.channels_last)
    # measured max difference 1.9e-6 (another reduction order); 1e-5 leaves a 5x margin
    assert (fused - explicit).abs().max().item() < 1e-5
    grad = ln(x.contiguous(memory_format=torch.channels_last).requires_grad_())
    assert grad.requires_grad and (grad.detach() - explicit).abs().max().item() < 1e-5


def test_add_upsampled_channels_last_equals_nearest_interpolation() -> None:
    torch.manual_seed(0)
    last = torch.channels_last
    fine = torch.randn(2, 16, 64, 48).contiguous(memory_format=last)
    coarse = torch.randn(2, 16, 32, 24).contiguous(memory_format=last)
    out = add_upsampled(fine, coarse)
    assert out.is_contiguous(memory_format=last)
    assert torch.equal(out, fine + F.interpolate(coarse, size=(64, 48), mode="nearest"))


def test_tiny_fpn_channels_last_forward_matches_a_contiguous_computation() -> None:
    """The encoder runs channels-last; the same modules applied step by step to contiguous tensors
    (explicit layer norms, interpolated top-down path) give the same outputs."""
    from leansam.models.tiny_fpn import TinyFPNEncoder

    torch.manual_seed(0)
    enc = TinyFPNEncoder().eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
        enc.pos_embed.normal_()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        embed, skips = enc(x)
        feats, h = [], enc.stem(x)
        for stage in enc.stages:
            h = stage(h)
            feats.append(h.contiguous())
        levels = [enc.lateral[3](feats[3]).contiguous()]
        for i in (2, 1, 0):
            lat = enc.lateral[i](feats[i]).contiguous()
            levels.insert(0, lat + F.interpolate(levels[0], size=lat.shape[-2:], mode="nearest"))
        head = levels[2]
        for layer in enc.head:
            head = layer(head).contiguous()
        ref_embed = head + enc.pos_embed
        ref_skips = [enc.skip_norm[0](levels[0]), enc.skip_norm[1](levels[1])]
    assert embed.is_contiguous() and skips[0].is_contiguous(memory_format=torch.channels_last)
    assert not ref_skips[0].is_contiguous(memory_format=torch.channels_last)  # the reference is NCHW
    # measured max differences 4e-6 (embedding) and 2e-6 (skips); 5e-5 leaves a 10x margin
    assert (embed - ref_embed).abs().max().item() < 5e-5
    for got, ref in zip(skips, ref_skips):
        assert (got - ref).abs().max().item() < 5e-5
