"""EfficientSAM ViT-Ti / ViT-S: what is specific to the family (key renaming, prompt layout, mask
prompts refused), and the encoder against the fixtures (``shared/parity/efficientsam_vit{t,s}``).

Strict loading and predictor parity are in test_registry_parity.py; tolerances in docs/testing.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import leansam
from leansam.checkpoints import CheckpointError, expected_shapes, load_checkpoint
from leansam.registry import get_model_info
from leansam.zoo.efficientsam import filter_fn
from tests import parity as P
from tests import tolerances as T

NAMES = ("efficientsam_vitt", "efficientsam_vits")
PE_BUFFER = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


@pytest.fixture(scope="module", params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def ckpt_path(name: str, tmp_path_factory: pytest.TempPathFactory):
    file_name = get_model_info(name).weights.file_name
    return P.write_stand_in_checkpoint(name, tmp_path_factory.mktemp(name) / file_name)


@pytest.fixture(scope="module")
def model(name: str, ckpt_path) -> leansam.Sam:
    return leansam.build_model(name, checkpoint=ckpt_path)


@pytest.fixture(scope="module")
def case(name: str) -> dict[str, np.ndarray]:
    return P.load_case(name)


@pytest.fixture(scope="module")
def predictor(model: leansam.Sam, case: dict[str, np.ndarray]) -> leansam.SamPredictor:
    p = leansam.SamPredictor(model)
    p.set_image(case["image"])
    return p


# --- registry, key layout, parameter count ------------------------------------------------------
@pytest.mark.parametrize("model_name", NAMES)
def test_exact_parameter_count_and_official_key_layout(model_name: str) -> None:
    info = get_model_info(model_name)
    with torch.device("meta"):
        m = info.build()
    assert sum(p.numel() for p in m.parameters()) == info.n_params
    keys = P.manifest(model_name)["keys"]
    # nn.Parameters = every float tensor of the official state_dict except the PE buffer.
    n_floats = sum(int(np.prod(s)) for _, s, _ in keys)
    assert info.n_params == n_floats - 256 == P.meta(model_name)["n_params"] - 256
    # Every official key, renamed by the filter, with its exact shape, and nothing else.
    mapped, set_aside = filter_fn({k: torch.empty(s, device="meta") for k, s, _ in keys})
    assert set_aside == []
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected_shapes(info)
    # A state_dict already in leansam's layout passes through unchanged.
    again, _ = filter_fn(mapped)
    assert list(again) == list(mapped)


@pytest.mark.parametrize("model_name", NAMES)
def test_registry_entry(model_name: str) -> None:
    info = get_model_info(model_name)
    official = P.manifest(model_name)["official"]
    assert info.family == "efficientsam"
    assert info.weights.license == "Apache-2.0"
    assert info.weights.wrappers == ("model",)
    assert info.weights.file_name == official["checkpoint_file"]
    assert info.weights.url.startswith("https://github.com/yformer/EfficientSAM/raw/main/weights/")
    assert (
        info.transform.resize == "square" and info.transform.upsample == "bicubic" and not info.transform.crop
    )
    assert info.prompt_style.box_first and info.prompt_style.pad == "fixed" and info.prompt_style.pad_to == 6


def test_unknown_key_is_reported_not_dropped() -> None:
    info = get_model_info(NAMES[0])
    state = {k: torch.zeros(s) for k, s, _ in P.manifest(NAMES[0])["keys"] if "blocks" not in k}
    state["mask_decoder.some_new_head.weight"] = torch.zeros(1)
    with torch.device("meta"):
        m = info.build()
    with pytest.raises(CheckpointError, match="some_new_head"):
        load_checkpoint(m, info, state)


# --- parity --------------------------------------------------------------------------------------
def test_embedding_matches_fixture(model: leansam.Sam, case: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        emb = model.image_encoder(P.encoder_input(case))
    assert emb.shape == (1, 256, 64, 64)
    T.check_floats(f"fixture/{model.name}/embedding", emb, case["embedding"])


# --- EfficientSAM prompt conventions --------------------------------------------------------------
def test_prompt_layout_box_first_padded_to_six_in_frame(model: leansam.Sam) -> None:
    size = (480, 640)
    coords, labels = model.prepare_prompts(
        torch.tensor([[[320.0, 240.0]]]), torch.tensor([[1]]), torch.tensor([[64.0, 48.0, 128.0, 96.0]]), size
    )
    assert labels.tolist() == [[2, 3, 1, -1, -1, -1]]
    expected = [[102.4, 102.4], [204.8, 204.8], [512.0, 512.0]] + [[-1.0, -1.0]] * 3
    torch.testing.assert_close(coords[0], torch.tensor(expected))  # padding is -1 in the 1024 frame


def test_mask_prompt_is_refused(predictor: leansam.SamPredictor, case: dict) -> None:
    with pytest.raises(ValueError, match="mask"):
        predictor.predict(**P.case_prompts(case, "points"), mask_input=np.zeros((1, 256, 256), np.float32))


def test_many_prompts_in_one_call_match_one_by_one(predictor: leansam.SamPredictor) -> None:
    model, feats, size = predictor.model, predictor.features, predictor.original_size
    rng = np.random.default_rng(2)
    coords = torch.from_numpy(rng.uniform(20, 460, (3, 2, 2)).astype(np.float32))
    labels = torch.tensor([[1, 0]] * 3)
    with torch.no_grad():
        low, iou, _ = model.decode(feats, model.prepare_prompts(coords, labels, None, size), None, False)
        for i in range(3):
            li, si, _ = model.decode(
                feats, model.prepare_prompts(coords[i : i + 1], labels[:1], None, size), None, False
            )
            assert (low[i] - li[0]).abs().max().item() <= 1e-4
            assert (iou[i] - si[0]).abs().max().item() <= 1e-5
