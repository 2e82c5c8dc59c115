"""``VideoPredictor(precision="bfloat16")`` and its attention kernel (leansam.models.fast.bf16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leansam.models.fast.bf16 import attention, blocked_bf16_attention
from leansam.video import VideoPredictor
from leansam.video.memory import RoPEAttention
from tests.video import cases as C

# Measured on the reference machine (AMD EPYC with AVX512-BF16), margins stated per constant.
#: blocked bf16 attention vs float32, unit-variance inputs: max |diff| measured 0.0062 (bf16 rounding of
#: the output alone is up to 0.004); 3x margin.
ATTENTION_TOL = 0.02
#: sam2.1_hiera_tiny/a_box_click in bf16 vs the official float32 recording: at most 0.41% of mask pixels
#: differ and the IoU is at least 0.965; 3x margin on the pixels and on the IoU's gap to 1.
MAX_PIXELS_DIFFER = 0.0125
MIN_IOU = 0.90
#: object score logits: measured at most 0.011 apart; 3x margin.
MAX_SCORE_DIFF = 0.035
#: memory cross-attention in bf16 (either value order) vs float32, outputs ~0.2: measured 0.0016; 3x.
CROSS_TOL = 0.005


def _qkv(seed: int, nq: int = 600, nk: int = 1000) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 1, n, 64, generator=g) for n in (nq, nk, nk))


@pytest.mark.parametrize("seed", [0, 1])
def test_blocked_bf16_attention_agrees_with_float32_and_masks_keys(seed: int) -> None:
    q, k, v = _qkv(seed)  # 600 queries: the last block is partial
    mask = torch.zeros(2, 1, 1, k.shape[-2])
    mask[..., 900:] = -1e4
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = blocked_bf16_attention(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max().item() <= ATTENTION_TOL
    v_far = v.clone()
    v_far[..., 900:, :] = 1e3  # dropped keys' values must not leak into the result
    assert torch.equal(blocked_bf16_attention(q, k, v_far, mask), out)


def test_attention_is_the_fused_float32_kernel_unless_cpu_bf16_autocast() -> None:
    q, k, v = _qkv(2, nq=64, nk=80)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = attention(q, k, v)
    assert torch.equal(fast, blocked_bf16_attention(q, k, v))


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_memory_attention_projects_values_late_with_the_same_result(seed: int) -> None:
    torch.manual_seed(seed)
    attn = RoPEAttention(256, kv_in_dim=64).eval()
    q, mem = torch.randn(1, 256, 256), torch.randn(1, 2 * 256 + 4, 64)  # 2 frames of 16 x 16, 4 pointers
    seen: list[tuple[int, ...]] = []
    attn.v_proj.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    with torch.inference_mode():
        ref = attn(q, mem, mem, num_k_exclude_rope=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            late = attn(q, mem, mem, num_k_exclude_rope=4)
            attn._late_values = lambda q, v: False
            early = attn(q, mem, mem, num_k_exclude_rope=4)
    # float32: the values are projected first; bf16: after the attention (the 256 queries' 64 channels)
    assert seen == [(1, 516, 64), (1, 1, 256, 64), (1, 516, 64)]
    assert (late.float() - ref).abs().max().item() <= CROSS_TOL
    assert (early.float() - ref).abs().max().item() <= CROSS_TOL


def test_bfloat16_tracks_agree_with_the_official_float32_run() -> None:
    z, spec = C.load("sam2.1_hiera_tiny/a_box_click")
    options = spec["constructor"]["then_set_attributes"]
    outs = C.replay(VideoPredictor(C.model_for(spec), precision="bfloat16", **options), z, spec)
    rows = C.mask_agreement(outs, z)
    assert len(rows) == len(outs) == 8
    assert min(r["iou"] for r in rows) >= MIN_IOU
    assert max(r["pixels_differ"] for r in rows) <= MAX_PIXELS_DIFFER
    assert max(r["score_diff"] for r in rows) <= MAX_SCORE_DIFF
    # The run really was in bf16: float32 stays within the parity tolerance (5e-3 + 1e-3 |ref|) of the
    # recording, bf16 does not.
    refs = [C.reference(o, z, {})[0].astype(np.float32) for o in outs]
    beyond = [np.abs(o.logits - r) > 5e-3 + 1e-3 * np.abs(r) for o, r in zip(outs, refs)]
    assert any(b.any() for b in beyond), "bf16 tracks match float32 to parity tolerance: was bf16 used?"
    assert all(np.isfinite(o.logits).all() for o in outs)


@pytest.mark.parametrize("precision", ["float16", "fp32", ""])
def test_an_unknown_precision_is_refused_with_the_choices(precision: str) -> None:
    _, spec = C.load("sam2.1_hiera_tiny/a_box_click")
    with pytest.raises(ValueError, match="float32, bfloat16"):
        VideoPredictor(C.model_for(spec), precision=precision)
