"""benchmark_generators: structure of the result (timings themselves are machine-dependent)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from leansam.everything.bench import (
    BenchmarkResult,
    StageTimer,
    benchmark_generators,
    compare_records,
    rle_runs,
)
from tests import oracles
from tests.everything.models import RegionSam, rectangles_image, scripted_official


def test_benchmark_generators_times_leansam_and_official():
    image = rectangles_image()
    official = oracles.segment_anything().SamAutomaticMaskGenerator(scripted_official(), points_per_side=8)
    result = benchmark_generators(RegionSam(), image, official=official, repeats=2, points_per_side=8)
    assert isinstance(result, BenchmarkResult)
    assert [r.name for r in result.runs] == ["leansam grid", "leansam hierarchical", "segment_anything grid"]
    grid, hier, ref = result.runs
    assert grid.masks == ref.masks  # same model, same options
    assert grid.prompts == 64 and hier.prompts < 64
    assert all(len(r.all_seconds) == 2 and r.seconds == min(r.all_seconds) > 0 for r in result.runs)
    assert result.speedup("leansam grid", "segment_anything grid") > 0
    table = result.table()
    assert "| leansam hierarchical |" in table and "segment_anything grid" in table
    with pytest.raises(KeyError):
        result.get("nope")
    with pytest.raises(ValueError, match="repeats"):
        benchmark_generators(RegionSam(), image, repeats=0)


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


def test_stage_timer_sums_modules_and_methods():
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.01)
            return x

        def helper(self):
            time.sleep(0.02)
            return 7

    m = Slow()
    timer = StageTimer()
    timer.module("fwd", m)
    timer.method("help", m, "helper")
    m(torch.zeros(1))
    m(torch.zeros(1))
    assert m.helper() == 7
    split = timer.take()
    assert set(split) == {"fwd", "help"}
    assert 0.02 <= split["fwd"] < 1 and 0.02 <= split["help"] < 1
    assert timer.take() == {}
