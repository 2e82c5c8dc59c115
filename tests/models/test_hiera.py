"""SAM 2 / SAM 2.1 (Hiera): encoder parity, set-aside memory modules, parameter counts of every size.

Strict loading and predictor parity with the fixture are in test_registry_parity.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import leansam
from leansam.checkpoints import load_checkpoint, load_model
from leansam.models.hiera import (
    HIERA_CONFIGS,
    HieraImageEncoder,
    Sam2ImageFeatures,
    build_hiera_image_encoder,
)
from leansam.models.sam import Sam
from leansam.registry import get_model_info, list_models
from leansam.zoo.hiera import filter_fn
from tests import tolerances as T
from tests.parity import (
    encoder_input,
    load_case,
    manifest,
    meta,
    stand_in_state_dict,
    sub_state_dict,
    write_stand_in_checkpoint,
)

NAME = "sam2.1_hiera_tiny"
SIZES = ("tiny", "small", "base_plus", "large")

# Parameters of ``image_encoder`` (trunk + neck, without no_mem_embed) per size. Source: the official
# modules (PyPI sam2 1.1.0 = facebookresearch/sam2 @2b90b9f) instantiated from
# sam2/configs/sam2{,.1}/sam2{,.1}_hiera_{t,s,b+,l}.yaml; the image encoder is identical in SAM 2 and
# SAM 2.1. Cross-checks of those builds: their whole-model state_dict sizes are 38,946,242 /
# 46,044,098 / 80,833,922 / 224,430,386 (SAM 2: the published 38.9M / 46M / 80.8M / 224.4M) and
# 38,962,754 for SAM 2.1 tiny (= the fixture manifest's n_params). Tiny is also checked against the
# manifest below; the registry's image-mode counts (``ModelInfo.n_params``) come from the same builds.
IMAGE_ENCODER_PARAMS = {
    "tiny": 27_219_136,
    "small": 34_316_992,
    "base_plus": 69_106_816,
    "large": 212_703_280,
}
# Top-level names of the official video/memory modules (SAM 2.1 tiny manifest).
MEMORY_HEADS = {
    "memory_attention",
    "memory_encoder",
    "mask_downsample",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",
    "no_obj_embed_spatial",
}
IMAGE_MODE_HEADS = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
PE_BUFFER = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official checkpoint -> HieraImageEncoder state: ``image_encoder.*`` plus top-level ``no_mem_embed``."""
    return {**sub_state_dict(state, "image_encoder."), "no_mem_embed": state["no_mem_embed"]}


def _numel(shape: list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def stand_in() -> dict[str, torch.Tensor]:
    state, wrapper = stand_in_state_dict(NAME)
    assert wrapper == "model"
    return state


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    return load_case(NAME)


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stand_in_checkpoint(NAME, tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="module")
def model(checkpoint_file: Path) -> Sam:
    """The full model loaded strictly from the official-format file through the public API."""
    torch.manual_seed(0)
    return leansam.build_model(NAME, checkpoint=checkpoint_file)


@pytest.fixture(scope="module")
def encoder(model: Sam) -> HieraImageEncoder:
    assert isinstance(model.image_encoder, HieraImageEncoder)
    return model.image_encoder


@pytest.fixture(scope="module")
def case_features(encoder: HieraImageEncoder, case: dict[str, np.ndarray]) -> Sam2ImageFeatures:
    with torch.no_grad():
        return encoder(encoder_input(case))


# --- encoder -------------------------------------------------------------------------------------
def test_encoder_strict_load_and_key_layout(stand_in: dict[str, torch.Tensor]) -> None:
    enc = build_hiera_image_encoder("tiny")
    # The official image_encoder.* keys map 1:1; the only extra key is the top-level no_mem_embed.
    result = enc.load_state_dict(sub_state_dict(stand_in, "image_encoder."), strict=False)
    assert result.missing_keys == ["no_mem_embed"]
    assert result.unexpected_keys == []
    expected = _encoder_state(stand_in)
    enc.load_state_dict(expected, strict=True)
    loaded = enc.state_dict()
    assert sorted(loaded) == sorted(expected)
    for k, v in loaded.items():  # every loaded tensor is exactly the checkpoint's
        assert torch.equal(v, expected[k]), k


def test_encoder_param_count_tiny_matches_manifest() -> None:
    keys = manifest(NAME)["keys"]
    n_manifest = sum(_numel(shape) for name, shape, _ in keys if name.startswith("image_encoder."))
    assert n_manifest == IMAGE_ENCODER_PARAMS["tiny"]
    with torch.device("meta"):
        enc = build_hiera_image_encoder("tiny")
    assert _n_params(enc) == n_manifest + 256  # + no_mem_embed (1 x 1 x 256)


@pytest.mark.parametrize("size", SIZES)
def test_encoder_param_count_all_sizes(size: str) -> None:
    with torch.device("meta"):  # shapes only: the large trunk would allocate ~0.85 GB
        enc = build_hiera_image_encoder(size)
    assert _n_params(enc.trunk) + _n_params(enc.neck) == IMAGE_ENCODER_PARAMS[size]
    assert enc.no_mem_embed.shape == (1, 1, 256)


def test_configs_cover_the_four_sizes() -> None:
    assert set(HIERA_CONFIGS) == set(SIZES)
    with pytest.raises(ValueError):
        build_hiera_image_encoder("huge")


def test_encoder_parity(
    case_features: Sam2ImageFeatures, stand_in: dict, case: dict[str, np.ndarray]
) -> None:
    embed, (high0, high1) = case_features
    assert embed.shape == (1, 256, 64, 64)
    assert high0.shape == (1, 256, 256, 256)
    assert high1.shape == (1, 256, 128, 128)
    # The fixture's high-res maps are after the mask decoder's 1x1 conv_s0 / conv_s1.
    s0 = F.conv2d(
        high0, stand_in["sam_mask_decoder.conv_s0.weight"], stand_in["sam_mask_decoder.conv_s0.bias"]
    )
    s1 = F.conv2d(
        high1, stand_in["sam_mask_decoder.conv_s1.weight"], stand_in["sam_mask_decoder.conv_s1.bias"]
    )
    T.check_floats(f"fixture/{NAME}/image_embed", embed, case["image_embed"])
    T.check_floats(f"fixture/{NAME}/high_res_feats_0", s0, case["high_res_feats_0"])
    T.check_floats(f"fixture/{NAME}/high_res_feats_1", s1, case["high_res_feats_1"])


def test_no_mem_embed_is_added_to_image_embed_only(encoder: HieraImageEncoder) -> None:
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    saved = encoder.no_mem_embed.detach().clone()
    with torch.no_grad():
        before = encoder(x)
        encoder.no_mem_embed.zero_()
        try:
            after = encoder(x)
        finally:
            encoder.no_mem_embed.copy_(saved)
    added = saved.view(1, -1, 1, 1).expand_as(before.image_embed)
    torch.testing.assert_close(before.image_embed - after.image_embed, added)
    for a, b in zip(before.high_res_feats, after.high_res_feats):
        assert torch.equal(a, b)


def test_batch_of_two_equals_two_singles(encoder: HieraImageEncoder) -> None:
    # 256 x 256 keeps this cheap and also exercises window padding (1/16: 16 tokens, window 14;
    # 1/32: 8 tokens, window 7).
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = encoder(x)
        singles = [encoder(x[i : i + 1]) for i in range(2)]
    assert batched.image_embed.shape == (2, 256, 16, 16)
    for i, single in enumerate(singles):
        for got, ref in zip(_flat(batched), _flat(single)):
            scale = float(ref.abs().max())
            torch.testing.assert_close(got[i : i + 1], ref, rtol=1e-5, atol=1e-5 * scale)


def _flat(f: Sam2ImageFeatures) -> list[torch.Tensor]:
    return [f.image_embed, *f.high_res_feats]


# --- registry, checkpoint loading, parameter counts --------------------------------------------------
def test_registry_entries() -> None:
    names = [f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in SIZES]
    assert sorted(names) == list_models("sam2*")
    for name in names:
        info = get_model_info(name)
        assert info.weights.file_name == f"{name}.pt"
        assert info.weights.url.endswith(f"/{name}.pt")
        assert info.weights.wrappers == ("model",)
        assert info.transform.resize == "square" and info.transform.low_res_clamp == 32.0
        assert info.prompt_style.box_first and info.prompt_style.pad == "always"
    assert get_model_info(NAME).weights.url == manifest(NAME)["official"]["checkpoint_url"]


def test_strict_load_sets_aside_exactly_the_memory_modules(
    checkpoint_file: Path, model: Sam, stand_in: dict[str, torch.Tensor]
) -> None:
    _, report = load_model(NAME, checkpoint_file)
    memory = sorted(k for k in stand_in if k.split(".", 1)[0] in MEMORY_HEADS)
    image_mode = [k for k in stand_in if k.startswith(IMAGE_MODE_HEADS)]
    assert len(memory) + len(image_mode) == len(stand_in)
    assert report.set_aside == memory
    # Every image-mode tensor of the file is in the model, unchanged.
    mapped, _ = filter_fn(stand_in)
    own = model.state_dict()
    assert sorted(own) == sorted(mapped)
    for k, v in mapped.items():
        assert torch.equal(own[k], v), k


def test_filter_leaves_unknown_keys_for_the_strict_loader(stand_in: dict[str, torch.Tensor]) -> None:
    extra = dict(stand_in)
    extra["some_new_module.weight"] = torch.zeros(1)
    mapped, aside = filter_fn(extra)
    assert "some_new_module.weight" in mapped
    assert "some_new_module.weight" not in aside
    with torch.device("meta"):
        target = get_model_info(NAME).build()
    with pytest.raises(
        leansam.CheckpointError, match=re.escape("unexpected keys (1): some_new_module.weight")
    ):
        load_checkpoint(target, get_model_info(NAME), extra)


def test_n_params_tiny_matches_manifest(model: Sam) -> None:
    # Image-mode parameters of the official file: every float tensor of the image-mode modules
    # except the prompt encoder's PE buffer (not an nn.Parameter).
    keys = manifest(NAME)["keys"]
    n = sum(_numel(s) for k, s, _ in keys if k.startswith(IMAGE_MODE_HEADS) and k != PE_BUFFER)
    assert _n_params(model) == n == get_model_info(NAME).n_params
    assert meta(NAME)["n_params"] == sum(_numel(s) for _, s, _ in keys)  # the whole file, memory included


@pytest.mark.parametrize("version", ["sam2", "sam2.1"])
@pytest.mark.parametrize("size", SIZES)
def test_n_params_all_models(version: str, size: str) -> None:
    info = get_model_info(f"{version}_hiera_{size}")
    with torch.device("meta"):
        model = info.build()
    assert _n_params(model) == info.n_params
    # The decoder and prompt encoder are the same for every size; only the encoder differs.
    assert (
        info.n_params - IMAGE_ENCODER_PARAMS[size]
        == get_model_info(NAME).n_params - IMAGE_ENCODER_PARAMS["tiny"]
    )


# --- full predictor ----------------------------------------------------------------------------------
