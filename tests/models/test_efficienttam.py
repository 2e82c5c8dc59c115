"""EfficientTAM-Ti / -S (image mode): strict loading, key layout, parameter counts, parity.

EfficientTAM-Ti's encoder is checked against its fixture (``shared/parity/efficienttam_ti``: the
official ``yformer/EfficientTAM`` image predictor on stand-in weights, fp16 arrays); strict
loading and predictor parity are in test_registry_parity.py, tolerances in docs/testing.md.

EfficientTAM-S has no fixture. Its official checkpoint layout is derived here from the Ti
manifest by the only differences between ``configs/efficienttam/efficienttam_ti.yaml`` and
``efficienttam_s.yaml`` (trunk ``embed_dim`` 192 -> 384, ``num_heads`` 3 -> 6, neck
``backbone_channel_list`` [192] -> [384]); the derived list was checked once against the
state_dict of the official model built from ``efficienttam_s.yaml`` (yformer/EfficientTAM
@abcd061, every module instantiated from the yaml): same 455 keys, shapes and dtypes, whose
JSON (``[[name, shape, dtype], ...]``) has the sha256 below. The same build gives the image-mode
parameter counts of the registry (Ti 10,360,753, S 26,550,577).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import leansam
from leansam.checkpoints import expected_shapes, load_model
from leansam.models.vit import EfficientTamImageEncoder
from leansam.registry import get_model_info
from leansam.zoo.efficienttam import filter_fn
from tests import parity as P
from tests import tolerances as T

NAME = "efficienttam_ti"
IMAGE_MODE_HEADS = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
# sha256 of json.dumps(keys) of the official efficienttam_s state_dict (see the module docstring).
OFFICIAL_S_LAYOUT_SHA256 = "9b5feca30457bd66d3e64544147b633b237c562c07589990108a617fe353f457"
_TI_TO_S = {192: 384, 576: 1152, 768: 1536}  # embed, qkv (3 x embed), MLP (4 x embed) widths


def s_manifest_keys() -> list[list]:
    """The official efficienttam_s key layout, derived from the Ti fixture manifest."""
    out = []
    for key, shape, dtype in P.manifest(NAME)["keys"]:
        if key.startswith("image_encoder.trunk.") or key == "image_encoder.neck.convs.0.conv_1x1.weight":
            shape = [_TI_TO_S.get(d, d) for d in shape]
        out.append([key, shape, dtype])
    return out


def manifest_keys(name: str) -> list[list]:
    return P.manifest(name)["keys"] if name == NAME else s_manifest_keys()


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return P.write_stand_in_checkpoint(NAME, tmp_path_factory.mktemp("etam") / "efficienttam_ti.pt")


@pytest.fixture(scope="module")
def loaded(ckpt_path: Path):
    return load_model(NAME, checkpoint=ckpt_path)


@pytest.fixture(scope="module")
def model(loaded) -> leansam.Sam:
    return loaded[0]


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    return P.load_case(NAME)


@pytest.fixture(scope="module")
def predictor(model: leansam.Sam, case: dict[str, np.ndarray]) -> leansam.SamPredictor:
    p = leansam.SamPredictor(model)
    p.set_image(case["image"])
    return p


# --- layout, parameter counts, registry ----------------------------------------------------------
def test_derived_s_layout_is_the_official_one() -> None:
    digest = hashlib.sha256(json.dumps(s_manifest_keys()).encode()).hexdigest()
    assert digest == OFFICIAL_S_LAYOUT_SHA256


@pytest.mark.parametrize("name", ["efficienttam_ti", "efficienttam_s"])
def test_exact_parameter_count_and_official_key_layout(name: str) -> None:
    info = get_model_info(name)
    with torch.device("meta"):
        m = info.build()
    assert sum(p.numel() for p in m.parameters()) == info.n_params
    keys = manifest_keys(name)
    image_mode = sum(int(np.prod(s)) for k, s, _ in keys if k.startswith(IMAGE_MODE_HEADS))
    assert info.n_params == image_mode - 256  # minus the prompt encoder's PE buffer
    # Every image-mode key, renamed, with its exact shape and nothing else; the rest set aside.
    mapped, set_aside = filter_fn({k: torch.empty(s, device="meta") for k, s, _ in keys})
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected_shapes(info)
    assert sorted(set_aside) == sorted(k for k, _, _ in keys if not k.startswith(IMAGE_MODE_HEADS))
    # A state_dict already in leansam's layout passes through unchanged.
    again, _ = filter_fn(mapped)
    assert list(again) == list(mapped)


@pytest.mark.parametrize("name", ["efficienttam_ti", "efficienttam_s"])
def test_registry_entry(name: str) -> None:
    info = get_model_info(name)
    assert info.family == "efficienttam"
    assert info.weights.license == "Apache-2.0"
    assert info.weights.wrappers == ("model",)
    assert (
        info.weights.url == f"https://huggingface.co/yunyangx/efficient-track-anything/resolve/main/{name}.pt"
    )
    assert len(info.weights.sha256) == 64
    t = info.transform
    assert (t.resize, t.interpolation, t.upsample, t.crop, t.low_res_clamp) == (
        "square",
        "bilinear_antialias",
        "bilinear",
        False,
        32.0,
    )
    assert info.prompt_style.box_first and info.prompt_style.pad == "always"


def test_strict_load_loads_every_image_mode_tensor_and_reports_the_rest(loaded, ckpt_path: Path) -> None:
    model, report = loaded
    state = torch.load(ckpt_path, weights_only=True)["model"]
    memory = sorted(k for k in state if not k.startswith(IMAGE_MODE_HEADS))
    assert report.set_aside == memory and len(memory) > 0
    mapped, _ = filter_fn(state)
    own = model.state_dict()
    assert set(own) == set(mapped)
    assert all(torch.equal(own[k], v) for k, v in mapped.items())
    assert torch.equal(model.image_encoder.no_mem_embed, state["no_mem_embed"])


def test_strict_load_of_full_size_efficienttam_s_file(tmp_path: Path) -> None:
    """A stand-in efficienttam_s.pt in the official layout loads strictly through the public API."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"keys": s_manifest_keys(), "wrapper": "model"}))
    P._synthetic_module().write_checkpoint(tmp_path / "m", tmp_path / "efficienttam_s.pt")
    model = leansam.build_model("efficienttam_s", checkpoint=tmp_path / "efficienttam_s.pt")
    assert sum(p.numel() for p in model.parameters()) == get_model_info("efficienttam_s").n_params


# --- parity --------------------------------------------------------------------------------------
def test_image_embed_matches_fixture(model: leansam.Sam, case: dict[str, np.ndarray]) -> None:
    assert isinstance(model.image_encoder, EfficientTamImageEncoder)
    with torch.no_grad():
        emb = model.image_encoder(P.encoder_input(case))
    assert emb.shape == (1, 256, 64, 64)
    T.check_floats(f"fixture/{NAME}/image_embed", emb, case["image_embed"])


def test_no_mem_embed_is_added_per_channel(model: leansam.Sam) -> None:
    enc = model.image_encoder
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    saved = enc.no_mem_embed.detach().clone()
    with torch.no_grad():
        before = enc(x)
        enc.no_mem_embed.zero_()
        try:
            after = enc(x)
        finally:
            enc.no_mem_embed.copy_(saved)
    torch.testing.assert_close(before - after, saved.view(1, -1, 1, 1).expand_as(before))


def test_mask_input_round_trip_runs(predictor: leansam.SamPredictor, case: dict) -> None:
    """EfficientTAM keeps SAM 2's mask prompt path (unlike EfficientSAM)."""
    kwargs = P.case_prompts(case, "points")
    _, iou, low = predictor.predict(**kwargs, multimask_output=True)
    masks, iou1, low1 = predictor.predict(
        **kwargs, mask_input=low[np.argmax(iou)][None], multimask_output=False
    )
    assert low1.shape == (1, 256, 256) and iou1.shape == (1,) and masks.shape == (1, *case["image"].shape[:2])
