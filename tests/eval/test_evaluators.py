"""The evaluators' metrics equal an independent computation on the same predictions.

* mIoU: a plain numpy IoU per instance, averaged overall and per COCO area range.
* AP: pycocotools' COCOeval run directly on the annotation file and the same results.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from leansam.data.coco import load_coco
from leansam.eval.evaluators import (
    AP_NAMES,
    COCOInstanceEvaluator,
    MaskIoUEvaluator,
    area_range,
    coco_from_dict,
    mask_iou,
)


def perturbed(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask shifted by a few pixels with some pixels flipped: a plausible prediction."""
    dy, dx = rng.integers(-3, 4, size=2)
    out = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
    flip = rng.random(mask.shape) < 0.01
    return out ^ flip


def test_area_ranges_follow_coco():
    assert area_range(0) == "small" and area_range(32**2 - 1) == "small"
    assert area_range(32**2) == "medium" and area_range(96**2 - 0.5) == "medium"
    assert area_range(96**2) == "large"


def test_miou_equals_plain_numpy():
    rng = np.random.default_rng(0)
    ev = MaskIoUEvaluator(distributed=False)
    ev.reset()
    ref_ious, ref_areas = [], []
    for image_id in range(3):
        n = 5
        gt = rng.random((n, 40, 50)) < rng.uniform(0.05, 0.9, size=(n, 1, 1))
        pred = rng.random((n, 40, 50)) < 0.3
        areas = rng.choice([100.0, 2000.0, 20000.0], size=n)
        ev.process(
            [
                {
                    "image_id": image_id,
                    "gt_masks": gt,
                    "areas": areas,
                    "ann_ids": list(range(n)),
                    "category_ids": [1] * n,
                }
            ],
            [{"masks": pred}],
        )
        for g, p in zip(gt, pred):
            ref_ious.append(np.logical_and(g, p).sum() / np.logical_or(g, p).sum())
        ref_areas += list(areas)
    out = ev.evaluate()
    ref_ious, ref_areas = np.array(ref_ious), np.array(ref_areas)
    assert out["n"] == 15
    assert out["mIoU"] == pytest.approx(100 * ref_ious.mean(), rel=1e-12)
    for name, sel in (
        ("small", ref_areas < 32**2),
        ("medium", (ref_areas >= 32**2) & (ref_areas < 96**2)),
        ("large", ref_areas >= 96**2),
    ):
        assert out[f"n_{name}"] == sel.sum()
        assert out[f"mIoU_{name}"] == pytest.approx(100 * ref_ious[sel].mean(), rel=1e-12)


def test_miou_is_independent_of_image_order():
    rng = np.random.default_rng(1)
    data = [(i, rng.random((3, 20, 20)) < 0.5, rng.random((3, 20, 20)) < 0.5) for i in range(6)]
    a, b = MaskIoUEvaluator(False), MaskIoUEvaluator(False)
    for i, g, p in data:
        a.process([{"image_id": i, "gt_masks": g}], [{"masks": p}])
    for i, g, p in reversed(data):
        b.process([{"image_id": i, "gt_masks": g}], [{"masks": p}])
    assert a.evaluate() == b.evaluate()  # exact, not approximate


def test_mask_iou_edge_cases():
    z = np.zeros((1, 4, 4), bool)
    o = np.ones((1, 4, 4), bool)
    np.testing.assert_array_equal(mask_iou(z, z), [1.0])
    np.testing.assert_array_equal(mask_iou(z, o), [0.0])
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))


def test_ap_equals_cocoeval_run_directly(synth_set, tmp_path):
    ann_path = synth_set / "annotations.json"
    ds = load_coco(ann_path)
    rng = np.random.default_rng(0)
    ev = COCOInstanceEvaluator(json.loads(ann_path.read_text()), distributed=False)
    image_ids = ds.image_ids()[:3]  # a partial run: AP on the images it saw
    for image_id in image_ids:
        anns = ds.annotations_for(image_id)
        masks = np.stack([perturbed(ds.mask(a), rng) for a in anns])
        scores = rng.random(len(anns))
        cats = [a.category_id if rng.random() > 0.2 else 1 for a in anns]  # some wrong labels
        ev.process([{"image_id": image_id}], [{"masks": masks, "scores": scores, "category_ids": cats}])
    ours = ev.evaluate()

    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(ev.results()))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        dt = gt.loadRes(str(res_path))
        direct = COCOeval(gt, dt, "segm")
        direct.params.imgIds = image_ids
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    for name, v in zip(AP_NAMES, direct.stats[:6]):
        expected = None if v < 0 else 100 * v
        assert ours[name] == expected, name
    assert 0 < ours["AP"] < 100
    assert ours["n_detections"] == sum(len(ds.annotations_for(i)) for i in image_ids)


def test_coco_from_dict_accepts_lvis_annotations_without_iscrowd(synth_set):
    d = json.loads((synth_set / "annotations.json").read_text())
    for a in d["annotations"]:
        del a["iscrowd"]
    coco = coco_from_dict(d)
    assert all(a["iscrowd"] == 0 for a in coco.dataset["annotations"])


def test_no_detections_gives_zero_ap(synth_set):
    ev = COCOInstanceEvaluator(json.loads((synth_set / "annotations.json").read_text()), distributed=False)
    ev.process([{"image_id": 1}], [{"masks": np.zeros((0, 5, 5), bool), "scores": [], "category_ids": []}])
    assert ev.evaluate()["AP"] == 0.0
