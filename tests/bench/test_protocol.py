"""``run_benchmark`` and its outputs, on a tiny model with the cheapest settings."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from leansam.bench.memory import peak_memory
from leansam.bench.protocol import RANDOM_LABEL, BenchConfig, resolve_models, run_benchmark
from leansam.bench.report import PLOT_HINT, render_markdown, write_outputs
from leansam.bench.results import BenchResult

CHEAP = dict(
    runs=2,
    warmup=0,
    prompt_counts=(1, 3),
    throughput_batches=(1, 2),
    everything_grids=(4,),
    memory_mode="inprocess",
)


@pytest.fixture(scope="module")
def result(tiny_models):
    return run_benchmark(["tiny_test"], BenchConfig(**CHEAP, accuracy={"tiny_test": 12.5}))


def test_every_measurement_is_there(result):
    d = result.to_dict()
    json.dumps(d)  # JSON-serialisable
    (m,) = d["models"]
    assert m["errors"] == {}, m["errors"]
    assert m["weights"] == RANDOM_LABEL and any("random init" in n for n in d["notes"])
    assert d["machine"]["cpu"] and d["machine"]["torch"] and d["machine"]["threads"] >= 1
    assert m["params"]["total"] == m["params"]["image_encoder"] + m["params"]["prompt_decoder"] > 0
    assert m["macs"]["image_encoder"] > 0 and m["macs"]["prompt_decoder"] > 0
    assert m["peak_memory"]["peak_bytes"] >= 0 and m["peak_memory"]["method"] == "vmhwm_delta"
    for key in ("encoder_latency", "segany_latency"):
        assert len(m[key]["runs_s"]) == 2 and m[key]["p90_s"] >= m[key]["median_s"] > 0
    assert [r["n_boxes"] for r in m["decoder_latency"]] == [1, 3]
    assert m["decoder_ms_per_10_boxes"] is not None
    assert [r["batch"] for r in m["throughput"]] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in m["throughput"])
    ev = {(e["strategy"], e["grid"]): e for e in m["everything"]}
    assert set(ev) == {("grid", 4), ("hierarchical", 4), ("boxes", None)}
    assert all("error" not in e and e["median_s"] > 0 for e in ev.values()), ev
    assert ev[("grid", 4)]["prompts_decoded"] == 16
    assert m["accuracy"] == 12.5


def test_result_round_trips_through_json(result):
    d = json.loads(json.dumps(result.to_dict()))
    assert BenchResult.from_dict(d).to_dict() == result.to_dict()


def test_outputs_json_csv_markdown_and_plots(result, tmp_path):
    warnings = write_outputs(result, tmp_path / "out")
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text()) == result.to_dict()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["model"] == "tiny_test" and float(rows[0]["decoder_ms_3_boxes"]) > 0
    md = (out / "results.md").read_text()
    assert "`tiny_test`" in md and "### Size and compute" in md and "### Latency and throughput" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert warnings and PLOT_HINT in warnings[0]
    else:
        assert warnings == []
        for name in ("latency_vs_prompts.png", "throughput_vs_accuracy.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_gives_the_install_hint(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    warnings = write_outputs(result, tmp_path / "out")
    assert warnings == [f"plots skipped: plots need matplotlib, which is not installed: {PLOT_HINT}"]
    assert PLOT_HINT == "pip install 'leansam[plot]'"
    assert (tmp_path / "out" / "results.md").exists() and not (
        tmp_path / "out" / "latency_vs_prompts.png"
    ).exists()


def test_everything_absent_is_skipped_with_a_reason(tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "leansam.everything", None)
    r = run_benchmark(
        "tiny_test", BenchConfig(**{**CHEAP, "runs": 1, "measure_memory": False, "prompt_counts": (1,)})
    )
    (m,) = r.models
    assert m.everything == [] and "not available" in m.skipped["everything"]
    assert m.skipped["peak_memory"] == "disabled"


def test_failures_are_recorded_per_model_not_raised(tiny_models, monkeypatch):
    from leansam.bench import protocol as runner

    def boom(*a, **k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(runner, "_decoder_curve", boom)
    r = run_benchmark(["tiny_test"], BenchConfig(**{**CHEAP, "runs": 1, "everything_grids": ()}))
    (m,) = r.models
    assert "decoder exploded" in m.errors["decoder_latency"]
    assert m.encoder_latency and m.throughput  # the rest still ran
    assert m.skipped["everything"] == "disabled"


def test_resolve_models():
    assert resolve_models("mobile_sam, efficientvit_sam_l0") == ["mobile_sam", "efficientvit_sam_l0"]
    assert "sam_vit_h" in resolve_models("all")
    assert resolve_models(["efficientvit_sam_l*"]) == [
        "efficientvit_sam_l0",
        "efficientvit_sam_l1",
        "efficientvit_sam_l2",
    ]
    with pytest.raises(KeyError, match="did you mean"):
        resolve_models("mobile_samm")
    with pytest.raises(ValueError, match="no registered model"):
        resolve_models("nothing*")


def test_config_validation():
    with pytest.raises(ValueError, match="dtype"):
        BenchConfig(dtype="int8")
    with pytest.raises(ValueError, match="weights"):
        BenchConfig(weights="pretrained")
    with pytest.raises(ValueError, match="prompt_counts"):
        BenchConfig(prompt_counts=(0,))


def test_peak_memory_sees_torch_allocations():
    import torch

    def alloc():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        return float(x.sum())

    peak = peak_memory(alloc)
    assert peak.method in ("vmhwm_delta", "vmhwm_absolute")
    assert peak.peak_bytes >= 60 * 2**20
    small = peak_memory(lambda: np.zeros(10).sum())
    if small.method == "vmhwm_delta":
        assert small.peak_bytes < 16 * 2**20


@pytest.mark.slow
def test_real_models_interleaved_with_subprocess_memory():
    r = run_benchmark(
        "mobile_sam,efficientvit_sam_l0",
        BenchConfig(runs=1, warmup=0, prompt_counts=(1, 10), throughput_batches=(1,), everything_grids=(8,)),
    )
    for m in r.models:
        assert m.errors == {}, m.errors
        assert m.peak_memory["method"] == "vmhwm_delta_subprocess" and m.peak_memory["peak_bytes"] > 0
        assert m.macs["image_encoder"] > 30e9


def test_counts_only_and_timed_reports(result, tiny_models):
    counts = run_benchmark("tiny_test", BenchConfig(counts_only=True))
    (m,) = counts.models
    assert m.macs and m.params and not m.encoder_latency and m.skipped["timing"] == "counts only"
    text = render_markdown(counts, title="counts")
    assert text.startswith("## counts\n") and "Counts only: no model was timed" in text
    assert "### Latency and throughput" not in text and "| `tiny_test` |" in text
    timed = render_markdown(result)
    assert "### Latency and throughput" in timed and "Counts only" not in timed
