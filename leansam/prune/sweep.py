"""Pruning sweeps: several ratios x importance criteria, evaluated into a Pareto report.

``leansam compress --sweep SWEEP.yaml --out DIR`` prunes the starting model at every ratio with
every criterion (:func:`~leansam.prune.pruner.prune_model`, recovery as configured), measures each
model's image-encoder latency on this machine (median of ``timing.reps`` calls,
:func:`leansam.train.evaluate.encoder_latency`) and its box / click mIoU against the ground truth
of ``eval.data`` (:func:`leansam.train.evaluate.evaluate_gt`), together with the starting model and
the reference models (official variants of the same family), and writes ``DIR/pruning.json``,
``DIR/pruning.md`` (table) and ``DIR/pruning.png`` (latency vs box mIoU; needs matplotlib)::

    model: leansam_tiny_teacher:teacher.pt
    ratios: [0.25, 0.5, 0.625, 0.75]
    importances: [disturbed-taylor, taylor, magnitude]
    prune: {recovery_steps: 2000, recovery_data: "synth:4000:0", calib: "synth:16:0"}
    eval: {data: "synth:200:1000", max_images: 200}
    references: [leansam_tiny]
    timing: {reps: 20, warmup: 3}
    save_models: false
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import InputError
from .importance import IMPORTANCES
from .pruner import PruneConfig

_FIELDS = ("model", "ratios", "importances", "prune", "eval", "references", "timing", "save_models")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep (module docstring)."""

    model: str
    ratios: tuple[float, ...]
    importances: tuple[str, ...] = ("disturbed-taylor",)
    prune: dict[str, Any] = field(default_factory=dict)
    eval_data: str = "synth:200:1000"
    max_images: int | None = None
    references: tuple[str, ...] = ()
    reps: int = 10
    warmup: int = 2
    save_models: bool = False

    def configs(self) -> list[PruneConfig]:
        """One :class:`PruneConfig` per (importance, ratio)."""
        return [
            PruneConfig(ratio=r, importance=i, **self.prune) for i in self.importances for r in self.ratios
        ]


def load_sweep(path: str | Path) -> Sweep:
    """Reads and validates a sweep file; InputError with one line naming the problem."""
    from ..compress.recipe import read_yaml

    return parse_sweep(read_yaml(path, "sweep"))


def parse_sweep(data: Any) -> Sweep:
    """Validates a sweep given as a mapping."""
    if not isinstance(data, dict):
        raise InputError("a sweep is a mapping with model and ratios")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InputError(f"sweep: unknown field(s) {unknown}; known: {', '.join(_FIELDS)}")
    for key in ("model", "ratios"):
        if key not in data:
            raise InputError(f"sweep: missing field {key!r}")
    ratios, imps = data["ratios"], data.get("importances", ["disturbed-taylor"])
    if not isinstance(ratios, list) or not ratios or not isinstance(imps, list) or not imps:
        raise InputError("sweep: ratios and importances must be non-empty lists")
    ev, timing, prune = data.get("eval") or {}, data.get("timing") or {}, data.get("prune") or {}
    if not isinstance(prune, dict) or {"ratio", "importance"} & set(prune):
        raise InputError("sweep: prune holds PruneConfig options other than ratio / importance")
    if set(ev) - {"data", "max_images"} or set(timing) - {"reps", "warmup"}:
        raise InputError("sweep: eval takes data, max_images; timing takes reps, warmup")
    try:
        sweep = Sweep(
            model=str(data["model"]),
            ratios=tuple(ratios),
            importances=tuple(imps),
            prune=dict(prune),
            eval_data=str(ev.get("data", "synth:200:1000")),
            max_images=ev.get("max_images"),
            references=tuple(str(r) for r in data.get("references") or ()),
            reps=int(timing.get("reps", 10)),
            warmup=int(timing.get("warmup", 2)),
            save_models=bool(data.get("save_models", False)),
        )
        sweep.configs()
    except TypeError as e:
        raise InputError(f"sweep: {e}") from None
    except ValueError as e:
        raise InputError(f"sweep: {e}") from None
    if sweep.reps < 1 or sweep.warmup < 0 or any(i not in IMPORTANCES for i in sweep.importances):
        raise InputError("sweep: timing reps >= 1, warmup >= 0, importances from " + ", ".join(IMPORTANCES))
    return sweep


def _measure(model, label: str, kind: str, source, sweep: Sweep, timing: bool) -> dict[str, Any]:
    from ..train.evaluate import encoder_latency, evaluate_gt

    res = evaluate_gt(model, source, sweep.max_images)
    row = {
        "label": label,
        "kind": kind,
        "encoder_params": sum(p.numel() for p in model.image_encoder.parameters()),
        "box_miou": round(res["box_miou"], 4),
        "point_miou": round(res["point_miou"], 4),
        "n_instances": res["n_instances"],
        "latency_ms": round(1000 * encoder_latency(model, sweep.reps, sweep.warmup), 2) if timing else None,
    }
    return row


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    timing: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Runs ``sweep``; writes the report into ``out`` through :class:`leansam.outputs.OutputDir`
    (checked and locked before any work, committed at the end)."""
    from ..outputs import OutputDir
    from ..train.data import open_source
    from .arch import save_pruned
    from .pruner import load_model_spec, prune_model

    models = tuple(f"{c.importance}_{c.ratio:g}" for c in sweep.configs()) if sweep.save_models else ()
    owned = ("pruning.json", "pruning.md", "pruning.png", *models)
    staged = OutputDir(out, overwrite, owned, command="leansam compress --sweep")
    try:
        source = open_source(sweep.eval_data)
        start, spec = load_model_spec(sweep.model, prunable=True)
        refs = [load_model_spec(r)[0] for r in sweep.references]
        rows = [_measure(start, spec, "start", source, sweep, timing)]
        rows += [_measure(m, r, "reference", source, sweep, timing) for m, r in zip(refs, sweep.references)]
        for cfg in sweep.configs():
            label = f"{cfg.importance} {cfg.ratio:g}"
            log(f"pruning: {label}")
            model, rep = prune_model(start, spec, cfg, log=log)
            row = _measure(model, label, "pruned", source, sweep, timing)
            row.update(ratio=cfg.ratio, importance=cfg.importance)
            rows.append(row)
            if sweep.save_models:
                save_pruned(model, staged.path(f"{cfg.importance}_{cfg.ratio:g}"), rep)
            log(f"  box mIoU {row['box_miou']}, latency {row['latency_ms']} ms")
        result = {
            "model": spec,
            "eval_data": sweep.eval_data,
            "sweep": dataclasses.asdict(sweep),
            "rows": rows,
        }
        staged.path("pruning.json").write_text(json.dumps(result, indent=1) + "\n")
        staged.path("pruning.md").write_text(table_markdown(rows))
        if timing:
            plot_pareto(rows, staged.path("pruning.png"))
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return result


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """Labels of the rows no other row beats on both latency (lower) and box mIoU (higher)."""
    timed = [r for r in rows if r["latency_ms"] is not None]
    return [
        r["label"]
        for r in timed
        if not any(
            o["latency_ms"] <= r["latency_ms"]
            and o["box_miou"] >= r["box_miou"]
            and (o["latency_ms"], o["box_miou"]) != (r["latency_ms"], r["box_miou"])
            for o in timed
        )
    ]


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table (Pareto-optimal rows marked)."""
    front = set(pareto_front(rows))
    lines = [
        "| model | kind | encoder params | encoder latency (ms) | box mIoU | click mIoU | Pareto |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        lines.append(
            f"| {r['label']} | {r['kind']} | {r['encoder_params']:,} | {lat} | {r['box_miou']:.3f} "
            f"| {r['point_miou']:.3f} | {'yes' if r['label'] in front else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> None:
    """Encoder latency (x) vs box mIoU (y), one marker per kind, pruned points joined per criterion."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("the Pareto plot needs matplotlib: pip install 'leansam[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for imp in sorted({r["importance"] for r in rows if r["kind"] == "pruned"}):
        pts = sorted((r["latency_ms"], r["box_miou"]) for r in rows if r.get("importance") == imp)
        ax.plot(*zip(*pts), "o-", label=f"pruned ({imp})")
    for r in rows:
        if r["kind"] != "pruned":
            ax.plot(
                r["latency_ms"], r["box_miou"], "*" if r["kind"] == "start" else "s", ms=10, label=r["label"]
            )
    ax.set_xlabel("image-encoder latency (ms, this machine)")
    ax.set_ylabel("box mIoU (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
