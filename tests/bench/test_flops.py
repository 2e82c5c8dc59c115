"""MAC counts: attention is counted on CPU, and the counts match published numbers within 2%.

Published image-encoder MACs (all from EfficientViT-SAM, Zhang et al., arXiv:2402.05008):
SAM-ViT-H 2973 G (comparison table), EfficientViT-SAM-L0 35 G and -XL1 322 G (Table 1, also
the model card https://huggingface.co/mit-han-lab/efficientvit-sam). Counted on the meta
device: no weights, no memory, a few seconds even for ViT-H.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.anchors import PUBLISHED_GMACS, PUBLISHED_PARAMS_M
from leansam.bench.flops import build_meta, count_macs, model_macs, param_counts
from leansam.registry import get_model_info


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_sdpa_is_counted(device):
    b, h, lq, lk, e = 2, 4, 128, 96, 32
    q = torch.randn(b, h, lq, e, device=device)
    k = torch.randn(b, h, lk, e, device=device)
    expected = 2 * b * h * lq * lk * e  # QK^T and AV, multiply-adds
    assert count_macs(lambda: F.scaled_dot_product_attention(q, k, k)) == expected


def test_cpu_attention_is_counted_once():
    """Why leansam adds a formula: torch's own counter reports 0 for SDPA on CPU; leansam's
    counter gives exactly the formula (and would not double it if torch learned to count it)."""
    q = torch.randn(1, 2, 64, 16)
    with FlopCounterMode(display=False) as c:
        F.scaled_dot_product_attention(q, q, q)
    expected = 2 * 1 * 2 * 64 * 64 * 16
    assert count_macs(lambda: F.scaled_dot_product_attention(q, q, q)) == expected
    assert c.get_total_flops() in (0, 2 * expected)


def vit_b_encoder_macs() -> int:
    """SAM ViT-B's image encoder at 1024, derived by hand from the architecture (segment-anything
    ``ImageEncoderViT``): 16 x 16 patches, 12 blocks of width 768 with 12 heads and MLP 3072,
    global attention in blocks 2, 5, 8, 11 and 14 x 14 windows elsewhere (the 64 x 64 grid padded
    to 70 x 70 = 25 windows, every linear layer of those blocks runs on the padded tokens),
    decomposed relative positions (q against the height and the width tables), and the neck."""
    dim, heads, mlp, grid = 768, 12, 3072, 64
    head_dim = dim // heads
    macs = grid * grid * dim * 3 * 16 * 16
    for block in range(12):
        windows, side = (1, grid) if block in (2, 5, 8, 11) else (25, 14)
        tokens, per_window = windows * side * side, side * side
        macs += tokens * (4 * dim * dim)  # qkv + output projection
        macs += grid * grid * 2 * dim * mlp  # the MLP runs after un-padding
        macs += windows * heads * 2 * per_window * per_window * head_dim  # q k^T, attn v
        macs += windows * heads * 2 * per_window * side * head_dim  # rel-pos tables
    return macs + grid * grid * (dim * 256 + 256 * 256 * 9)  # neck: 1x1 then 3x3 conv


def test_vit_b_encoder_macs_equal_the_count_derived_by_hand():
    assert model_macs(build_meta("sam_vit_b")).image_encoder == vit_b_encoder_macs()


@pytest.mark.parametrize("name", ["efficientvit_sam_l0", "efficientvit_sam_xl1", "sam_vit_h"])
def test_encoder_macs_match_published_within_2_percent(name):
    macs = model_macs(build_meta(name))
    published = PUBLISHED_GMACS[name].value * 1e9
    assert abs(macs.image_encoder / published - 1) < 0.02, (name, macs.image_encoder / 1e9)
    assert 1.0e9 < macs.prompt_decoder < 2.0e9  # SAM's decoder, one box: ~1.3 GMACs


def test_attention_model_counts_the_same_on_cpu_and_meta():
    """mobile_sam's TinyViT uses attention: the CPU count (custom SDPA formula) equals the meta count."""
    cpu = get_model_info("mobile_sam").build()
    assert model_macs(cpu).image_encoder == model_macs(build_meta("mobile_sam")).image_encoder
    assert all(p.requires_grad for p in cpu.parameters())  # flags restored


@pytest.mark.parametrize("name", ["efficientvit_sam_l0", "mobile_sam", "sam_vit_h"])
def test_param_counts_match_the_registry(name):
    counts = param_counts(build_meta(name))
    info = get_model_info(name)
    assert counts.total == info.n_params
    assert counts.image_encoder + counts.prompt_decoder == counts.total
    if name in PUBLISHED_PARAMS_M:
        assert abs(counts.total / 1e6 / PUBLISHED_PARAMS_M[name].value - 1) < 0.005


def test_decoder_macs_grow_with_boxes():
    m = build_meta("efficientvit_sam_l0")
    one, ten = model_macs(m, n_boxes=1), model_macs(m, n_boxes=10)
    assert one.image_encoder == ten.image_encoder
    assert 9 * one.prompt_decoder < ten.prompt_decoder < 11 * one.prompt_decoder
