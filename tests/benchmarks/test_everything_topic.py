"""The segment-everything page's hierarchical-sampling targets."""

from __future__ import annotations

from benchmarks.everything_page import targets
from leansam.zoo.default import TINY_SHA256


def _result(found_hier: int, sha: str | None = TINY_SHA256) -> dict:
    totals = {
        "prompt_cut": 0.6,
        "kept_at_050": 0.8,
        "kept_at_075": 0.5,
        "gt_objects": 100,
        "gt_found_grid": 80,
        "gt_found_hier": found_hier,
    }
    return {"hierarchical": {"totals": {"moderate": totals}, "weights_sha256": sha}}


def test_hierarchical_target_needs_the_prompt_cut_the_recall_and_the_current_weights() -> None:
    assert targets(_result(79))[0]["met"]  # 1 point of recall lost
    assert not targets(_result(77))[0]["met"]  # 3 points
    for old in ("0" * 64, None):
        row = targets(_result(80, old))[0]
        assert not row["met"] and "earlier weights" in row["measured"]


def test_quantization_keeps_the_models_a_run_did_not_measure_and_flags_old_fidelity() -> None:
    from benchmarks.quantization import keep_other_models
    from benchmarks.quantization import targets as q_targets

    old = {"command": "old cmd", "models": {"a": {"timing": {}}, "b": {"timing": {}}}, "fidelity": {"x": 1}}
    new = {"command": "new cmd", "models": {"a": {"timing": {"1": {}}}}}
    out = keep_other_models(old, new)
    assert out["models"] == {"a": {"timing": {"1": {}}}, "b": {"timing": {}}}
    assert out["earlier"] == {"b": "old cmd"} and out["fidelity"] == {"x": 1}
    again = keep_other_models(out, {"command": "third", "models": {"b": {"timing": {}}}})
    assert again["earlier"] == {"a": "new cmd"}  # b is measured now, a by the second run
    fid = {"int8": {"box_miou": 0.6}, "fp32": {"box_miou": 0.6}}
    assert q_targets({"models": {}, "fidelity": dict(fid, weights_sha256=TINY_SHA256)})[0]["met"]
    assert not q_targets({"models": {}, "fidelity": fid})[0]["met"]
