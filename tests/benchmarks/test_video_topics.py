"""The video benchmark topics judge their targets from the numbers in their results."""

from __future__ import annotations

import copy

from benchmarks import video_onnx, video_speed


def _onnx_result() -> dict:
    return {
        "case": "efficienttam_ti/a_box_click",
        "agreement": {"outputs": 8, "max_logit_diff": 1e-4, "max_pixels_differ": 2e-4, "max_score_diff": 1e-5,
                      "same_calls": True},
        "official_tolerances_pass": {"torch": True, "onnx": True},
    }  # fmt: skip


def test_onnx_target_needs_equal_masks_same_calls_and_both_sides_within_the_official_tolerances() -> None:
    assert video_onnx.targets(_onnx_result())[0]["met"]
    for path, value in (
        (("agreement", "max_pixels_differ"), 2e-3),
        (("agreement", "same_calls"), False),
        (("official_tolerances_pass", "onnx"), False),
    ):
        res = copy.deepcopy(_onnx_result())
        res[path[0]][path[1]] = value
        assert not video_onnx.targets(res)[0]["met"], path


def test_speed_targets_say_the_precision_and_compare_per_frame_times() -> None:
    row = {"leansam": {"per_frame_s": 1.0}, "official": {"per_frame_s": 2.0}}
    res = {"models": {"sam2.1_hiera_tiny": {"track": row}}}
    (fp32,) = video_speed.targets(res)
    assert fp32["met"] and fp32["measured"] == "0.50x" and "bfloat16" not in fp32["target"]
    slow = copy.deepcopy(res)
    slow["models"]["sam2.1_hiera_tiny"]["track"]["leansam"]["per_frame_s"] = 1.3
    (bf16,) = video_speed.targets({**slow, "precision": "bfloat16"})
    assert not bf16["met"] and "both in bfloat16" in bf16["target"]
