"""benchmarks.pruning runs end to end on a tiny setting and renders its section and target."""

from __future__ import annotations

import json

from benchmarks import pruning
from tests.compress.helpers import one_thread  # noqa: F401  (autouse fixture)


def test_pruning_topic_measures_renders_and_checks_its_target(tmp_path):
    out, plot = tmp_path / "pruning.json", tmp_path / "pruning.png"
    argv = [
        "--model",
        "leansam_tiny",
        "--ratios",
        "0.5",
        "--importances",
        "magnitude",
        "--recovery-steps",
        "0",
    ]
    assert (
        pruning.main([*argv, "--held-out", "2", "--runs", "1", "--json", str(out), "--plot", str(plot)]) == 0
    )
    res = json.loads(out.read_text())
    assert [r["kind"] for r in res["rows"]] == ["start", "pruned"] and plot.stat().st_size > 0
    text = pruning.render(res)
    assert "| magnitude 0.5 | pruned |" in text and res["machine"]["cpu"] in text
    (target,) = pruning.targets(res)
    start, half = res["rows"]
    met = (
        100 * (start["box_miou"] - half["box_miou"]) <= 2 and half["latency_ms"] <= 0.6 * start["latency_ms"]
    )
    assert target["met"] == met
