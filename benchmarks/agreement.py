"""Agreement of two segment-everything outputs (leansam's and the official generator's records).

Used by the segment-everything benchmark to show that a speed comparison compares the same work.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rle_runs(mask: np.ndarray) -> int:
    """Runs in the column-major RLE of one H x W bool mask (what both generators store per mask)."""
    flat = mask.T.ravel()
    return 1 + int(np.count_nonzero(flat[1:] != flat[:-1]))


def compare_records(
    mine: list[dict[str, Any]],
    ref: list[dict[str, Any]],
    thresholds: dict[str, Any] | None = None,
    near: float = 1e-3,
) -> dict[str, Any]:
    """Agreement of two lists of segment_anything records with ``binary_mask`` segmentations.

    Masks are paired by prompt point (``point_coords``, to 1e-3 pixel), then by the closest
    predicted IoU (a click gives up to 3 masks). Returns the counts, how many were paired, the
    pairs' mask IoU (min, mean, how many >= 0.99), the largest predicted-IoU / stability / bbox
    differences, the mean RLE run count of the first 20 masks, and (given ``thresholds`` with
    ``pred_iou_thresh`` and ``stability_score_thresh``) how many of ``mine`` lie within ``near`` of
    a threshold, where float rounding may flip a keep/drop decision.
    """
    free: dict[tuple[float, ...], list[int]] = {}
    for j, r in enumerate(ref):
        free.setdefault(tuple(np.round(r["point_coords"][0], 3)), []).append(j)
    ious, d_iou, d_stab, d_box = [], [], [], []
    for a in mine:
        cands = free.get(tuple(np.round(a["point_coords"][0], 3)), [])
        if not cands:
            continue
        j = min(cands, key=lambda j: abs(ref[j]["predicted_iou"] - a["predicted_iou"]))
        cands.remove(j)
        b = ref[j]
        ma, mb = a["segmentation"], b["segmentation"]
        ious.append(float((ma & mb).sum() / max(1, (ma | mb).sum())))
        d_iou.append(abs(a["predicted_iou"] - b["predicted_iou"]))
        d_stab.append(abs(a["stability_score"] - b["stability_score"]))
        d_box.append(float(np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max()))
    out: dict[str, Any] = {
        "leansam_masks": len(mine),
        "official_masks": len(ref),
        "matched": len(ious),
        "unmatched_leansam": len(mine) - len(ious),
        "unmatched_official": len(ref) - len(ious),
        "matched_iou_min": min(ious) if ious else None,
        "matched_iou_mean": float(np.mean(ious)) if ious else None,
        "matched_iou_ge_099": int(sum(i >= 0.99 for i in ious)),
        "max_abs_predicted_iou_diff": max(d_iou) if d_iou else None,
        "max_abs_stability_diff": max(d_stab) if d_stab else None,
        "max_bbox_diff_px": max(d_box) if d_box else None,
        "mean_rle_runs_per_mask": float(np.mean([rle_runs(r["segmentation"]) for r in mine[:20]]))
        if mine
        else None,
    }
    if thresholds is not None:
        out["leansam_masks_near_a_threshold"] = int(
            sum(
                abs(a["predicted_iou"] - thresholds["pred_iou_thresh"]) < near
                or abs(a["stability_score"] - thresholds["stability_score_thresh"]) < near
                for a in mine
            )
        )
    return out
