"""benchmarks.agreement: pairing two segment-everything outputs by prompt and score."""

from __future__ import annotations

import numpy as np

from benchmarks.agreement import compare_records, rle_runs


def _record(point, iou, mask):
    ys, xs = np.nonzero(mask)
    return {
        "segmentation": mask,
        "point_coords": [list(point)],
        "predicted_iou": iou,
        "stability_score": 0.9,
        "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())],
    }


def test_compare_records_pairs_by_prompt_and_score():
    a = np.zeros((8, 10), bool)
    a[2:6, 1:5] = True
    b = np.zeros((8, 10), bool)
    b[1:7, 5:9] = True
    c = a.copy()
    c[2:6, 4] = False  # 12 of the 16 pixels
    ref = [_record((1.0, 2.0), 0.9, a), _record((1.0, 2.0), 0.5, b), _record((5.0, 5.0), 0.7, b)]
    same = compare_records(
        [ref[1], ref[0], ref[2]], ref, {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.0}
    )
    assert same["matched"] == 3 and same["matched_iou_min"] == 1.0 and same["matched_iou_ge_099"] == 3
    assert same["leansam_masks_near_a_threshold"] == 1  # predicted IoU 0.5 == pred_iou_thresh
    assert same["mean_rle_runs_per_mask"] == np.mean([rle_runs(b), rle_runs(a), rle_runs(b)])
    # One mask differs; one prompt exists only on the reference side.
    diff = compare_records([_record((1.0, 2.0), 0.9, c), ref[1]], ref)
    assert diff["matched"] == 2 and diff["unmatched_official"] == 1 and diff["unmatched_leansam"] == 0
    assert diff["matched_iou_min"] == 12 / 16 and diff["matched_iou_ge_099"] == 1
    assert diff["max_bbox_diff_px"] == 1 and "leansam_masks_near_a_threshold" not in diff


def test_rle_runs_counts_column_major_runs():
    m = np.zeros((3, 2), bool)
    m[1:, 0] = True  # column-major: 0 1 1 | 0 0 0
    assert rle_runs(m) == 3
