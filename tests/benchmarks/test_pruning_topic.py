"""benchmarks.pruning runs end to end on a tiny setting and renders its section and target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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


def _part(tmp_path, ratio: str, held_out: str = "2") -> str:
    out = tmp_path / f"part_{ratio}_{held_out}.json"
    argv = [
        "--model",
        "leansam_tiny",
        "--ratios",
        ratio,
        "--importances",
        "magnitude",
        "--recovery-steps",
        "0",
    ]
    argv += ["--held-out", held_out, "--runs", "1", "--json", str(out), "--plot", str(tmp_path / "p.png")]
    assert pruning.main(argv) == 0
    return str(out)


def test_sweep_parts_merge_into_one_report(tmp_path):
    a, b = _part(tmp_path, "0.5"), _part(tmp_path, "0.75")
    out = tmp_path / "merged.json"
    assert pruning.main(["--merge", a, b, "--json", str(out), "--plot", str(tmp_path / "m.png")]) == 0
    res = json.loads(out.read_text())
    assert [(r["kind"], r.get("ratio")) for r in res["rows"]] == [
        ("start", None),
        ("pruned", 0.5),
        ("pruned", 0.75),
    ]
    assert res["sweep"]["ratios"] == [0.5, 0.75] and len(res["parts"]) == 2
    assert res["rows"][0] == json.loads(Path(a).read_text())["rows"][0]
    assert "2 parts" in pruning.render(res) and pruning.targets(res)
    other = _part(tmp_path, "0.75", held_out="3")
    with pytest.raises(SystemExit, match="eval_data"):
        pruning.main(["--merge", a, other, "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_retime_measures_the_latencies_again_and_keeps_the_accuracy(tmp_path):
    path = Path(_part(tmp_path, "0.5"))
    before = json.loads(path.read_text())
    assert (
        pruning.main(["--retime", "--runs", "3", "--json", str(path), "--plot", str(tmp_path / "r.png")]) == 0
    )
    after = json.loads(path.read_text())
    keep = ("label", "kind", "encoder_params", "box_miou", "point_miou")
    assert [[r[k] for k in keep] for r in after["rows"]] == [[r[k] for k in keep] for r in before["rows"]]
    old = {r["label"]: r["latency_ms"] for r in before["rows"]}
    assert after["retimed"]["previous_latency_ms"] == old
    assert all(r["latency_ms"] > 0 for r in after["rows"])
    assert [r["latency_ms"] for r in after["rows"]] != list(old.values())  # measured, not copied
    assert "measured again by `python -m benchmarks.pruning --retime" in pruning.render(after)
    wrong = dict(before, rows=[dict(r, encoder_params=r["encoder_params"] + 1) for r in before["rows"]])
    with pytest.raises(SystemExit, match="rebuilt widths"):
        pruning.retime(wrong, reps=1)


def test_retime_in_rounds_reports_the_median_of_the_rounds(tmp_path):
    path = Path(_part(tmp_path, "0.5"))
    argv = [
        "--retime",
        "--runs",
        "2",
        "--rounds",
        "3",
        "--json",
        str(path),
        "--plot",
        str(tmp_path / "r.png"),
    ]
    assert pruning.main(argv) == 0
    after = json.loads(path.read_text())
    rounds = after["retimed"]["rounds_ms"]
    assert after["retimed"]["rounds"] == 3 and all(len(v) == 3 for v in rounds.values())
    for r in after["rows"]:
        assert r["latency_ms"] == round(float(np.median(rounds[r["label"]])), 2)
    assert "median of 3 rounds" in pruning.render(after)


def test_accuracy_of_other_weights_than_the_bundled_ones_is_flagged_and_not_met():
    from leansam.zoo.default import TINY_SHA256

    rows = [
        {"label": "leansam_tiny", "kind": "start", "box_miou": 0.60, "point_miou": 0.5, "latency_ms": 10.0},
        {
            "label": "p",
            "kind": "pruned",
            "ratio": 0.5,
            "box_miou": 0.59,
            "point_miou": 0.5,
            "latency_ms": 5.0,
        },
    ]
    res = {"model": "leansam_tiny", "rows": rows, "start_weights_sha256": TINY_SHA256}
    assert pruning.stale_weights(res) is None and pruning.targets(res)[0]["met"]
    for then in ("0" * 64, None):
        old = dict(res, start_weights_sha256=then)
        assert "run the benchmark again" in pruning.stale_weights(old)
        target = pruning.targets(old)[0]
        assert not target["met"] and "earlier weights" in target["measured"]
