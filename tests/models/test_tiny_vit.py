"""MobileSAM / TinySAM (TinyViT-5M encoder): the encoder, its attention biases and reparameterisation.

The reference is the stored fixture (official MobileSAM code run on deterministic stand-in
weights, fp16). Strict loading and predictor parity are in test_registry_parity.py; TinySAM on
weights of its own against the live official code in test_mobile_sam_oracle.py.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import leansam
from leansam.models.tiny_vit import TinyViT, TinyViTConfig, WindowAttention
from leansam.registry import get_model_info
from tests import tolerances as T
from tests.parity import (
    assert_close_scaled,
    encoder_input,
    load_case,
    manifest,
    stand_in_state_dict,
    sub_state_dict,
    write_stand_in_checkpoint,
)

PREFIX = "image_encoder."
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# Learnable parameters of the encoder, classifier head included (it is in the checkpoint):
# the sum of numel over the manifest's float entries under "image_encoder." that are not
# BatchNorm running statistics (see test_encoder_parameter_count_matches_manifest).
EXPECTED_PARAMS = 6_065_532


def _encoder_state(name: str) -> dict[str, torch.Tensor]:
    return sub_state_dict(stand_in_state_dict(name)[0], PREFIX)


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> leansam.Sam:
    """mobile_sam built through the public API from the regenerated official-format file."""
    path = tmp_path_factory.mktemp("ckpt") / get_model_info("mobile_sam").weights.file_name
    return leansam.build_model("mobile_sam", checkpoint=write_stand_in_checkpoint("mobile_sam", path))


@pytest.fixture(scope="module")
def loaded(sam: leansam.Sam) -> TinyViT:
    assert isinstance(sam.image_encoder, TinyViT)
    return sam.image_encoder


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    return load_case("mobile_sam")


@pytest.fixture(scope="module")
def embedding(loaded: TinyViT, case: dict[str, np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return loaded(encoder_input(case))


def test_encoder_strict_load_after_eval() -> None:
    # eval() BEFORE loading, like the official builder: an implementation that caches the
    # attention bias on eval() would keep stale biases; ours gathers them in forward.
    model = TinyViT().eval()
    result = model.load_state_dict(sub_state_dict(stand_in_state_dict("mobile_sam")[0], PREFIX), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_encoder_state_dict_layout_matches_manifest() -> None:
    expected = {
        k[len(PREFIX) :]: (tuple(s), d) for k, s, d in manifest("mobile_sam")["keys"] if k.startswith(PREFIX)
    }
    mine = {k: (tuple(v.shape), str(v.dtype)) for k, v in TinyViT().state_dict().items()}
    assert mine == expected


def test_encoder_parameter_count_matches_manifest() -> None:
    # Parameters = float entries of the manifest minus the BatchNorm running statistics
    # (float buffers); num_batches_tracked is int64 and also a buffer.
    keys = [(k[len(PREFIX) :], s, d) for k, s, d in manifest("mobile_sam")["keys"] if k.startswith(PREFIX)]
    from_manifest = sum(math.prod(s) for k, s, d in keys if "float" in d and not k.endswith(BN_BUFFERS))
    model = TinyViT()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == from_manifest == EXPECTED_PARAMS
    # ... and every excluded entry really is a BatchNorm buffer of the model.
    buffers = {k for k, _ in model.named_buffers() if k.endswith(BN_BUFFERS)}
    assert buffers == {k for k, _, _ in keys if k.endswith(BN_BUFFERS)}


def test_embedding_matches_official(embedding: torch.Tensor, case: dict[str, np.ndarray]) -> None:
    T.check_floats("fixture/mobile_sam/embedding", embedding, case["embedding"])


def test_reparameterize_matches_unfused(loaded: TinyViT, embedding: torch.Tensor, case: dict) -> None:
    fused = copy.deepcopy(loaded).reparameterize()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        out = fused(encoder_input(case))
    diff = assert_close_scaled(out, embedding.numpy(), tol=1e-4, what="fused vs unfused")
    print(f"fused vs unfused max abs diff {diff:.3e}")


def test_batch_equals_singles(loaded: TinyViT) -> None:
    # 256 x 256 (still padded windows in every attention stage) keeps this test cheap;
    # batch independence does not depend on the input size.
    torch.manual_seed(1)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        batched = loaded(x)
        singles = torch.cat([loaded(x[:1]), loaded(x[1:])])
    assert batched.shape == (2, 256, 16, 16)
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


def test_non_square_input_shape(loaded: TinyViT) -> None:
    # Windows are padded, so any size runs; output stride is 16.
    with torch.no_grad():
        out = loaded(torch.randn(1, 3, 160, 224))
    assert out.shape == (1, 256, 10, 14)
    assert torch.isfinite(out).all()


def _naive_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Explicit softmax attention with the per-head [q | k | v] layout and gathered bias."""
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    qkv = attn.qkv(attn.norm(x)).view(b, n, h, 3, d)
    q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
    bias = attn.attention_biases[:, attn.attention_bias_idxs]
    weights = ((q @ k.transpose(-2, -1)) * d**-0.5 + bias).softmax(-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


def test_window_attention_bias_is_never_stale() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=40, num_heads=5, window=3).eval()
    x = torch.randn(2, 9, 40)
    with torch.no_grad():
        before = attn(x)
        # Changing the biases after eval() (e.g. load_state_dict) must take effect.
        attn.attention_biases.normal_()
        after = attn(x)
        reference = _naive_window_attention(attn, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference, rtol=1e-5, atol=1e-5)


def test_offset_index_numbering() -> None:
    attn = WindowAttention(dim=8, num_heads=2, window=2)
    # Positions (0,0),(0,1),(1,0),(1,1); offsets numbered in first-seen order:
    # (0,0)->0, (0,1)->1, (1,0)->2, (1,1)->3.
    expected = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
    assert torch.equal(attn.attention_bias_idxs, expected)
    assert attn.attention_biases.shape == (2, 4)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        TinyViTConfig(num_heads=(2, 4, 7, 10))
    with pytest.raises(ValueError):
        TinyViTConfig(merge_strides=(2, 2))
