"""Structural pruning (SlimSAM's method): image-encoder latency vs box / click mIoU, a Pareto report.

    python -m benchmarks.pruning --model leansam_tiny_teacher:TEACHER.pt [--ratios 0.25,0.5,0.625,0.75]
        [--importances disturbed-taylor] [--recovery-steps 4000] [--lr 3e-4] [--references leansam_tiny]
        [--held-out 200] [--runs 20] [--teacher-cache DIR] [--json docs/results/pruning.json]
        [--plot docs/img/pruning.png]

The starting model is pruned at every ratio with every criterion (``leansam.prune.prune_model``:
alternate slimming, each stage followed by ``--recovery-steps`` of embedding distillation from the
unpruned model on ``synth:4000:0:rich``), then every model (the start, the references, the pruned ones)
is scored on the default model's held-out set (``synth:N:1000:rich``, docs/training.md's box and centre-click
protocol) and its image encoder timed on this machine (median of ``--runs`` calls after 3 warm-up
calls, one thread). This is ``leansam compress --sweep`` with the sweep given on the command line.

    python -m benchmarks.pruning --merge PART.json PART.json ... [--json docs/results/pruning.json]

runs a sweep in parts (one process per core, each with some of the ratios, each part its own
``--json``) and joins them: the rows of the first part (its start model included) and the pruned rows
of the others, which must have the same start model, held-out set and settings. Each part's command,
load and start-model latency are kept under ``parts``.

    python -m benchmarks.pruning --retime [--runs 40] [--rounds 1] [--json docs/results/pruning.json]

measures the encoder latencies of a written sweep again, every model alternated call by call in one
process (the accuracy columns are kept). Latency depends on the widths only, so each pruned
architecture is rebuilt by magnitude pruning of the start model at its ratio (no recovery), and its
encoder parameter count must equal the row's. The previous latencies are kept under ``retimed``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.weights import stale_note, weights_sha256
from leansam.io import write_json
from leansam.prune.sweep import Sweep, plot_pareto, run_sweep, table_markdown
from leansam.train.recipe import EVAL_SEED

RESULT = Path("docs/results/pruning.json")
PLOT = Path("docs/img/pruning.png")


def _row(res: dict, kind: str, ratio: float | None = None) -> dict | None:
    for r in res["rows"]:
        if r["kind"] == kind and (ratio is None or r.get("ratio") == ratio):
            return r
    return None


def stale_weights(res: dict) -> str | None:
    """Why the accuracy columns are not those of the weights ``res['model']`` loads now (None: they are)."""
    note = stale_note(res["model"], res.get("start_weights_sha256"))
    return None if note is None else f"the accuracy columns were {note}"


def targets(res: dict) -> list[dict]:
    """50% pruning + recovery: box mIoU within 2 points of the start at <= 0.6x its encoder latency,
    measured on the weights the starting model loads now."""
    start, half = _row(res, "start"), _row(res, "pruned", 0.5)
    if start is None or half is None or start["latency_ms"] is None:
        return []
    drop = 100 * (start["box_miou"] - half["box_miou"])
    speed = half["latency_ms"] / start["latency_ms"]
    stale = stale_weights(res)
    return [
        {
            "target": f"{res['model']} pruned 50% + recovery: box mIoU within 2 points, encoder <= 0.6x latency",
            "measured": f"{half['box_miou']:.3f} vs {start['box_miou']:.3f} ({-drop:+.1f} points), {speed:.2f}x"
            + (" (accuracy of earlier weights)" if stale else ""),
            "met": drop <= 2.0 and speed <= 0.6 and stale is None,
        }
    ]


def plots(res: dict, path: Path = PLOT) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_pareto(res["rows"], path)
    return [path]


def _rounds_text(retimed: dict) -> str:
    rounds = retimed.get("rounds_ms")
    if not rounds or retimed.get("rounds", 1) < 2:
        return ""
    start = next(iter(rounds.values()))
    ratios = "; ".join(
        f"{label}: " + ", ".join(f"{a / b:.2f}" for a, b in zip(v, start))
        for label, v in list(rounds.items())[1:]
    )
    return f"; median of {retimed['rounds']} rounds, models built afresh for each; per-round ratio to the start: {ratios}"


def _provenance(res: dict) -> str:
    """Which commands measured ``res`` and under what load."""

    def load(la: dict | None) -> str:
        return (
            f"load average {la['before'][0]:.1f} before, {la['after'][0]:.1f} after"
            if la
            else "load not recorded"
        )

    retimed = res.get("retimed")
    if retimed:
        again = (
            f" Encoder latencies measured again by `{retimed['command']}` ({load(retimed['load_average'])}, "
            f"{retimed['reps']} calls per model, models alternated call by call"
            + _rounds_text(retimed)
            + ")."
        )
        return _provenance({k: v for k, v in res.items() if k != "retimed"}) + again
    if "parts" not in res:
        return f"Measured by `{res.get('command', 'python -m benchmarks.pruning')}`, {load(res.get('load_average'))}."
    parts = "; ".join(
        f"`{part['command']}` ({load(part['load_average'])}, start encoder {part['start_latency_ms']} ms)"
        for part in res["parts"]
    )
    return (
        f"Measured in {len(res['parts'])} parts run at the same time, one per core: {parts}; joined by "
        f"`{res['merged_by']}` (the start row is the first part's)."
    )


def render(res: dict) -> str:
    s = res["sweep"]
    lines = [
        "## Structural pruning: encoder latency vs mIoU",
        "",
        f"Start: `{res['model']}`; ratios {list(s['ratios'])}, importance {list(s['importances'])}, "
        f"prune options {s['prune']}; held-out set `{res['eval_data']}`; encoder latency = median of "
        f"{s['reps']} calls on this machine ({res.get('machine', {}).get('cpu', 'cpu')}), in thread CPU "
        "time, one thread (docs/pruning.md). " + _provenance(res),
        "",
        *([f"**Stale:** {stale}.", ""] if (stale := stale_weights(res)) else []),
        table_markdown(res["rows"]).rstrip(),
        "",
        f"![latency vs box mIoU]({PLOT.relative_to('docs')})",
    ]
    return "\n".join(lines) + "\n"


_SAME = ("model", "eval_data", "start_weights_sha256")
_SAME_SWEEP = ("importances", "prune", "references", "reps", "warmup", "max_images")


def merge(parts: list[dict]) -> dict:
    """One report from sweep parts run separately (see the module docstring)."""
    first = parts[0]
    for part in parts[1:]:
        diff = [k for k in _SAME if part[k] != first[k]]
        diff += [f"sweep.{k}" for k in _SAME_SWEEP if part["sweep"].get(k) != first["sweep"].get(k)]
        if diff:
            raise SystemExit(f"error: the parts differ in {', '.join(diff)}; merge parts of one sweep only")
    res = dict(first)
    pruned = [r for part in parts for r in part["rows"] if r["kind"] == "pruned"]
    res["rows"] = [r for r in first["rows"] if r["kind"] != "pruned"] + sorted(
        pruned, key=lambda r: (r["importance"], r["ratio"])
    )
    res["sweep"] = dict(first["sweep"], ratios=sorted({r["ratio"] for r in pruned}))
    res["parts"] = [
        {
            "command": part.get("command"),
            "load_average": part.get("load_average"),
            "start_latency_ms": next(r["latency_ms"] for r in part["rows"] if r["kind"] == "start"),
            "ratios": part["sweep"]["ratios"],
        }
        for part in parts
    ]
    res["command"] = " & ".join(str(part.get("command")) for part in parts)
    return res


def _encoders(res: dict) -> dict[str, Any]:
    """label -> model for every timed row: the start, references, pruned widths rebuilt (see retime)."""
    from leansam.prune.pruner import PruneConfig, encoder_params, load_model_spec, prune_model

    start, spec = load_model_spec(res["model"])
    models: dict[str, Any] = {}
    for r in res["rows"]:
        if r["kind"] == "start":
            models[r["label"]] = start
        elif r["kind"] == "pruned":
            m, _ = prune_model(start, spec, PruneConfig(ratio=r["ratio"], importance="magnitude"))
            if encoder_params(m) != r["encoder_params"]:
                raise SystemExit(
                    f"error: {r['label']}: rebuilt widths have {encoder_params(m)} encoder parameters, "
                    f"the sweep's {r['encoder_params']}; run the sweep again"
                )
            models[r["label"]] = m
        elif r.get("latency_ms") is not None:
            models[r["label"]] = load_model_spec(r["label"])[0]
    return models


def retime(res: dict, reps: int, warmup: int = 3, rounds: int = 1) -> dict:
    """``res`` with every timed row's ``latency_ms`` measured again (module docstring): median thread
    CPU time of ``reps`` encoder calls per model on one thread, the models alternated call by call.
    With ``rounds`` > 1 the models are built afresh for every round (new allocations: on this
    machine one placement can be ~20 % slower than another for the same model) and the latency is
    the median of the rounds' medians; every round's value is kept under ``retimed.rounds_ms``."""
    import time

    from leansam.bench.timing import measure_interleaved

    per_round: dict[str, list[float]] = {}
    load_before = list(os.getloadavg())
    for _ in range(rounds):
        models = {label: m.eval() for label, m in _encoders(res).items()}
        size = next(iter(models.values())).transform.encoder_size
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            timings = measure_interleaved(
                {label: (lambda m=m, x=x: m.image_encoder(x)) for label, m in models.items()},
                runs=reps,
                warmup=warmup,
                clock=time.thread_time,
            )
        for label, t in timings.items():
            per_round.setdefault(label, []).append(round(1000 * t.median, 2))
    out = dict(res)
    out["rows"] = [
        dict(r, latency_ms=round(float(np.median(per_round[r["label"]])), 2))
        if r["label"] in per_round
        else r
        for r in res["rows"]
    ]
    out["retimed"] = {
        "reps": reps,
        "rounds": rounds,
        "rounds_ms": per_round,
        "load_average": {"before": load_before, "after": list(os.getloadavg())},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "previous_latency_ms": {r["label"]: r["latency_ms"] for r in res["rows"] if r["label"] in per_round},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="starting model: NAME, NAME:CKPT or a pruned folder")
    p.add_argument("--merge", nargs="+", type=Path, metavar="PART", help="join sweep parts' JSON files")
    p.add_argument("--retime", action="store_true", help="measure the encoder latencies of --json again")
    p.add_argument("--ratios", default="0.25,0.5,0.625,0.75")
    p.add_argument("--importances", default="disturbed-taylor")
    p.add_argument("--recovery-steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=3e-4, help="recovery learning rate")
    p.add_argument("--teacher-cache", default="", help="folder of cached teacher embeddings, shared by parts")
    p.add_argument("--references", default="", help="comma-separated official variants of the family")
    p.add_argument("--held-out", type=int, default=200)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1, help="--retime: rounds, the models built afresh for each")
    p.add_argument("--json", type=Path, default=RESULT)
    p.add_argument("--plot", type=Path, default=PLOT)
    args = p.parse_args(argv)
    if args.merge:
        res = merge([json.loads(path.read_text()) for path in args.merge])
        res["merged_by"] = "python -m benchmarks.pruning --merge " + " ".join(map(str, args.merge))
        write_json(args.json, res)
        plots(res, args.plot)
        return 0
    if args.retime:
        torch.set_num_threads(1)
        res = retime(json.loads(args.json.read_text()), args.runs, rounds=args.rounds)
        res["retimed"]["command"] = "python -m benchmarks.pruning " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_json(args.json, res)
        plots(res, args.plot)
        return 0
    if not args.model:
        p.error("--model is required (or --merge, --retime)")
    torch.set_num_threads(1)
    sweep = Sweep(
        model=args.model,
        ratios=tuple(float(r) for r in args.ratios.split(",")),
        importances=tuple(args.importances.split(",")),
        prune={
            "recovery_steps": args.recovery_steps,
            "lr": args.lr,
            "recovery_data": "synth:4000:0:rich",
            "calib": "synth:16:0:rich",
        }
        | ({"teacher_cache": args.teacher_cache} if args.teacher_cache else {}),
        eval_data=f"synth:{args.held_out}:{EVAL_SEED}:rich",  # the default model's held-out set
        references=tuple(r for r in args.references.split(",") if r),
        reps=args.runs,
        warmup=3,
    )
    import tempfile

    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as d:
        res: dict[str, Any] = run_sweep(sweep, d, timing=True, log=print)
    from leansam.bench.timing import machine_fingerprint

    res["machine"] = machine_fingerprint("cpu").to_dict()
    res["load_average"] = {"before": load_before, "after": list(os.getloadavg())}
    res["command"] = "python -m benchmarks.pruning " + " ".join(argv if argv is not None else sys.argv[1:])
    res["start_weights_sha256"] = weights_sha256(args.model)
    write_json(args.json, res)
    plots(res, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
