"""RepViT-SAM and EdgeSAM (RepViT encoders): encoder parity with the official outputs, reparameterisation.

The reference is the stored fixture: the official code (RepViT @298f420 sam/, EdgeSAM @b53372c)
run on deterministic stand-in weights, fp16. Models are built through the public API from
regenerated official-format files; each encoder runs once per image per test module.
edge_sam_3x has EdgeSAM's architecture and key layout (no fixture of its own): it is checked
for layout, parameter count and strict loading only. Strict loading and predictor parity of the
models with a fixture are in test_registry_parity.py.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import leansam
from leansam.checkpoints import CheckpointError, expected_shapes, load_checkpoint
from leansam.models.repvit import REPVIT_CONFIGS, RepDWConv, RepViTImageEncoder
from leansam.registry import get_model_info
from tests import tolerances as T
from tests.parity import (
    encoder_input,
    load_case,
    manifest,
    stand_in_state_dict,
    sub_state_dict,
    write_stand_in_checkpoint,
)

NAMES = ("repvit_sam", "edge_sam")  # models with a fixture
FIXTURE_OF = {"repvit_sam": "repvit_sam", "edge_sam": "edge_sam", "edge_sam_3x": "edge_sam"}
PREFIX = "image_encoder."
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# Trainable parameters of the image encoder alone. From the manifest: the numel of every
# float32 entry under "image_encoder." except BatchNorm running_mean / running_var (float
# buffers); num_batches_tracked is int64 and a buffer too. See test_encoder_parameter_count.
ENCODER_PARAMS = {"repvit_sam": 23_158_920, "edge_sam": 5_517_552}


@functools.cache
def _encoder_state(name: str) -> dict[str, torch.Tensor]:
    """``image_encoder.*`` of the stand-in checkpoint, prefix removed (regenerated once)."""
    return sub_state_dict(stand_in_state_dict(name)[0], PREFIX)


def _manifest_keys(name: str, prefix: str = "") -> list[tuple[str, list[int], str]]:
    return [
        (k[len(prefix) :], s, d) for k, s, d in manifest(FIXTURE_OF[name])["keys"] if k.startswith(prefix)
    ]


@pytest.fixture(scope="module")
def ckpt_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {n: write_stand_in_checkpoint(n, folder / get_model_info(n).weights.file_name) for n in NAMES}


@pytest.fixture(scope="module")
def sams(ckpt_paths: dict[str, Path]) -> dict[str, leansam.Sam]:
    return {n: leansam.build_model(n, checkpoint=ckpt_paths[n]) for n in NAMES}


@pytest.fixture(scope="module")
def embeddings(sams: dict[str, leansam.Sam]) -> dict[str, torch.Tensor]:
    """Unfused encoder output on the fixture's encoder input, once per model."""
    with torch.no_grad():
        return {n: sams[n].image_encoder(encoder_input(load_case(n))) for n in NAMES}


# --- loading -------------------------------------------------------------------------------------


def test_edge_sam_3x_loads_the_edge_sam_layout(tmp_path: Path) -> None:
    path = write_stand_in_checkpoint("edge_sam", tmp_path / get_model_info("edge_sam_3x").weights.file_name)
    model = leansam.build_model("edge_sam_3x", checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_edge_sam_extra_keys_are_reported_not_ignored() -> None:
    # EdgeSAM's builder loads with strict=False; leansam is strict, so a key the model
    # does not use is an error naming the key, never silently dropped.
    info = get_model_info("edge_sam")
    with torch.device("meta"):
        model = info.build()
    state = {k: torch.empty(s, device="meta") for k, s in expected_shapes(info).items()}
    state["image_encoder.extra_head.weight"] = torch.empty(3, device="meta")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): image_encoder\.extra_head\.weight"):
        load_checkpoint(model, info, state)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_strict_load_and_key_order(name: str) -> None:
    model = RepViTImageEncoder(REPVIT_CONFIGS[name])
    state = _encoder_state(name)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Same keys in the same order as the official encoder's state_dict, same shapes and dtypes.
    mine = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    assert mine == _manifest_keys(name, PREFIX)


# --- parameter counts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["repvit_sam", "edge_sam", "edge_sam_3x"])
def test_exact_parameter_count_and_official_key_layout(name: str) -> None:
    info = get_model_info(name)
    with torch.device("meta"):
        model = info.build()
    # Parameters = the manifest's float tensors minus buffers: BatchNorm running stats and
    # the prompt encoder's random-Fourier matrix (num_batches_tracked is int64).
    buffers = (*BN_BUFFERS, "positional_encoding_gaussian_matrix")
    keys = _manifest_keys(name)
    from_manifest = sum(math.prod(s) for k, s, d in keys if d == "torch.float32" and not k.endswith(buffers))
    assert sum(p.numel() for p in model.parameters()) == info.n_params == from_manifest
    assert expected_shapes(info) == {k: tuple(s) for k, s, _ in keys}


@pytest.mark.parametrize("name", NAMES)
def test_encoder_parameter_count(name: str) -> None:
    keys = _manifest_keys(name, PREFIX)
    from_manifest = sum(
        math.prod(s) for k, s, d in keys if d == "torch.float32" and not k.endswith(BN_BUFFERS)
    )
    model = RepViTImageEncoder(REPVIT_CONFIGS[name])
    assert sum(p.numel() for p in model.parameters()) == from_manifest == ENCODER_PARAMS[name]
    # Every excluded entry really is a BatchNorm buffer of the model; one num_batches_tracked per BN.
    buffers = {k for k, _ in model.named_buffers()}
    assert buffers == {k for k, _, _ in keys if k.endswith(BN_BUFFERS)}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn == sum(d == "torch.int64" for _, _, d in keys)


# --- encoder parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_embedding_parity(name: str, embeddings: dict[str, torch.Tensor]) -> None:
    assert tuple(embeddings[name].shape) == (1, 256, 64, 64)
    T.check_floats(f"fixture/{name}/embedding", embeddings[name], load_case(name)["embedding"])


def _small_input() -> torch.Tensor:
    """2 x 3 x 128 x 192: small and non-square (multiples of 32, as the fusion requires)."""
    return torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 128, 192)).astype(np.float32))


def _assert_within_scaled(mine: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> float:
    scale = max(1.0, float(ref.abs().max()))
    diff = float((mine - ref).abs().max())
    print(f"{what}: max abs diff {diff:.3e} (scale {scale:.3g})")
    assert diff <= tol * scale, what
    return diff


@pytest.mark.parametrize("name", NAMES)
def test_reparameterize_structure_and_exactness(name: str, sams: dict[str, leansam.Sam]) -> None:
    encoder64 = copy.deepcopy(sams[name].image_encoder).double()
    fused64 = copy.deepcopy(encoder64).reparameterize()
    # Nothing left to fold: no BatchNorm, no three-branch mixer.
    assert not any(isinstance(m, (nn.BatchNorm2d, RepDWConv)) for m in fused64.modules())
    assert sum(p.numel() for p in fused64.parameters()) < ENCODER_PARAMS[name]
    fused64.reparameterize()  # idempotent
    # In float64 the folding is exact up to ~1e-14: any algebra slip would show far above that.
    # (fp32 rounding noise alone reaches ~2e-5 of the output scale on some inputs.)
    x = _small_input()[:1, :, :64, :96].double()  # float64 convs are slow on CPU: keep it tiny
    with torch.no_grad():
        _assert_within_scaled(fused64(x), encoder64(x), 1e-10, f"{name} reparameterized vs unfused (fp64)")


# The full-size check of RepViT-SAM costs one more M2.3 forward at 1024 (several seconds on 2 cores).
@pytest.mark.parametrize("name", [pytest.param("repvit_sam", marks=pytest.mark.slow), "edge_sam"])
def test_reparameterized_parity_full_size(
    name: str, sams: dict[str, leansam.Sam], embeddings: dict[str, torch.Tensor]
) -> None:
    fused = copy.deepcopy(sams[name].image_encoder).reparameterize()
    case = load_case(name)
    with torch.no_grad():
        out = fused(encoder_input(case))
    _assert_within_scaled(out, embeddings[name], 1e-4, f"{name} reparameterized vs unfused")
    T.check_floats(f"fixture/{name}/embedding (reparameterized)", out, case["embedding"])


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_two_equals_singles(name: str, sams: dict[str, leansam.Sam]) -> None:
    x = _small_input()
    encoder = sams[name].image_encoder
    with torch.no_grad():
        both = encoder(x)
        singles = torch.cat([encoder(x[:1]), encoder(x[1:])])
    stride = REPVIT_CONFIGS[name].total_stride
    assert stride == 16
    assert tuple(both.shape) == (2, 256, 128 // stride, 192 // stride)
    assert not torch.allclose(both[0], both[1])
    # Batched and single convolutions may take different kernels whose float32 rounding differs
    # by up to ~1e-4 of the output scale on these small inputs (in float64 the two agree to
    # ~1e-15, checked once by hand); images mixing in the batch would differ by O(1).
    _assert_within_scaled(both, singles, 1e-3, f"{name} batch of 2 vs singles")
