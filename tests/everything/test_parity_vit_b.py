"""``grid`` on the SAM ViT-B stand-in checkpoint vs the official ``SamAutomaticMaskGenerator``.

Both generators see the same image embedding: leansam's ViT-B encoder runs once per crop (its
parity with the official encoder is tested in ``tests/models/test_sam_vit.py``; the full image's
embedding comes from the session fixture ``sam_vit_b_encoded``) and a shared cache answers the
second request. What
is compared here is everything after the encoder: prompt layout, batched decoding,
upscaling, IoU / stability filtering, boxes, edge filtering, NMS, RLE and records.

Random stand-in weights give soft, image-wide masks (logits within about +-1.2, every
box the whole image), so the options are chosen for them: stability offset 0.1 and
thresholds that keep some masks and drop others, with a margin of > 1e-3 to every threshold
(checked on this fixture), and box NMS at 1.0 so the near-identical boxes do not
collapse to one mask. NMS itself is compared on the scripted model in
``test_generator.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import leansam
from leansam.everything import AutomaticMaskGenerator
from tests import oracles
from tests import parity as P
from tests.everything.reference import official_hierarchical

NAME = "sam_vit_b"
OPTS = {
    "points_per_side": 10,
    "pred_iou_thresh": 0.05,
    "stability_score_thresh": 0.5,
    "stability_score_offset": 0.1,
    "box_nms_thresh": 1.0,
}
#: The default suite's grid: 49 prompts in two batches (fewer official decoder runs than OPTS);
#: 17 masks kept, margins 2.8e-3 (IoU) and 1.7e-3 (stability) to the thresholds on this fixture.
GRID = {**OPTS, "points_per_side": 7, "points_per_batch": 25, "stability_score_thresh": 0.45}


@pytest.fixture(scope="module")
def models(sam_vit_b_ckpt, sam_vit_b_encoded):
    mine = leansam.build_model(NAME, checkpoint=sam_vit_b_ckpt)
    official = oracles.segment_anything().sam_model_registry["vit_b"](checkpoint=str(sam_vit_b_ckpt)).eval()
    cache = oracles.share_encoder(mine, official, seed=sam_vit_b_encoded)
    return mine, official, cache


@pytest.fixture(scope="module")
def image():
    return P.load_case(NAME)["image"]


def run_both(models, image, **opts):
    mine_model, official, _ = models
    gen = AutomaticMaskGenerator(mine_model, **opts)
    mine = gen.generate(image)
    ref = oracles.segment_anything().SamAutomaticMaskGenerator(official, **opts).generate(image)
    return mine, ref, gen.last_stats


def assert_same_mask_set(mine, ref):
    """Same count; each mask matched (same prompt, closest score) with IoU >= 0.99, scores within 1e-3."""
    assert len(mine) == len(ref)
    free = list(range(len(ref)))
    for a in mine:
        cands = [j for j in free if np.allclose(ref[j]["point_coords"], a["point_coords"], atol=1e-6)]
        assert cands, f"no official mask for prompt {a['point_coords']}"
        j = min(cands, key=lambda j: abs(ref[j]["predicted_iou"] - a["predicted_iou"]))
        free.remove(j)
        b = ref[j]
        ma, mb = a["segmentation"], b["segmentation"]
        assert (ma & mb).sum() / max(1, (ma | mb).sum()) >= 0.99
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
        assert abs(a["stability_score"] - b["stability_score"]) <= 1e-3
        assert a["crop_box"] == b["crop_box"]
        assert np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max() <= 2
        assert abs(a["area"] - b["area"]) <= 0.01 * b["area"]


@pytest.fixture(scope="module")
def grid_runs(models, image):
    return run_both(models, image, **GRID)


def test_grid_matches_official_generator(grid_runs):
    mine, ref, _ = grid_runs
    assert 10 <= len(ref) <= 40  # some, not all, masks survive the chosen thresholds
    assert_same_mask_set(mine, ref)


def test_grid_records_have_segment_anything_format(grid_runs, image):
    mine, ref, stats = grid_runs
    assert [sorted(r) for r in mine] == [sorted(r) for r in ref]
    for a in mine:
        assert a["segmentation"].shape == image.shape[:2] and a["segmentation"].dtype == bool
        assert isinstance(a["area"], int) and all(isinstance(v, int) for v in a["bbox"] + a["crop_box"])
    assert stats.prompts_decoded == 49 and stats.batches == 2 and stats.crops == 1


def test_encoder_ran_once_and_inputs_agree(grid_runs, models):
    _, _, cache = models
    assert len(cache) == 1  # one crop, one encoder call for both generators
    assert max(cache[0][2]) <= 1e-4  # the two preprocessings agree


@pytest.mark.slow
def test_grid_with_one_crop_layer_matches_official_generator(models, image):
    opts = {**OPTS, "points_per_side": 8, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2}
    opts["crop_nms_thresh"] = 1.0
    mine, ref, stats = run_both(models, image, **opts)
    assert stats.crops == 5 and stats.prompts_decoded == 64 + 4 * 16
    assert len(ref) >= 10
    assert_same_mask_set(mine, ref)


@pytest.mark.slow
def test_hierarchical_matches_tinysam_rule_on_official_predictor(models, image):
    mine_model, official, _ = models
    opts = {k: v for k, v in OPTS.items() if k != "points_per_side"}
    high = 0.6  # stand-in logits stay below TinySAM's 8.5; 0.6 makes confident regions exist
    gen = AutomaticMaskGenerator(
        mine_model, "hierarchical", points_per_side=12, high_score_thresh=high, **opts
    )
    mine = gen.generate(image)
    ref, n_dense, n_sparse = official_hierarchical(official, image, 12, high, **opts)
    assert gen.last_stats.prompts_per_round == {"sparse": n_sparse, "dense": n_dense}
    assert gen.last_stats.prompts_skipped > 0
    assert_same_mask_set(mine, ref)
