"""Unit tests of the vectorised helpers against plain-Python references and segment_anything / pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from leansam.everything import ops
from tests import oracles

# --- references (plain Python, written for the tests) --------------------------------------------


def ref_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, cats, thresh) -> list[int]:
    """Greedy NMS, one box at a time (torchvision semantics; ties keep input order)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # sorted() is stable
    keep: list[int] = []
    for i in order:
        if all(cats[i] != cats[j] or ref_iou(boxes[i], boxes[j]) <= thresh for j in keep):
            keep.append(i)
    return keep


def random_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(1, scale / 3, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


# --- NMS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7])
def test_nms_matches_reference(seed, thresh):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    boxes = random_boxes(rng, n)
    # Quantised scores make ties; a few duplicate boxes make IoU == 1.
    scores = np.round(rng.uniform(0, 1, n), 1)
    boxes[: n // 5] = boxes[0]
    keep = ops.nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), thresh).tolist()
    assert keep == ref_nms(
        boxes.astype(np.float32).tolist(), scores.astype(np.float32).tolist(), [0] * n, thresh
    )


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_per_category_and_across_blocks(seed):
    rng = np.random.default_rng(100 + seed)
    n = 90
    boxes = random_boxes(rng, n, 60.0)
    scores = rng.uniform(0, 1, n)
    cats = rng.integers(0, 3, n)
    want = ref_nms(boxes.tolist(), scores.tolist(), cats.tolist(), 0.4)
    b, s, c = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cats)
    assert ops.batched_nms(b, s, c, 0.4).tolist() == want
    # Small blocks: suppression by boxes kept in earlier blocks must give the same answer.
    assert ops.batched_nms(b, s, c, 0.4, block=7).tolist() == want


def test_nms_agrees_with_the_oracle_stub_and_handles_empty_input():
    rng = np.random.default_rng(7)
    boxes = torch.from_numpy(random_boxes(rng, 50)).float()
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert ops.nms(boxes, scores, 0.5).tolist() == oracles._nms(boxes, scores, 0.5).tolist()
    assert ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_box_iou_matches_reference():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 13), random_boxes(rng, 9)
    got = ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([[ref_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_mask_nms_matches_reference():
    rng = np.random.default_rng(11)
    masks = torch.from_numpy(rng.random((25, 12, 12)) < 0.5)
    masks[5] = masks[2]
    masks[9] = masks[2] | masks[3]
    scores = torch.from_numpy(np.round(rng.random(25), 1))
    m = masks.reshape(25, -1).numpy()

    def miou(i, j):
        u = (m[i] | m[j]).sum()
        return (m[i] & m[j]).sum() / u if u else 0.0

    order = sorted(range(25), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(miou(i, j) <= 0.45 for j in keep):
            keep.append(i)
    assert ops.mask_nms(masks, scores, 0.45).tolist() == keep


# --- boxes, stability, grids, crops --------------------------------------------------------------


def test_masks_to_boxes_matches_segment_anything_and_reference():
    amg = _amg()
    rng = np.random.default_rng(5)
    masks = torch.from_numpy(rng.random((20, 17, 23)) < 0.02)
    masks[0] = False  # empty
    masks[1] = False
    masks[1, 16, 22] = True  # single pixel in the corner
    masks[2] = True
    got = ops.masks_to_boxes(masks)
    assert torch.equal(got, amg.batched_mask_to_box(masks).long())
    for mask, box in zip(masks.numpy(), got.tolist()):
        ys, xs = np.nonzero(mask)
        assert box == ([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])


def test_stability_score_matches_definition_and_segment_anything():
    amg = _amg()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 50, generator=g) * 3
    logits[5] = -10.0  # empty union: 0 here, NaN in segment_anything
    got = ops.stability_score(logits, 0.0, 1.0)
    inter = (logits > 1.0).sum((1, 2)).double()
    union = (logits > -1.0).sum((1, 2)).double()
    np.testing.assert_allclose(got[:5].numpy(), (inter / union)[:5].numpy(), rtol=1e-6)
    ref = amg.calculate_stability_score(logits, 0.0, 1.0)
    np.testing.assert_allclose(got[:5].numpy(), ref[:5].numpy(), rtol=1e-6)
    assert got[5] == 0.0 and torch.isnan(ref[5])


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (333, 333), (50, 1000)])
@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("ratio", [512 / 1500, 0.0, 0.5])
def test_crop_boxes_match_segment_anything(size, layers, ratio):
    assert ops.generate_crop_boxes(size, layers, ratio) == _amg().generate_crop_boxes(size, layers, ratio)


@pytest.mark.parametrize(("n", "layers", "down"), [(32, 0, 1), (16, 2, 2), (7, 1, 3)])
def test_point_grids_match_segment_anything(n, layers, down):
    mine = ops.layer_point_grids(n, layers, down)
    ref = _amg().build_all_layer_point_grids(n, layers, down)
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def test_point_grid_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="positive"):
        ops.point_grid(0)


def test_box_near_crop_edge_matches_segment_anything():
    amg = _amg()
    rng = np.random.default_rng(2)
    xs = np.sort(rng.integers(0, 400, (60, 2)), 1)
    ys = np.sort(rng.integers(0, 300, (60, 2)), 1)
    boxes = torch.from_numpy(np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1))
    for crop in ([0, 0, 400, 300], [100, 50, 300, 250], [0, 120, 210, 300]):
        local = boxes - torch.tensor([crop[0], crop[1], crop[0], crop[1]])
        ref = amg.is_box_near_crop_edge(local, crop, [0, 0, 400, 300])
        assert torch.equal(ops.is_box_near_crop_edge(boxes, crop, [0, 0, 400, 300]), ref)


# --- RLE -----------------------------------------------------------------------------------------


def _random_masks(rng, n, h, w):
    masks = rng.random((n, h, w)) < rng.uniform(0.05, 0.95)
    masks[0] = False
    if n > 1:
        masks[1] = True
    if n > 2:
        masks[2] = False
        masks[2, 0, 0] = masks[2, -1, -1] = True  # first and last pixel
    return masks


@pytest.mark.parametrize("seed", range(8))
def test_rle_round_trip_and_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 40, 2))
    masks = _random_masks(rng, 5, h, w)
    rles = ops.masks_to_rle(torch.from_numpy(masks))
    coco = ops.rles_to_coco(rles, (h, w))
    for m, r, c in zip(masks, rles, coco):
        assert np.array_equal(ops.rle_to_mask(r, (h, w)), m)
        assert ops.rle_area(r) == m.sum()
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert c["counts"] == ref["counts"].decode() and c["size"] == [h, w]
        assert np.array_equal(mask_utils.decode(c).astype(bool), m)
        assert mask_utils.area(c) == m.sum()


@pytest.mark.parametrize("seed", range(8))
def test_rle_of_crop_masks_equals_rle_of_padded_masks(seed):
    """Encoding a crop's masks at an offset == encoding the zero-padded full-size masks."""
    amg = _amg()
    rng = np.random.default_rng(50 + seed)
    big_h, big_w = (int(v) for v in rng.integers(2, 30, 2))
    x0, y0 = int(rng.integers(0, big_w - 1)), int(rng.integers(0, big_h - 1))
    x1, y1 = int(rng.integers(x0 + 1, big_w + 1)), int(rng.integers(y0 + 1, big_h + 1))
    crop = _random_masks(rng, 4, y1 - y0, x1 - x0)
    full = np.zeros((4, big_h, big_w), bool)
    full[:, y0:y1, x0:x1] = crop
    got = ops.masks_to_rle(torch.from_numpy(crop), (x0, y0), (big_h, big_w))
    ref = amg.mask_to_rle_pytorch(torch.from_numpy(full))
    assert [g.tolist() for g in got] == [r["counts"] for r in ref]
    assert ops.rle_to_dict(got[0], (big_h, big_w)) == ref[0]


def test_rle_decode_of_many_masks():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 6, 9, 14)
    back = ops.rles_to_masks(ops.masks_to_rle(torch.from_numpy(masks)), (9, 14))
    assert back.dtype == torch.bool and np.array_equal(back.numpy(), masks)
    assert ops.rles_to_masks([], (9, 14)).shape == (0, 9, 14)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_segment_anything(mode):
    amg = _amg()
    rng = np.random.default_rng(4)
    for _ in range(5):
        mask = rng.random((40, 50)) < 0.45
        for area in (3, 30, 3000):
            got, changed = ops.remove_small_regions(mask, area, mode)
            ref, ref_changed = amg.remove_small_regions(mask, area, mode)
            assert changed == ref_changed and np.array_equal(got, ref)


def _amg():
    oracles.segment_anything()
    from segment_anything.utils import amg

    return amg
