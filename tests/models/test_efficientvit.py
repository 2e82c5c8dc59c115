"""EfficientViT-SAM: parameter counts of every size, key order, encoder parity with the fixtures.

Fixtures exist for L0 (512 input) and XL0 (1024 input); L1, L2 and XL1 share the code paths
and are checked here by exact parameter counts (and live against the official code in
test_efficientvit_oracle.py). Strict loading and predictor parity: test_registry_parity.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch

import leansam
from leansam.checkpoints import expected_shapes
from leansam.models.efficientvit import (
    EFFICIENTVIT_SAM_CONFIGS,
    LiteMLA,
    build_efficientvit_sam_encoder,
)
from leansam.models.sam import Sam
from leansam.registry import get_model_info
from tests import parity as P
from tests import tolerances as T

FIXTURES = ("efficientvit_sam_l0", "efficientvit_sam_xl0")
ALL = tuple(sorted(EFFICIENTVIT_SAM_CONFIGS))

# Image-encoder parameter counts of the official builders (efficientsam 1.0.0,
# ``create_efficientvit_sam_model(name).image_encoder``); BatchNorm buffers excluded.
ENCODER_PARAMS = {
    "efficientvit_sam_l0": 30_728_224,
    "efficientvit_sam_l1": 43_585_568,
    "efficientvit_sam_l2": 57_264_032,
    "efficientvit_sam_xl0": 112_893_344,
    "efficientvit_sam_xl1": 199_281_568,
}
# Published whole-model totals (EfficientViT-SAM README), in millions.
PUBLISHED_TOTAL_M = {
    "efficientvit_sam_l0": 34.8,
    "efficientvit_sam_l1": 47.7,
    "efficientvit_sam_l2": 61.3,
    "efficientvit_sam_xl0": 117.0,
    "efficientvit_sam_xl1": 203.3,
}


def _manifest_param_count(name: str, prefixes: tuple[str, ...]) -> int:
    """Float entries under ``prefixes`` in the official state_dict, minus buffers
    (BatchNorm running statistics, the prompt encoder's random-Fourier matrix)."""
    total = 0
    for key, shape, dtype in P.manifest(name)["keys"]:
        if not key.startswith(prefixes) or not dtype.startswith("torch.float"):
            continue
        if ".running_" in key or key.endswith("positional_encoding_gaussian_matrix"):
            continue
        total += math.prod(shape)
    return total


# --- architecture only ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_exact_parameter_counts(name: str) -> None:
    info = get_model_info(name)
    with torch.device("meta"):
        model = info.build()
    n_encoder = sum(p.numel() for p in model.image_encoder.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    assert n_encoder == ENCODER_PARAMS[name]
    assert n_total == info.n_params
    # SAM's prompt encoder + mask decoder, counted from the sam_vit_b manifest.
    n_prompt_decoder = _manifest_param_count("sam_vit_b", ("prompt_encoder.", "mask_decoder."))
    assert n_prompt_decoder == 6_220 + 4_058_340
    assert n_total == n_encoder + n_prompt_decoder
    assert round(n_total / 1e6, 1) == PUBLISHED_TOTAL_M[name]
    if name in FIXTURES:
        assert n_total == _manifest_param_count(name, ("image_encoder.", "prompt_encoder.", "mask_decoder."))


@pytest.mark.parametrize("name", FIXTURES)
def test_official_key_layout(name: str) -> None:
    # Every official key with its exact shape, and nothing else (what a strict load checks) ...
    official = [(k, tuple(s)) for k, s, _ in P.manifest(name)["keys"]]
    assert expected_shapes(get_model_info(name)) == dict(official)
    # ... and the encoder's keys in the official order.
    encoder = [(k.removeprefix("image_encoder."), s) for k, s in official if k.startswith("image_encoder.")]
    assert [
        (k, tuple(v.shape)) for k, v in build_efficientvit_sam_encoder(name).state_dict().items()
    ] == encoder


def test_transforms_follow_the_official_frames() -> None:
    for name in ALL:
        t = get_model_info(name).transform
        assert t.encoder_size == EFFICIENTVIT_SAM_CONFIGS[name].img_size
        assert t.encoder_size == (1024 if "_xl" in name else 512)
        assert t.prompt_frame == 1024


@pytest.mark.parametrize("side", [2, 5, 9])  # H*W = 4 and 25 <= dim (official: N x N form), 81 > dim
def test_linear_attention_equals_quadratic_form(side: int) -> None:
    dim, heads = 8, 3
    attn = LiteMLA(channels=heads * dim, dim=dim, scale=3, eps=1e-15, norm_eps=1e-6)
    qkv = torch.randn(2, 3 * heads * dim, side, side, generator=torch.Generator().manual_seed(side))
    q, k, v = qkv.reshape(2, heads, 3 * dim, side * side).double().split(dim, dim=2)
    weights = k.relu().transpose(-1, -2) @ q.relu()  # B x heads x N(keys) x N(queries)
    weights = weights / (weights.sum(dim=2, keepdim=True) + 1e-15)
    expected = (v @ weights).reshape(2, heads * dim, side, side)
    torch.testing.assert_close(attn._linear_attention(qkv).double(), expected, rtol=1e-5, atol=1e-6)


def test_unknown_variant_rejected() -> None:
    with pytest.raises(ValueError, match="unknown EfficientViT-SAM variant"):
        build_efficientvit_sam_encoder("efficientvit_sam_l9")


# --- stand-in weights ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Callable[[str], object]:
    """name -> path of the regenerated official-format file ({"state_dict": sd}), written once."""
    root = tmp_path_factory.mktemp("efficientvit_ckpt")
    paths = {}

    def get(name: str):
        if name not in paths:
            paths[name] = P.write_stand_in_checkpoint(name, root / get_model_info(name).weights.file_name)
        return paths[name]

    return get


@pytest.fixture(scope="module")
def model(checkpoint) -> Callable[[str], Sam]:
    """name -> the model loaded through the public API (strict), built once per module."""
    cache: dict[str, Sam] = {}

    def get(name: str) -> Sam:
        if name not in cache:
            cache[name] = leansam.build_model(name, checkpoint=checkpoint(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def embedding(model) -> Callable[[str], torch.Tensor]:
    """name -> the encoder's output for the fixture's encoder input, computed once."""
    cache: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        if name not in cache:
            with torch.no_grad():
                cache[name] = model(name).image_encoder(P.encoder_input(P.load_case(name)))
        return cache[name]

    return get


def test_bare_state_dict_loads_too(tmp_path, checkpoint) -> None:
    name = "efficientvit_sam_l0"
    state = torch.load(checkpoint(name), weights_only=True)["state_dict"]
    path = tmp_path / "bare.pt"
    torch.save(state, path)
    own = leansam.build_model(name, checkpoint=path).state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state)


@pytest.mark.parametrize("name", FIXTURES)
def test_embedding_matches_fixture(name: str, embedding) -> None:
    case = P.load_case(name)
    out = embedding(name)
    assert out.shape == (1, 256, 64, 64)
    T.check_floats(f"fixture/{name}/embedding", out, case["embedding"])


def test_reparameterize_keeps_outputs(model, embedding) -> None:
    name = "efficientvit_sam_l0"
    case = P.load_case(name)
    fused = copy.deepcopy(model(name).image_encoder).reparameterize()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    ref = embedding(name)
    with torch.no_grad():
        out = fused(P.encoder_input(case))
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    T.check_floats(f"fixture/{name}/embedding (reparameterized)", out, case["embedding"])


def test_batch_equals_singles(model) -> None:
    encoder = model("efficientvit_sam_l0").image_encoder
    # Any side that is a multiple of 32 works; 128 keeps the test cheap.
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = encoder(x)
        singles = torch.cat([encoder(x[:1]), encoder(x[1:])])
    assert batched.shape == (2, 256, 64, 64)
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
