"""SAM ViT-B against the official ``segment_anything`` package run live on the same weights (fp32).

Strict loading, parameter counts and predictor parity with the stored fixture (ViT-B/L/H) are in
test_registry_parity.py; this file keeps the embedding and the live-oracle checks. The live
predictor checks give both predictors one image embedding (leansam's encoder, run once): the
encoders are compared on their own (against the official encoder live in the slow suite only:
it is the costliest step of this file).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import leansam
from tests import oracles
from tests import parity as P
from tests import tolerances as T

NAME = "sam_vit_b"


@pytest.fixture(scope="module")
def model(sam_vit_b_ckpt):
    return leansam.build_model(NAME, checkpoint=sam_vit_b_ckpt)


@pytest.fixture(scope="module")
def case():
    return P.load_case(NAME)


def test_embedding_matches_fixture(model, case):
    with torch.no_grad():
        mine = model.image_encoder(P.encoder_input(case))
    T.check_floats(f"fixture/{NAME}/embedding", mine, case["embedding"])


@pytest.mark.slow
def test_embedding_matches_official_fp32(model, sam_vit_b_ckpt, case):
    official = oracles.segment_anything().sam_model_registry["vit_b"](checkpoint=str(sam_vit_b_ckpt)).eval()
    x = P.encoder_input(case)
    with torch.no_grad():
        mine, ref = model.image_encoder(x), official.image_encoder(x)
    T.check_floats(f"live/{NAME}/embedding", mine, ref.numpy())


@pytest.fixture(scope="module")
def predictors(sam_vit_b_ckpt, case, sam_vit_b_encoded):
    """leansam's and the official predictor on one image, sharing leansam's image embedding (computed
    once per session by the ``sam_vit_b_encoded`` fixture)."""
    sa = oracles.segment_anything()
    mine_model = leansam.build_model(NAME, checkpoint=sam_vit_b_ckpt)
    official = sa.sam_model_registry["vit_b"](checkpoint=str(sam_vit_b_ckpt)).eval()
    cache = oracles.share_encoder(mine_model, official, seed=sam_vit_b_encoded)
    mine = leansam.SamPredictor(mine_model)
    mine.set_image(case["image"])
    ref = sa.SamPredictor(official)
    ref.set_image(case["image"])
    assert len(cache) == 1 and max(cache[0][2]) <= 1e-4  # the seeded embedding served both: inputs agree
    return mine, ref


@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
@pytest.mark.parametrize("multimask", [True, False])
def test_predictor_matches_official_fp32(predictors, case, prompt_set, multimask):
    mine, ref = predictors
    kwargs = P.case_prompts(case, prompt_set)
    m1, s1, l1 = mine.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = ref.predict(**kwargs, multimask_output=multimask)
    T.check_prediction(
        f"live/{NAME}/{prompt_set}/{'multi' if multimask else 'single'}", (m1, s1, l1), (m2, s2, l2)
    )


def test_mask_input_round_trip_matches_official(predictors, case):
    mine, ref = predictors
    kwargs = P.case_prompts(case, "points")
    _, _, low = ref.predict(**kwargs, multimask_output=True)
    prev = low[:1]
    m1, s1, l1 = mine.predict(**kwargs, mask_input=prev, multimask_output=False)
    m2, s2, l2 = ref.predict(**kwargs, mask_input=prev, multimask_output=False)
    T.check_prediction(f"live/{NAME}/points+mask/single", (m1, s1, l1), (m2, s2, l2))


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
    one_by_one = [ref.predict(box=box, multimask_output=False) for box in boxes]
    expected = tuple(np.stack([r[i] for r in one_by_one]) for i in range(3))
    T.check_prediction(f"live/{NAME}/12 boxes/single", (masks.numpy(), iou.numpy(), low.numpy()), expected)


def test_predict_torch_frame_coords_like_segment_anything(predictors, case):
    """segment_anything's predict_torch takes prompts already mapped with predictor.transform."""
    mine, ref = predictors
    box = torch.tensor([[120.0, 80.0, 330.0, 260.0]])
    size = case["image"].shape[:2]
    m1, s1, _ = mine.predict_torch(None, None, mine.transform.apply_boxes_torch(box, size))
    m2, s2, _ = ref.predict_torch(None, None, ref.transform.apply_boxes_torch(box, size))
    T.check_floats(f"live/{NAME}/frame box/multi/iou", s1, s2.numpy())
    T.check_masks(f"live/{NAME}/frame box/multi/masks", m1.numpy(), m2.numpy())
