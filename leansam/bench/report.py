"""Outputs of ``leansam bench``: JSON, CSV, a markdown report (one helper per table), PNG plots.

    write_outputs(result, "bench_out")          # results.json, results.csv, results.md, *.png
    render_markdown(result)                     # the markdown report

The project's own page (docs/benchmarks.md, with the published numbers beside these tables) is
built by ``python -m benchmarks docs``, which reuses the table helpers below.
Plots need matplotlib, an optional extra: ``pip install 'leansam[plot]'``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..io import atomic_path, write_json
from .results import BenchResult

PLOT_HINT = "pip install 'leansam[plot]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the ``plot`` extra)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(f"plots need matplotlib, which is not installed: {PLOT_HINT}") from None
    return plt


def _as_dict(result: BenchResult | dict[str, Any]) -> dict[str, Any]:
    return result.to_dict() if isinstance(result, BenchResult) else result


# --- formatting -----------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _load_text(load: dict[str, list[float]]) -> str:
    if not load.get("start"):
        return ""
    return (
        f" Load average (1 min) {load['start'][0]:.1f} at the start, "
        f"{(load.get('end') or ['?'])[0]} at the end: a load above the core count means "
        "other processes shared the CPU, and absolute times are inflated."
    )


def _decoder_ms(m: dict, n: int) -> float | None:
    for r in m.get("decoder_latency", []):
        if r["n_boxes"] == n:
            return r["median_s"]
    return None


def _throughput(m: dict, batch: int) -> float | None:
    for r in m.get("throughput", []):
        if r["batch"] == batch:
            return r["images_per_s"]
    return None


# --- CSV ------------------------------------------------------------------------------------------
def csv_rows(result: BenchResult | dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model (times in ms, sizes in millions / G / MiB)."""
    d = _as_dict(result)
    counts = sorted({r["n_boxes"] for m in d["models"] for r in m.get("decoder_latency", [])})
    batches = sorted({r["batch"] for m in d["models"] for r in m.get("throughput", [])})
    rows = []
    for m in d["models"]:
        peak = _get(m, "peak_memory", "peak_bytes")
        row: dict[str, Any] = {
            "model": m["name"],
            "weights": m["weights"],
            "dtype": m["dtype"],
            "input_size": m["input_size"],
            "params_encoder_M": _get(m, "params", "image_encoder") and m["params"]["image_encoder"] / 1e6,
            "params_decoder_M": _get(m, "params", "prompt_decoder") and m["params"]["prompt_decoder"] / 1e6,
            "params_total_M": _get(m, "params", "total") and m["params"]["total"] / 1e6,
            "gmacs_encoder": _get(m, "macs", "image_encoder") and m["macs"]["image_encoder"] / 1e9,
            "gmacs_decoder_1box": _get(m, "macs", "prompt_decoder") and m["macs"]["prompt_decoder"] / 1e9,
            "peak_memory_MiB": None if peak is None else peak / 2**20,
            "encoder_ms_median": _scale(_get(m, "encoder_latency", "median_s")),
            "encoder_ms_p90": _scale(_get(m, "encoder_latency", "p90_s")),
            "segany_1box_ms_median": _scale(_get(m, "segany_latency", "median_s")),
            "segany_1box_ms_p90": _scale(_get(m, "segany_latency", "p90_s")),
        }
        for n in counts:
            row[f"decoder_ms_{n}_boxes"] = _scale(_decoder_ms(m, n))
        row["decoder_ms_per_10_boxes"] = m.get("decoder_ms_per_10_boxes")
        for b in batches:
            row[f"images_per_s_batch{b}"] = _throughput(m, b)
        for e in m.get("everything", []):
            key = f"everything_{e['strategy']}" + (f"_{e['grid']}" if e.get("grid") else "") + "_s"
            row[key] = e.get("median_s")
        row["accuracy"] = m.get("accuracy")
        row["errors"] = "; ".join(f"{k}: {v}" for k, v in m.get("errors", {}).items())
        rows.append(row)
    return rows


def _scale(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def write_csv(result: BenchResult | dict[str, Any], path: str | Path) -> None:
    rows = csv_rows(result)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


# --- markdown -------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def setup_lines(d: dict[str, Any]) -> list[str]:
    """Machine, settings, the command that reproduces the run, and the run's notes."""
    mach, cfg = d.get("machine", {}), d.get("config", {})
    size = _get(cfg, "image_size") and "x".join(str(v) for v in reversed(cfg["image_size"]))
    timing = (
        f"; dtype {cfg.get('dtype', '?')}; {cfg.get('runs', '?')} timed runs after {cfg.get('warmup', '?')} "
        f"warm-up; test image {size} (W x H)."
    )
    if cfg.get("counts_only"):
        timing = "; counts only (no timing)."
    out = [
        f"**Machine:** {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, torch {mach.get('torch', '?')} "
        f"with {mach.get('threads', '?')} threads, device {mach.get('device', '?')}"
        + timing
        + _load_text(d.get("load_average") or {}),
        "",
        "Reproduce with:",
        "",
        "```",
        d.get("command") or _command(d),
        "```",
        "",
    ]
    out += [f"> {note}" for note in d.get("notes", [])]
    return [*out, ""]


def size_table(models: list[dict[str, Any]]) -> list[str]:
    """Parameters and MACs per model (exact counts, no timing)."""
    rows = [
        [
            f"`{m['name']}`",
            str(m["input_size"]),
            _num(_get(m, "params", "image_encoder") and m["params"]["image_encoder"] / 1e6),
            _num(_get(m, "params", "prompt_decoder") and m["params"]["prompt_decoder"] / 1e6),
            _num(_get(m, "params", "total") and m["params"]["total"] / 1e6),
            _num(_get(m, "macs", "image_encoder") and m["macs"]["image_encoder"] / 1e9, ".1f"),
            _num(_get(m, "macs", "prompt_decoder") and m["macs"]["prompt_decoder"] / 1e9),
        ]
        for m in models
    ]
    header = ["model", "input", "encoder params (M)", "prompt enc. + decoder params (M)", "total params (M)"]
    header += ["encoder GMACs", "decoder GMACs (1 box)"]
    return [
        "### Size and compute",
        "",
        table(header, rows),
        "",
        "MACs = FLOPs / 2 from `torch.utils.flop_counter` (attention kernels included), counted on the "
        "meta device.",
        "",
    ]


def latency_table(models: list[dict[str, Any]]) -> list[str]:
    """Encoder, one-box SegAny and decoder latency, throughput and peak memory per model."""
    counts = sorted({r["n_boxes"] for m in models for r in m.get("decoder_latency", [])})
    batches = sorted({r["batch"] for m in models for r in m.get("throughput", [])})
    rows = []
    for m in models:
        peak = _get(m, "peak_memory", "peak_bytes")
        rows.append(
            [
                f"`{m['name']}`",
                m.get("weights", ""),
                _ms(_get(m, "encoder_latency", "median_s")),
                _ms(_get(m, "encoder_latency", "p90_s")),
                _ms(_get(m, "segany_latency", "median_s")),
                _ms(_get(m, "segany_latency", "p90_s")),
                *[_ms(_decoder_ms(m, n)) for n in counts],
                _num(m.get("decoder_ms_per_10_boxes"), ".1f"),
                *[_num(_throughput(m, b)) for b in batches],
                "" if peak is None else f"{peak / 2**20:.0f}",
            ]
        )
    header = ["model", "weights", "encoder ms (median)", "encoder ms (p90)", "one-box SegAny ms (median)"]
    header += ["SegAny p90", *[f"decoder ms, {n} box{'es' if n > 1 else ''}" for n in counts]]
    header += ["decoder ms / 10 boxes", *[f"images/s (batch {b})" for b in batches], "peak memory (MiB)"]
    return [
        "### Latency and throughput",
        "",
        table(header, rows),
        "",
        "Decoder: prompt encoder + mask decoder for n boxes in one batched call (low-res logits). "
        "One-box SegAny: preprocess + encode + decode + upscale + threshold. Peak memory: one SegAny call "
        "(CPU: resident-set high-water mark in a fresh process; CUDA: allocator peak).",
        "",
    ]


def everything_table(models: list[dict[str, Any]]) -> list[str]:
    """Segment-everything wall time per model and strategy (or why it was not measured)."""
    rows = []
    for m in models:
        for e in m.get("everything", []):
            setting = f"{e['grid']} x {e['grid']} points" if e.get("grid") else f"{e.get('n_boxes')} GT boxes"
            seconds = _num(e.get("median_s")) if "error" not in e else f"error: {e['error'][:60]}"
            rows.append(
                [
                    f"`{m['name']}`",
                    e["strategy"],
                    setting,
                    seconds,
                    str(e.get("prompts_decoded", "")),
                    str(e.get("masks", "")),
                ]
            )
    out = ["### Segment everything", ""]
    if rows:
        header = ["model", "strategy", "prompts", "seconds", "prompts decoded", "masks"]
        return [
            *out,
            table(header, rows),
            "",
            "`AutomaticMaskGenerator` wall time per image, SAM's default thresholds.",
            "",
        ]
    reasons = {m["skipped"].get("everything") for m in models if m.get("skipped", {}).get("everything")}
    return [*out, f"Not measured ({'; '.join(sorted(r for r in reasons if r)) or 'disabled'}).", ""]


def errors_lines(models: list[dict[str, Any]]) -> list[str]:
    """The per-model failures of a run (empty when none)."""
    errors = [(m["name"], k, v) for m in models for k, v in m.get("errors", {}).items()]
    return ["### Errors", "", *[f"* `{n}` {k}: {v}" for n, k, v in errors], ""] if errors else []


def render_markdown(result: BenchResult | dict[str, Any], title: str = "Benchmark results") -> str:
    """The whole report of one ``leansam bench`` run as markdown."""
    d = _as_dict(result)
    models = d["models"]
    out = [f"## {title}", "", *setup_lines(d), *size_table(models)]
    if any(m.get("encoder_latency") or m.get("segany_latency") for m in models):
        out += latency_table(models) + everything_table(models)
    else:
        out += ["Counts only: no model was timed in this run.", ""]
    out += errors_lines(models)
    return "\n".join(out).rstrip() + "\n"


def _command(d: dict[str, Any]) -> str:
    """The ``leansam bench`` command line that reproduces a result's settings."""
    c = d.get("config", {})
    names = ",".join(m["name"] for m in d.get("models", []))
    parts = ["leansam bench", f"--models {names}"]
    if c.get("counts_only"):
        return " ".join([*parts, "--counts-only", "--out bench_out"])
    if c.get("device", "cpu") != "cpu":
        parts.append(f"--device {c['device']}")
    if c.get("dtype", "fp32") != "fp32":
        parts.append(f"--dtype {c['dtype']}")
    if c.get("threads"):
        parts.append(f"--threads {c['threads']}")
    parts.append(f"--runs {c.get('runs', 5)} --warmup {c.get('warmup', 1)}")
    for flag, key in (("--prompts", "prompt_counts"), ("--batches", "throughput_batches")):
        if c.get(key):
            parts.append(f"{flag} {','.join(str(v) for v in c[key])}")
    if c.get("everything_grids"):
        parts.append(f"--grids {','.join(str(v) for v in c['everything_grids'])}")
        if c.get("everything_strategies"):
            parts.append(f"--strategies {','.join(c['everything_strategies'])}")
    else:
        parts.append("--no-everything")
    if c.get("weights", "auto") != "auto":
        parts.append(f"--weights {c['weights']}")
    if not c.get("interleave", True):
        parts.append("--no-interleave")
    parts.append("--out bench_out")
    return " ".join(parts)


# --- plots ----------------------------------------------------------------------------------------
def plot_latency_vs_prompts(result: BenchResult | dict[str, Any], path: str | Path) -> None:
    """Decoder latency (ms) vs number of box prompts, one line per model."""
    plt = _pyplot()
    d = _as_dict(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in d["models"]:
        pts = [(r["n_boxes"], r["median_s"] * 1000) for r in m.get("decoder_latency", [])]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=m["name"])
    ax.set_xlabel("box prompts in one decoder call")
    ax.set_ylabel("decoder latency (ms, median)")
    ax.set_title(f"Decoder latency vs prompts ({_get(d, 'machine', 'device')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def plot_throughput_vs_accuracy(result: BenchResult | dict[str, Any], path: str | Path) -> bool:
    """Encoder throughput (batch 1) vs accuracy; False (nothing written) without accuracy results."""
    d = _as_dict(result)
    pts = [
        (
            _throughput(m, 1) or (1 / m["encoder_latency"]["median_s"] if m.get("encoder_latency") else None),
            m["accuracy"],
            m["name"],
        )
        for m in d["models"]
        if m.get("accuracy") is not None
    ]
    pts = [p for p in pts if p[0]]
    if not pts:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for x, y, name in pts:
        ax.scatter([x], [y])
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("encoder throughput (images/s, batch 1)")
    ax.set_ylabel(_get(d, "config", "accuracy_metric") or "accuracy")
    ax.set_title("Throughput vs accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return True


# --- all outputs ----------------------------------------------------------------------------------
#: The files of a bench output folder (see leansam.outputs.OutputDir).
OWNED = ("results.json", "results.csv", "results.md", "latency_vs_prompts.png", "throughput_vs_accuracy.png")


def write_outputs(
    result: BenchResult | dict[str, Any], out_dir: str | Path, plots: bool = True, overwrite: bool = False
) -> list[str]:
    """Writes results.json / .csv / .md and the plots into ``out_dir`` through
    :class:`leansam.outputs.OutputDir`; returns warnings (e.g. no matplotlib)."""
    from ..outputs import OutputDir

    d = _as_dict(result)
    warnings: list[str] = []
    with OutputDir(out_dir, overwrite, OWNED, command="leansam bench") as out:
        write_json(out.path("results.json"), d)
        write_csv(d, out.path("results.csv"))
        out.path("results.md").write_text(render_markdown(d))
        if plots:
            try:
                plot_latency_vs_prompts(d, out.path("latency_vs_prompts.png"))
                plot_throughput_vs_accuracy(d, out.path("throughput_vs_accuracy.png"))
            except PlotUnavailable as e:
                warnings.append(f"plots skipped: {e}")
    return warnings
