"""AutomaticMaskGenerator on fast models: parity with segment_anything's generator on a
scripted model and on a small real network, strategies, options and input validation.

The full-size SAM ViT-B comparison is in ``test_parity_vit_b.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import leansam
from leansam.everything import AutomaticMaskGenerator, HierarchicalSampler, PromptSampler, load_boxes, ops
from leansam.models.fast import FastDecoder
from tests import oracles
from tests.everything.models import RegionSam, rectangles_image, scripted_official, tiny_pair
from tests.everything.reference import official_hierarchical, tinysam_dense_points

H, W = 192, 256


@pytest.fixture(scope="module")
def image():
    return rectangles_image(H, W)


def official_records(model, image, **opts):
    sa = oracles.segment_anything()
    return sa.SamAutomaticMaskGenerator(model, **opts).generate(image)


def assert_same_records(mine, ref, score_tol=1e-6):
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref):
        assert set(a) == set(b)
        if isinstance(b["segmentation"], np.ndarray):
            assert a["segmentation"].dtype == bool and np.array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"]
        for key in ("area", "bbox", "crop_box", "point_coords"):
            assert a[key] == b[key], key
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= score_tol
        assert abs(a["stability_score"] - b["stability_score"]) <= score_tol


def check_records_consistent(records, size):
    for r in records:
        m = r["segmentation"]
        assert m.shape == size and m.dtype == bool
        assert r["area"] == int(m.sum()) > 0
        ys, xs = np.nonzero(m)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


# --- parity with segment_anything on the scripted model ------------------------------------------

PARITY_CASES = {
    "defaults": {"points_per_side": 8},
    "crops": {"points_per_side": 8, "crop_n_layers": 1},
    "crops_downscale_small_regions": {
        "points_per_side": 8,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "min_mask_region_area": 400,
    },
    "coco_rle_low_thresholds": {
        "points_per_side": 6,
        "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.8,
        "box_nms_thresh": 0.9,
        "output_mode": "coco_rle",
    },
    "uncompressed_rle_small_batches": {
        "points_per_side": 5,
        "points_per_batch": 7,
        "output_mode": "uncompressed_rle",
    },
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_grid_matches_segment_anything_on_scripted_model(image, case):
    opts = PARITY_CASES[case]
    mine = AutomaticMaskGenerator(RegionSam(), **opts).generate(image)
    ref = official_records(scripted_official(), image, **opts)
    assert len(ref) >= 3
    assert_same_records(mine, ref)


def test_explicit_point_grids_match_segment_anything(image):
    rng = np.random.default_rng(0)
    grids = [rng.uniform(0.02, 0.98, (30, 2)), rng.uniform(0.02, 0.98, (12, 2))]
    opts = {"points_per_side": None, "point_grids": grids, "crop_n_layers": 1}
    mine = AutomaticMaskGenerator(RegionSam(), **opts).generate(image)
    assert_same_records(mine, official_records(scripted_official(), image, **opts))


def test_grid_matches_segment_anything_on_a_small_real_network():
    """Real prompt encoder + mask decoder (small, random, same weights in both), real image."""
    from tests import parity as P

    img = P.load_case("sam_vit_b")["image"][::2, ::2].copy()  # 240 x 320
    mine_model, official = tiny_pair()
    opts = {
        "points_per_side": 6,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,  # random weights give image-wide masks: keep them all
        "output_mode": "uncompressed_rle",
    }
    mine = AutomaticMaskGenerator(mine_model, **opts).generate(img)
    ref = official_records(official, img, **opts)
    assert len(mine) == len(ref) == 6 * 6 * 3
    # Same prompts in the same order; scores agree to float rounding, masks to a few pixels.
    key = lambda r: (tuple(r["point_coords"][0]), round(r["predicted_iou"], 4))  # noqa: E731
    for a, b in zip(sorted(mine, key=key), sorted(ref, key=key)):
        assert a["point_coords"] == b["point_coords"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-4
        assert abs(a["stability_score"] - b["stability_score"]) <= 1e-3
        ma = ops.rle_to_mask(np.array(a["segmentation"]["counts"]), (240, 320))
        mb = ops.rle_to_mask(np.array(b["segmentation"]["counts"]), (240, 320))
        assert (ma & mb).sum() / max(1, (ma | mb).sum()) >= 0.99


def test_prompts_without_a_kept_mask_skip_the_decoders_upscaling(monkeypatch):
    """With an IoU filter, only prompts that keep a mask go through the decoder's upscaling path,
    and the records still match segment_anything's (which upscales every mask)."""
    from tests import parity as P

    img = P.load_case("sam_vit_b")["image"][::2, ::2].copy()  # 240 x 320
    mine_model, official = tiny_pair()
    pts = ops.point_grid(6) * np.array([320, 240])
    with torch.no_grad():
        prompts = mine_model.prepare_prompts(
            torch.as_tensor(pts).float()[:, None], torch.ones(36, 1, dtype=torch.int64), None, (240, 320)
        )
        best = mine_model.decode(mine_model.encode_image(mine_model.preprocess(img)), prompts)[1].amax(1)
    # A threshold halfway between two prompts' best scores near the median: about half the prompts
    # keep no mask, and no score lies within float rounding of the threshold.
    s = best.sort().values
    thresh = float(s[17] + s[18]) / 2
    assert float(s[18] - s[17]) > 1e-4
    upscaled = []
    orig = FastDecoder.masks_from_tokens
    monkeypatch.setattr(
        FastDecoder, "masks_from_tokens", lambda self, t, *a: upscaled.append(len(t.iou)) or orig(self, t, *a)
    )
    opts = {
        "points_per_side": 6,
        "pred_iou_thresh": thresh,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
        "output_mode": "uncompressed_rle",
    }
    gen = AutomaticMaskGenerator(mine_model, **opts)
    mine = gen.generate(img)
    ref = official_records(official, img, **opts)
    assert upscaled == [int((best > thresh).sum())] == [18]
    assert gen.last_stats.prompts_decoded == 36
    assert len(mine) == len(ref) > 0
    key = lambda r: (tuple(r["point_coords"][0]), round(r["predicted_iou"], 4))  # noqa: E731
    for a, b in zip(sorted(mine, key=key), sorted(ref, key=key)):
        assert a["point_coords"] == b["point_coords"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-4
        ma = ops.rle_to_mask(np.array(a["segmentation"]["counts"]), (240, 320))
        mb = ops.rle_to_mask(np.array(b["segmentation"]["counts"]), (240, 320))
        assert (ma & mb).sum() / max(1, (ma | mb).sum()) >= 0.99


# --- efficiency contract -------------------------------------------------------------------------


def test_one_decode_call_per_batch_and_one_encode_per_crop(image):
    model = RegionSam()
    encodes = []
    orig_encode = model.encode_image
    model.encode_image = lambda x: encodes.append(1) or orig_encode(x)
    upscaled = []
    orig_post = model.postprocess_masks
    model.postprocess_masks = lambda low, size: upscaled.append(low.shape[0]) or orig_post(low, size)
    gen = AutomaticMaskGenerator(model, points_per_side=5, points_per_batch=10, crop_n_layers=1)
    gen.generate(image)
    st = gen.last_stats
    assert len(encodes) == st.crops == 5
    assert model.decode_calls == st.batches == 5 * math.ceil(25 / 10)
    assert model.prompts_seen == st.prompts_decoded == 5 * 25
    # Full-size logits exist for at most mask_chunk masks at a time.
    assert max(upscaled) <= gen.mask_chunk
    assert set(st.seconds) == {"encode", "decode", "filter", "nms", "postprocess", "output"}
    assert st.total_seconds >= st.seconds["decode"] > 0


def test_progress_callback_and_tqdm(image):
    calls = []
    gen = AutomaticMaskGenerator(
        RegionSam(), points_per_side=6, points_per_batch=8, progress=lambda d, t: calls.append((d, t))
    )
    gen.generate(image)
    assert calls == [(i, 5) for i in range(1, 6)]
    AutomaticMaskGenerator(RegionSam(), points_per_side=4, progress=True).generate(image)


# --- hierarchical ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(192, 256), (480, 640), (100, 37)])
def test_hierarchical_dense_layout_is_tinysams(size):
    pps = 16
    sparse = ops.point_grid(pps // 4) * np.array([size[1], size[0]])
    nothing = np.zeros((size[1] + 50, size[0] + 50), bool)
    want = tinysam_dense_points(ops.point_grid(pps // 4), size, pps, nothing)
    got = HierarchicalSampler.dense_candidates(sparse, size, pps)
    np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("high", [8.5, 6.0, 100.0])
def test_hierarchical_matches_tinysam_rule(image, high):
    pps = 16
    model = RegionSam()
    gen = AutomaticMaskGenerator(model, "hierarchical", points_per_side=pps, high_score_thresh=high)
    mine = gen.generate(image)
    ref, n_dense, n_sparse = official_hierarchical(scripted_official(), image, pps, high)
    st = gen.last_stats
    assert st.prompts_per_round == {"sparse": n_sparse, "dense": n_dense}
    assert st.prompts_decoded == model.prompts_seen == n_sparse + n_dense
    key = lambda r: (r["predicted_iou"], r["bbox"])  # noqa: E731
    assert len(mine) == len(ref)
    for a, b in zip(sorted(mine, key=key), sorted(ref, key=key)):
        assert np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-6)


def test_hierarchical_decodes_fewer_prompts_than_grid(image):
    pps = 16
    grid = AutomaticMaskGenerator(RegionSam(), points_per_side=pps)
    hier = AutomaticMaskGenerator(RegionSam(), "hierarchical", points_per_side=pps)
    g, h = grid.generate(image), hier.generate(image)
    assert grid.last_stats.prompts_decoded == pps * pps
    assert hier.last_stats.prompts_skipped > 0
    assert hier.last_stats.prompts_decoded < 0.75 * grid.last_stats.prompts_decoded
    # Every object-sized mask of the grid is found by the hierarchical sampler too.
    for r in g:
        if r["area"] < H * W // 2:
            m = r["segmentation"]
            assert max((m & o["segmentation"]).sum() / (m | o["segmentation"]).sum() for o in h) > 0.9


def test_hierarchical_with_crops_runs_per_crop(image):
    gen = AutomaticMaskGenerator(RegionSam(), "hierarchical", points_per_side=8, crop_n_layers=1)
    records = gen.generate(image)
    assert gen.last_stats.crops == 5 and records
    check_records_consistent(records, (H, W))


# --- non-overlapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["grid", "hierarchical", "boxes"])
def test_non_overlapping_gives_each_pixel_at_most_one_mask(image, strategy):
    boxes = np.array([[10, 10, 130, 100], [60, 40, 250, 180], [0, 0, 256, 192]], np.float32)
    # Low thresholds keep the grown masks too, so the plain output overlaps.
    kwargs = (
        {"boxes": boxes}
        if strategy == "boxes"
        else {"points_per_side": 8, "pred_iou_thresh": 0.8, "box_nms_thresh": 0.95}
    )
    plain = AutomaticMaskGenerator(RegionSam(), strategy, **kwargs).generate(image)
    gen = AutomaticMaskGenerator(RegionSam(), strategy, non_overlapping=True, **kwargs)
    records = gen.generate(image)
    assert records
    stack = np.stack([r["segmentation"] for r in records])
    assert stack.sum(0).max() == 1
    assert np.stack([r["segmentation"] for r in plain]).sum(0).max() > 1  # they overlapped before
    check_records_consistent(records, (H, W))
    scores = [r["predicted_iou"] for r in records]
    assert scores == sorted(scores, reverse=True)
    # Every pixel covered before is covered after, by the best-scoring mask that survived NMS.
    union_before = np.stack([r["segmentation"] for r in plain]).any(0)
    assert stack.any(0).sum() <= union_before.sum()


def test_non_overlapping_rle_output_is_consistent(image):
    gen = AutomaticMaskGenerator(RegionSam(), points_per_side=8, non_overlapping=True, output_mode="coco_rle")
    from pycocotools import mask as mask_utils

    records = gen.generate(image)
    masks = np.stack([mask_utils.decode(r["segmentation"]) for r in records]).astype(bool)
    assert masks.sum(0).max() == 1
    assert [r["area"] for r in records] == masks.sum((1, 2)).tolist()


# --- boxes ---------------------------------------------------------------------------------------

BOXES = np.array([[16, 16, 128, 96], [144, 64, 240, 176], [32.5, 112, 111.5, 176]], np.float32)


def test_boxes_strategy_accepts_json_array_tensor_and_callable(image, tmp_path):
    dets = [
        {"image_id": 7, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 0.9}
        for x0, y0, x1, y1 in BOXES.tolist()
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    results = []
    for source in (str(path), path, BOXES, torch.from_numpy(BOXES), BOXES.tolist(), lambda img: BOXES):
        model = RegionSam()
        gen = AutomaticMaskGenerator(model, "boxes", boxes=source)
        results.append(gen.generate(image))
        assert model.decode_calls == 1 and gen.last_stats.prompts_decoded == 3
    for r in results[1:]:
        assert_same_records(r, results[0])
    records = results[0]
    assert len(records) == 3
    for r in records:
        x, y, w, h = r["prompt_box"]
        # The scripted decoder answers a box with its rectangle (pixel centres inside the box).
        ys, xs = np.nonzero(r["segmentation"])
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        assert r["point_coords"] == [[x + w / 2, y + h / 2]]
    # Boxes given to generate() override the constructor's; batches of box_batch_size.
    model = RegionSam()
    gen = AutomaticMaskGenerator(model, "boxes", box_batch_size=2)
    assert len(gen.generate(image, boxes=BOXES)) == 3 and model.decode_calls == 2


def test_boxes_strategy_on_a_real_network_decodes_once():
    mine, _ = tiny_pair()
    calls = []
    orig = mine.decode
    mine.decode = lambda *a, **k: calls.append(a[1][0].shape) or orig(*a, **k)
    img = rectangles_image(H, W)
    boxes = np.tile(BOXES, (110, 1))  # 330 boxes: 320 + 10
    gen = AutomaticMaskGenerator(mine, "boxes", boxes=boxes)
    gen.generate(img)
    assert [c[0] for c in calls] == [320, 10]


def test_load_boxes_coco_results_and_dataset_files(tmp_path):
    dets = [
        {"image_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 2, "bbox": [0, 0, 5, 5], "score": 0.8},
        {"image_id": 1, "bbox": [30, 5, 10, 10], "score": 0.2},
    ]
    p = tmp_path / "r.json"
    p.write_text(json.dumps(dets))
    with pytest.raises(ValueError, match="image_id"):
        load_boxes(p, (100, 100))
    got = load_boxes(p, (100, 100), image_id=1)
    assert got.tolist() == [[10, 10, 30, 30], [30, 5, 40, 15]] and got.dtype == torch.float32
    assert load_boxes(p, (100, 100), image_id=1, min_score=0.5).tolist() == [[10, 10, 30, 30]]
    assert load_boxes(p, (100, 100), image_id="2").tolist() == [[0, 0, 5, 5]]
    with pytest.raises(ValueError, match="no boxes for image_id 3"):
        load_boxes(p, (100, 100), image_id=3)
    q = tmp_path / "d.json"
    q.write_text(json.dumps({"images": [], "annotations": [{"bbox": [1, 2, 3, 4]}]}))
    assert load_boxes(q, (100, 100)).tolist() == [[1, 2, 4, 6]]
    # A box sticking out by less than the tolerance is clipped.
    assert load_boxes([[-0.5, 0, 100.5, 50]], (100, 100)).tolist() == [[0, 0, 100, 50]]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[]", "no boxes"),
        ("{not json", "not valid JSON"),
        ('{"foo": 1}', "COCO"),
        ('"text"', "list"),
        ('[{"box": [1, 2, 3, 4]}]', r"\[0\]: missing key 'bbox'"),
        ('[{"bbox": [1, 2, 3]}]', r"\[0\].bbox: expected \[x, y, width, height\], a list of 4"),
        ('[{"bbox": [1, 2, "a", 4]}]', r'\[0\].bbox\[2\]: expected a finite number.*got "a"'),
        ('[{"bbox": [10, 10, 0, 5]}]', "no area"),
        ('[{"bbox": [10, 10, -5, 5]}]', r"\[0\].bbox\[2\]: expected a size >= 0, got -5"),
        ('[{"bbox": [90, 90, 50, 50]}]', "outside"),
        ('[{"bbox": [-40, 10, 20, 20]}]', "outside"),
    ],
)
def test_bad_boxes_files_raise_value_error(tmp_path, content, match):
    p = tmp_path / "b.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_boxes(p, (100, 100))


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (np.zeros((0, 4)), "no boxes"),
        ([], "no boxes"),
        (np.zeros((3, 5)), "N x 4"),
        (np.zeros((2, 2, 4)), "N x 4"),
        ([[0, 0, np.nan, 5]], "finite"),
        ([[0, 0, 5, 5], [50, 50, 500, 60]], "outside"),
        ([[200, 200, 300, 300]], "outside"),
        ([[5, 5, 5, 9]], "no area"),
        ("missing_file.json", "not found"),
        (lambda img: np.zeros((0, 4)), "no boxes"),
    ],
)
def test_bad_box_inputs_raise_value_error(image, source, match):
    with pytest.raises(ValueError, match=match):
        load_boxes(source, (100, 100), image=image)


def test_boxes_strategy_errors(image):
    with pytest.raises(ValueError, match="needs boxes"):
        AutomaticMaskGenerator(RegionSam(), "boxes").generate(image)
    with pytest.raises(ValueError, match="outside"):
        AutomaticMaskGenerator(RegionSam(), "boxes", boxes=[[0, 0, 400, 50]]).generate(image)
    with pytest.raises(ValueError, match="crop_n_layers"):
        AutomaticMaskGenerator(RegionSam(), "boxes", crop_n_layers=1)
    with pytest.raises(ValueError, match="only used by the boxes strategy"):
        AutomaticMaskGenerator(RegionSam(), points_per_side=4).generate(image, boxes=BOXES)


# --- option validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["grid", "hierarchical", "boxes"])
@pytest.mark.parametrize("pps", [0, -4, 2.5, "8", True])
def test_bad_points_per_side(strategy, pps):
    with pytest.raises(ValueError, match="points_per_side"):
        AutomaticMaskGenerator(RegionSam(), strategy, points_per_side=pps)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "everything"}, "strategy"),
        ({"strategy": 32}, "strategy"),
        ({"output_mode": "png"}, "output_mode"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"box_batch_size": -1}, "box_batch_size"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"crop_n_points_downscale_factor": 0}, "downscale"),
        ({"crop_overlap_ratio": 1.5}, "crop_overlap_ratio"),
        ({"points_per_side": None}, "exactly one"),
        ({"point_grids": [np.zeros((4, 2))]}, "exactly one"),
        ({"points_per_side": None, "point_grids": [np.ones((3, 3))]}, "N x 2"),
        ({"points_per_side": None, "point_grids": [np.full((3, 2), 2.0)]}, r"\[0, 1\]"),
        ({"strategy": "hierarchical", "points_per_side": 3}, ">= 4"),
        ({"min_mask_region_area": -1}, "min_mask_region_area"),
        ({"strategy": "boxes", "points_per_side": None, "point_grids": [np.ones((3, 2)) / 2]}, "point_grids"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a finite number"),
        ({"stability_score_thresh": float("inf")}, "stability_score_thresh must be a finite"),
        ({"box_nms_thresh": float("nan")}, "box_nms_thresh must be a finite"),
        (
            {"strategy": "hierarchical", "high_score_thresh": float("nan")},
            "high_score_thresh must be a finite",
        ),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator(RegionSam(), **kwargs)
    # The same check without a model (the CLI runs it before loading one).
    strategy = kwargs.pop("strategy", "grid")
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator.check_options(strategy, **kwargs)


def test_check_options_accepts_good_options():
    AutomaticMaskGenerator.check_options("hierarchical", points_per_side=8, pred_iou_thresh=0.5)
    AutomaticMaskGenerator.check_options("boxes", points_per_side=None, boxes=np.array([[0, 0, 4, 4]]))


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8)]
)
def test_bad_images_raise_value_error(bad):
    with pytest.raises(ValueError, match="image"):
        AutomaticMaskGenerator(RegionSam(), points_per_side=4).generate(bad)


def test_custom_sampler_and_public_exports(image):
    from leansam.everything import PromptRound

    class Diagonal:
        name = "diagonal"
        supports_crops = True

        def rounds(self, crop_size, layer):
            h, w = crop_size
            t = np.linspace(0.1, 0.9, 9)
            return [PromptRound("diagonal", points=np.stack([t * w, t * h], 1))]

    assert isinstance(Diagonal(), PromptSampler)
    gen = leansam.AutomaticMaskGenerator(RegionSam(), Diagonal())
    records = gen.generate(image)
    assert gen.last_stats.prompts_per_round == {"diagonal": 9} and records


def test_empty_result_when_nothing_passes(image):
    gen = AutomaticMaskGenerator(RegionSam(), points_per_side=4, pred_iou_thresh=0.99)
    assert gen.generate(image) == []
    assert gen.last_stats.masks_out == 0
