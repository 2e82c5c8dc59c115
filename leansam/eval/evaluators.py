"""Evaluators in detectron2's ``reset / process / evaluate`` shape.

They know nothing about models, data loading or training: ``process`` receives what the
caller computed for a batch of images, ``evaluate`` returns a flat dict of metrics.

* :class:`MaskIoUEvaluator` — mIoU of masks predicted from ground-truth prompts, overall and
  per COCO area range (small < 32², medium 32²..96², large >= 96², by the annotation's ``area``).
* :class:`COCOInstanceEvaluator` — COCO instance-segmentation AP of scored masks with
  pycocotools' ``COCOeval`` (``iouType="segm"``); AP values in percent like detectron2.

Both keep per-image rows that are plain JSON (``image_rows`` / ``add_image_rows``), so a
runner can cache them on disk, resume, and merge shards exactly: the metrics depend only on
the set of rows (sums use ``math.fsum`` over rows sorted by image id). When
``torch.distributed`` is initialised with more than one process, ``evaluate`` gathers every
process's rows first (``distributed=True``, the default) and all processes return the same dict.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..data.coco import encode_mask, mask_bbox

#: COCO area ranges in pixels: [lo, hi).
AREA_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, math.inf),
}


def area_range(area: float) -> str:
    """``small`` (area < 32²), ``medium`` (32² <= area < 96²) or ``large`` (>= 96²)."""
    for name, (lo, hi) in AREA_RANGES.items():
        if lo <= area < hi:
            return name
    raise ValueError(f"invalid area {area!r}")


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of N predicted vs N ground-truth masks (N x H x W bool each) -> N float64.

    A pair of empty masks has IoU 1 (both agree there is nothing).
    """
    pred = np.asarray(pred, dtype=bool).reshape(len(pred), -1)
    gt = np.asarray(gt, dtype=bool).reshape(len(gt), -1)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    inter = np.count_nonzero(pred & gt, axis=1).astype(np.float64)
    union = np.count_nonzero(pred | gt, axis=1).astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)


class DatasetEvaluator(Protocol):
    """detectron2's evaluator interface."""

    def reset(self) -> None: ...

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


def _gather_rows(rows: dict[int, list[dict]], distributed: bool) -> dict[int, list[dict]]:
    """Every process's rows, merged (all processes get the same dict)."""
    if not distributed:
        return rows
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return rows
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    merged: dict[int, list[dict]] = {}
    for part in parts:
        for k, v in part.items():
            merged.setdefault(int(k), v)
    return merged


class _RowEvaluator:
    """Per-image JSON rows, plus the reset / add / gather plumbing shared by the evaluators."""

    def __init__(self, distributed: bool = True) -> None:
        self.distributed = distributed
        self._rows: dict[int, list[dict]] = {}

    def reset(self) -> None:
        self._rows = {}

    def image_rows(self, image_id: int) -> list[dict]:
        """The JSON rows ``process`` computed for one image."""
        return self._rows[int(image_id)]

    def add_image_rows(self, image_id: int, rows: list[dict]) -> None:
        """Adds rows computed earlier (e.g. read back from a cache) for one image."""
        self._rows[int(image_id)] = list(rows)

    @property
    def image_ids(self) -> list[int]:
        return sorted(self._rows)


class MaskIoUEvaluator(_RowEvaluator):
    """mIoU of predicted masks against the ground-truth masks their prompts came from.

    ``process(inputs, outputs)``, per image:

    * ``inputs[i]``: ``{"image_id": int, "gt_masks": N x H x W bool, "areas": N,
      "ann_ids": N, "category_ids": N}`` (``areas``: the annotations' ``area``).
    * ``outputs[i]``: ``{"masks": N x H x W bool}`` in the same instance order.

    ``evaluate()`` -> ``{"mIoU", "mIoU_small", "mIoU_medium", "mIoU_large"}`` in percent (None
    for a range without instances) and ``{"n", "n_small", ...}`` instance counts.
    """

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            gt = np.asarray(inp["gt_masks"], dtype=bool)
            pred = np.asarray(out["masks"], dtype=bool)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"image {inp['image_id']}: predicted masks {pred.shape} do not match ground truth {gt.shape}"
                )
            ious = mask_iou(pred, gt) if len(gt) else np.zeros(0)
            n = len(gt)
            areas = np.asarray(inp.get("areas", gt.reshape(n, -1).sum(1)), dtype=np.float64)
            ann_ids = inp.get("ann_ids", list(range(n)))
            cats = inp.get("category_ids", [0] * n)
            self._rows[int(inp["image_id"])] = [
                {
                    "ann_id": int(a),
                    "category_id": int(c),
                    "area": float(ar),
                    "range": area_range(float(ar)),
                    "iou": float(iou),
                }
                for a, c, ar, iou in zip(ann_ids, cats, areas, ious)
            ]

    def evaluate(self) -> dict[str, Any]:
        rows = _gather_rows(self._rows, self.distributed)
        flat = [r for k in sorted(rows) for r in rows[k]]
        out: dict[str, Any] = {"mIoU": _mean_pct([r["iou"] for r in flat]), "n": len(flat)}
        for name in AREA_RANGES:
            vals = [r["iou"] for r in flat if r["range"] == name]
            out[f"mIoU_{name}"] = _mean_pct(vals)
            out[f"n_{name}"] = len(vals)
        out["n_images"] = len(rows)
        return out


def _mean_pct(values: list[float]) -> float | None:
    """100 x the exact (order-independent, ``math.fsum``) mean; None when empty."""
    return 100.0 * math.fsum(values) / len(values) if values else None


#: Names of ``COCOeval.stats[0:6]`` for segmentation.
AP_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class COCOInstanceEvaluator(_RowEvaluator):
    """COCO instance-segmentation AP of scored masks, with pycocotools' ``COCOeval``.

    Args:
        coco_gt: the ground truth, a ``pycocotools.coco.COCO`` or a COCO instances dict
            (LVIS files in COCO layout work; missing ``iscrowd`` is taken as 0).
        distributed: gather rows across processes in ``evaluate``.

    ``process(inputs, outputs)``, per image:

    * ``inputs[i]``: ``{"image_id": int}``.
    * ``outputs[i]``: ``{"masks": N x H x W bool, "scores": N, "category_ids": N}``.

    ``evaluate()`` runs ``COCOeval(gt, results, "segm")`` restricted to the processed images
    (``params.imgIds``: a partial run is scored on the images it saw) and returns ``AP``, ``AP50``,
    ``AP75``, ``APs``, ``APm``, ``APl`` in percent (None where COCOeval reports -1, i.e. no
    ground truth in that range), ``n_detections``, ``n_images`` and COCOeval's printed ``summary``.
    """

    def __init__(self, coco_gt: Any, distributed: bool = True) -> None:
        super().__init__(distributed)
        self.coco_gt = _as_coco(coco_gt)

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            image_id = int(inp["image_id"])
            masks = np.asarray(out["masks"], dtype=bool)
            scores = np.asarray(out["scores"], dtype=np.float64).reshape(-1)
            cats = np.asarray(out["category_ids"]).reshape(-1)
            if not (len(masks) == len(scores) == len(cats)):
                raise ValueError(
                    f"image {image_id}: {len(masks)} masks, {len(scores)} scores, {len(cats)} category ids"
                )
            self._rows[image_id] = [
                {
                    "image_id": image_id,
                    "category_id": int(c),
                    "segmentation": encode_mask(m),
                    "bbox": mask_bbox(m),
                    "score": float(s),
                }
                for m, s, c in zip(masks, scores, cats)
            ]

    def results(self) -> list[dict]:
        """The COCO results list (``segmentation`` as RLE with str counts), sorted by image id."""
        rows = _gather_rows(self._rows, self.distributed)
        return [r for k in sorted(rows) for r in rows[k]]

    def evaluate(self) -> dict[str, Any]:
        rows = _gather_rows(self._rows, self.distributed)
        results = [r for k in sorted(rows) for r in rows[k]]
        return coco_segm_ap(self.coco_gt, results, sorted(rows))


def _as_coco(gt: Any) -> Any:
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, Mapping):
        return coco_from_dict(gt)
    raise TypeError(f"coco_gt must be a pycocotools COCO or a COCO dict, not {type(gt).__name__}")


def coco_from_dict(data: Mapping[str, Any]) -> Any:
    """A ``pycocotools.coco.COCO`` from an in-memory COCO dict, without printing.

    Annotations missing ``iscrowd`` (LVIS) get ``iscrowd = 0``, which COCOeval requires.
    """
    from pycocotools.coco import COCO

    data = dict(data)
    anns = data.get("annotations", [])
    if any("iscrowd" not in a for a in anns):
        data["annotations"] = [a if "iscrowd" in a else {**a, "iscrowd": 0} for a in anns]
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_segm_ap(coco_gt: Any, results: list[dict], image_ids: list[int]) -> dict[str, Any]:
    """COCOeval (segm) of ``results`` on ``image_ids``; see :class:`COCOInstanceEvaluator`."""
    from pycocotools.cocoeval import COCOeval

    coco_gt = _as_coco(coco_gt)
    out: dict[str, Any] = {"n_detections": len(results), "n_images": len(image_ids)}
    if not results or not image_ids:
        # pycocotools cannot load an empty result list; no detections means AP 0 where GT exists.
        out.update(dict.fromkeys(AP_NAMES, 0.0))
        out["summary"] = "no detections"
        return out
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, dt, "segm")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, v in zip(AP_NAMES, ev.stats[:6]):
        out[name] = None if v < 0 else 100.0 * float(v)
    out["summary"] = "\n".join(ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("Average"))
    return out
