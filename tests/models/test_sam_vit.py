"""SAM ViT-B/L/H: strict loading of official-format checkpoints and parity with the official code.

Two references: the stored fixture (official outputs on stand-in weights, fp16)
and the official ``segment_anything`` package run live on the same weights (fp32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import leansam
from leansam.checkpoints import expected_shapes
from leansam.registry import get_model_info
from tests import oracles
from tests import parity as P

NAME = "sam_vit_b"


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return P.write_stand_in_checkpoint(NAME, tmp_path_factory.mktemp("ckpt") / "sam_vit_b_01ec64.pth")


@pytest.fixture(scope="module")
def model(ckpt_path):
    return leansam.build_model(NAME, checkpoint=ckpt_path)


@pytest.fixture(scope="module")
def case():
    return P.load_case(NAME)


@pytest.fixture(scope="module")
def official(ckpt_path):
    sa = oracles.segment_anything()
    return sa.sam_model_registry["vit_b"](checkpoint=str(ckpt_path)).eval()


@pytest.fixture(scope="module")
def embeddings(model, official, case):
    x = P.encoder_input(case)
    with torch.no_grad():
        return model.image_encoder(x), official.image_encoder(x)


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_exact_parameter_count_and_official_key_layout(name):
    info = get_model_info(name)
    with torch.device("meta"):
        model = info.build()
    assert sum(p.numel() for p in model.parameters()) == info.n_params
    # Every official key with its exact shape, and nothing else (what a strict load checks).
    manifest = {k: tuple(s) for k, s, _ in P.manifest(name)["keys"]}
    assert expected_shapes(info) == manifest


def test_regenerated_checkpoint_is_the_fixture(ckpt_path):
    state = torch.load(ckpt_path, weights_only=True)
    total = sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point())
    assert total == pytest.approx(P.meta(NAME)["state_abs_sum"], rel=1e-12)


def test_strict_load_loads_every_tensor(model, ckpt_path):
    state = torch.load(ckpt_path, weights_only=True)
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_embedding_matches_fixture(embeddings, case):
    mine, _ = embeddings
    P.assert_close_scaled(mine, case["embedding"], tol=1e-4, what="embedding vs fixture")


def test_embedding_matches_official_fp32(embeddings):
    mine, ref = embeddings
    assert (mine - ref).abs().max().item() <= 1e-4


@pytest.fixture(scope="module")
def predictors(model, official, case):
    sa = oracles.segment_anything()
    mine = leansam.SamPredictor(model)
    mine.set_image(case["image"])
    ref = sa.SamPredictor(official)
    ref.set_image(case["image"])
    return mine, ref


@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
def test_predictor_matches_fixture(predictors, case, prompt_set):
    mine, _ = predictors
    masks, iou, low = mine.predict(**P.case_prompts(case, prompt_set), multimask_output=True)
    P.assert_close_scaled(low, case[f"{prompt_set}_low_res_logits"], tol=1e-3, what="low-res logits")
    assert np.abs(iou - case[f"{prompt_set}_iou"]).max() <= 1e-4
    ref_masks = P.case_masks(case, prompt_set)
    assert masks.shape == ref_masks.shape and masks.dtype == bool
    assert (masks != ref_masks).mean() <= 1e-3


@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
@pytest.mark.parametrize("multimask", [True, False])
def test_predictor_matches_official_fp32(predictors, case, prompt_set, multimask):
    mine, ref = predictors
    kwargs = P.case_prompts(case, prompt_set)
    m1, s1, l1 = mine.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = ref.predict(**kwargs, multimask_output=multimask)
    assert np.abs(l1 - l2).max() <= 1e-3
    assert np.abs(s1 - s2).max() <= 1e-4
    assert (m1 != m2).mean() <= 1e-3


def test_mask_input_round_trip_matches_official(predictors, case):
    mine, ref = predictors
    kwargs = P.case_prompts(case, "points")
    _, _, low = ref.predict(**kwargs, multimask_output=True)
    prev = low[:1]
    m1, s1, l1 = mine.predict(**kwargs, mask_input=prev, multimask_output=False)
    m2, s2, l2 = ref.predict(**kwargs, mask_input=prev, multimask_output=False)
    assert np.abs(l1 - l2).max() <= 1e-3
    assert np.abs(s1 - s2).max() <= 1e-4
    assert (m1 != m2).mean() <= 1e-3


def test_many_boxes_in_one_call_match_official_one_by_one(predictors, case):
    mine, ref = predictors
    rng = np.random.default_rng(1)
    h, w = case["image"].shape[:2]
    x0 = rng.uniform(0, w - 60, 12)
    y0 = rng.uniform(0, h - 60, 12)
    boxes = np.stack([x0, y0, x0 + rng.uniform(20, 60, 12), y0 + rng.uniform(20, 60, 12)], 1).astype(
        np.float32
    )
    masks, iou, low = mine.predict_torch(
        None, None, torch.from_numpy(boxes), multimask_output=False, original_coords=True
    )
    assert masks.shape == (12, 1, h, w)
    for i, box in enumerate(boxes):
        m2, s2, l2 = ref.predict(box=box, multimask_output=False)
        assert np.abs(low[i].numpy() - l2).max() <= 1e-3
        assert np.abs(iou[i].numpy() - s2).max() <= 1e-4
        assert (masks[i].numpy() != m2).mean() <= 1e-3


def test_predict_torch_frame_coords_like_segment_anything(predictors, case):
    """segment_anything's predict_torch takes prompts already mapped with predictor.transform."""
    mine, ref = predictors
    box = torch.tensor([[120.0, 80.0, 330.0, 260.0]])
    size = case["image"].shape[:2]
    m1, s1, _ = mine.predict_torch(None, None, mine.transform.apply_boxes_torch(box, size))
    m2, s2, _ = ref.predict_torch(None, None, ref.transform.apply_boxes_torch(box, size))
    assert (s1 - s2).abs().max().item() <= 1e-4
    assert (m1 != m2).float().mean().item() <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam_vit_l", "sam_vit_h"])
def test_strict_load_of_full_size_official_format_file(name, tmp_path):
    path = P.write_stand_in_checkpoint(name, tmp_path / get_model_info(name).weights.file_name)
    model = leansam.build_model(name, checkpoint=path)
    assert sum(p.numel() for p in model.parameters()) == get_model_info(name).n_params
