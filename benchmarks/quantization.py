"""Int8 post-training quantization: encoder speed against fp32 eager, and the fidelity gate.

    python -m benchmarks.quantization [--models leansam_tiny,mobile_sam,efficientvit_sam_l0]
        [--runs 7] [--threads 1,2] [--calib-count 8] [--held-out 100] [--json docs/results/quantization.json]

1. Calibration images: ``leansam data synth --n 16 --seed 7`` (the generator's default settings,
   not the style the bundled model trained on; its held-out set uses seed 1000, so no image is
   shared); the first ``--calib-count`` are used.
2. For each model: the fp32 model as ``leansam.build_model`` gives it (the reference: PyTorch
   eager, BatchNorm unfolded), the same with BatchNorm folded (context: how much of the gain is
   folding alone), and the TinySAM-recipe int8 model (``leansam.compress.quantize_``, real oneDNN
   int8 kernels); ONNX Runtime rows (fp32 export, int8 static QDQ per-channel, int8 dynamic) when
   ``leansam.export`` and onnxruntime are installed. All encoders run on the preprocessed first
   calibration image, timed in alternation (A B C A B C ...) for each thread count.
3. Fidelity of the bundled ``leansam_tiny``: box / centre-click mIoU against ground truth on its
   held-out synthetic set (docs/training.md protocol) for fp32 and int8, and the fidelity gate
   (``leansam.fidelity``) of int8 against fp32 on the first 20 held-out images.

Weights: ``leansam_tiny`` uses its bundled trained weights; ``mobile_sam`` and ``efficientvit_sam_l0``
use random initialisation (official checkpoints cannot be downloaded here; speed does not depend
on weight values, and for them only the embedding cosine similarity is reported, as a sanity check).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import leansam
from benchmarks.weights import record_bundled, stale_note, weights_sha256
from leansam.bench.timing import Timing, machine_fingerprint, measure_interleaved
from leansam.io import write_json

RESULT = Path("docs/results/quantization.json")
MODELS = ("leansam_tiny", "mobile_sam", "efficientvit_sam_l0")
CALIB_SEED = 7
GATE = {"min_box_iou": 0.95, "min_point_iou": 0.90, "min_cosine": 0.99, "min_everything_miou": 0.80}
#: segment-everything filters under which the weak bundled model produces masks at all
WEAK_EVERYTHING = {"everything_iou_thresh": 0.4, "everything_stability_thresh": 0.3, "points_per_side": 16}


def _build(name: str) -> leansam.Sam:
    if name == "leansam_tiny":
        return leansam.build_model(name)
    torch.manual_seed(0)
    return leansam.build_model(name, pretrained=False)


def _folded(model: leansam.Sam) -> leansam.Sam:
    from leansam.compress.ptq import prepare_float

    m = copy.deepcopy(model)
    prepare_float(m)
    return m


def _ort_variants(name: str, model: leansam.Sam, calib: Any, tmp: Path, log: Any) -> tuple[dict, dict, str]:
    """ONNX Runtime encoders {label: callable(x)} and their info, or ({}, {}, why not)."""
    try:
        from leansam.compress.ort import ort_encoder_variants
    except ImportError as e:
        return {}, {}, f"ONNX Runtime rows not measured: {e}"
    try:
        return ort_encoder_variants(name, model, calib, tmp, log=log)
    except ImportError as e:
        return {}, {}, f"ONNX Runtime rows not measured: {e}"


def _cpu_interleaved(fns: dict[str, Any], runs: int, warmup: int = 1) -> dict[str, Timing]:
    """:func:`leansam.bench.timing.measure_interleaved` on the calling thread's CPU time."""
    return measure_interleaved(fns, runs, warmup, clock=time.thread_time)


def _held_out(n: int):
    """The first ``n`` images of the bundled model's held-out set (``leansam.train.recipe.held_out``)."""
    from leansam.train.recipe import held_out

    return held_out(n)


def _held_out_name(n: int) -> str:
    from leansam.train.recipe import EVAL_SEED

    return f"SynthSource({n}, seed={EVAL_SEED}, RICH_SYNTH)"


def _quantization_info(report: Any) -> dict[str, Any]:
    """What ``quantize_`` did, from its report: layer counts, what stayed fp32 and why, errors."""
    return {
        "layers_int8": len(report.layers),
        "conv": sum(r.kind == "conv" for r in report.layers),
        "linear": sum(r.kind == "linear" for r in report.layers),
        "kept_fp32": len(report.kept_float),
        "kept_reasons": sorted({r.split(" (")[0].split(":")[0] for r in report.kept_float.values()}),
        "fused": len(report.fused),
        "fusion_check": report.fusion_check,
        "layer_error_mean": float(np.mean([r.error_searched for r in report.layers])),
        "layer_error_minmax_mean": float(np.mean([r.error_minmax for r in report.layers])),
    }


def _time_at(fns: dict[str, Any], threads: int, runs: int) -> dict[str, Any]:
    """Every encoder of ``fns`` timed in alternation at ``threads`` threads, with ratios to fp32 eager."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        timing = measure_interleaved(fns, runs=runs, warmup=1)
    tt: dict[str, Any] = {k: v.to_dict() for k, v in timing.items()}
    ref = timing["fp32_eager"]
    tt["ratios"] = {k: v.median / ref.median for k, v in timing.items() if k != "fp32_eager"}
    tt["pair_ratios"] = {
        k: [a / b for a, b in zip(v.runs, ref.runs)] for k, v in timing.items() if k != "fp32_eager"
    }
    if threads == 1:
        # With one intra-op thread every kernel runs on the calling thread, so its CPU
        # time excludes the time other jobs of a shared machine held the core.
        with torch.inference_mode():
            cpu = _cpu_interleaved(fns, runs=runs, warmup=1)
        tt["cpu_time"] = {k: v.to_dict() for k, v in cpu.items()}
        tt["cpu_ratios"] = {
            k: v.median / cpu["fp32_eager"].median for k, v in cpu.items() if k != "fp32_eager"
        }
    return tt


def _fidelity(fp32: leansam.Sam, q: leansam.Sam, held_out: int, gate_images: int, say: Any) -> dict[str, Any]:
    """Held-out box / click mIoU of fp32 and int8 ``leansam_tiny`` and the fidelity gate between them."""
    from leansam.fidelity import CompareConfig, compare_models
    from leansam.train.evaluate import evaluate_gt

    source = _held_out(held_out)
    say(f"held-out evaluation on {held_out} images")
    ev = {"fp32": evaluate_gt(fp32, source), "int8": evaluate_gt(q, source)}
    imgs = [source[i].image for i in range(min(gate_images, held_out))]
    gate = compare_models(fp32, q, imgs, CompareConfig(**GATE, **WEAK_EVERYTHING))
    say(gate.table())
    keys = ("box_miou", "point_miou", "n_instances", "n_images")
    return {
        "weights_sha256": weights_sha256("leansam_tiny"),
        "held_out": _held_out_name(held_out),
        "fp32": {k: ev["fp32"][k] for k in keys},
        "int8": {k: ev["int8"][k] for k in keys},
        "gate_images": len(imgs),
        "gate": gate.to_dict(),
        "gate_table": gate.table(),
        "gate_passed": gate.passed,
    }


def run(
    models: tuple[str, ...] = MODELS,
    runs: int = 7,
    threads: tuple[int, ...] = (1, 2),
    calib_count: int = 8,
    held_out: int = 100,
    gate_images: int = 20,
    work_threads: int = 1,
    log: Any = None,
) -> dict:
    from leansam.compress import TinySamPTQConfig, load_calibration, quantize_
    from leansam.data.synth import generate

    say = log or (lambda m: sys.stderr.write(m + "\n"))
    res: dict[str, Any] = {"machine": machine_fingerprint().to_dict(), "models": {}, "threads": list(threads)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        generate(16, tmp / "calib", seed=CALIB_SEED)
        calib = load_calibration(tmp / "calib" / "images", calib_count)
        res["calibration"] = {
            "command": f"leansam data synth --n 16 --out calib --seed {CALIB_SEED}",
            "used": calib_count,
        }
        for name in models:
            say(f"== {name}")
            fp32 = _build(name)
            folded, q = _folded(fp32), copy.deepcopy(fp32)
            torch.set_num_threads(work_threads)
            t0 = time.perf_counter()
            report = quantize_(q, TinySamPTQConfig(num_calib=calib_count), calib)
            q_seconds = time.perf_counter() - t0
            say(report.summary())
            x = fp32.preprocess(calib.images[0])
            with torch.inference_mode():
                e_ref, e_q = fp32.encode_image(x).embed, q.encode_image(x).embed
            cos = float(torch.nn.functional.cosine_similarity(e_ref.flatten(), e_q.flatten(), dim=0))
            fns = {
                "fp32_eager": lambda m=fp32, x=x: m.image_encoder(x),
                "fp32_folded": lambda m=folded, x=x: m.image_encoder(x),
                "int8_pytorch": lambda m=q, x=x: m.image_encoder(x),
            }
            ort_fns, ort_info, ort_note = _ort_variants(name, fp32, calib, tmp / name, say)
            fns.update({label: (lambda fn=fn, x=x: fn(x)) for label, fn in ort_fns.items()})
            entry: dict[str, Any] = {
                "weights": "bundled (trained)" if name == "leansam_tiny" else "random init",
                "input": list(x.shape),
                "quantize_seconds": q_seconds,
                "quantization": _quantization_info(report),
                "embedding_cosine_int8_vs_fp32": cos,
                "ort": ort_info,
                "ort_note": ort_note,
                "timing": {},
            }
            for t in threads:
                tt = _time_at(fns, t, runs if name != "mobile_sam" else max(3, runs - 2))
                entry["timing"][str(t)] = tt
                say(
                    f"{name}, {t} thread(s): "
                    + ", ".join(f"{k} {tt[k]['median_s'] * 1000:.1f} ms" for k in fns)
                    + f"; int8/fp32 {tt['ratios']['int8_pytorch']:.3f}"
                )
            res["models"][name] = entry
            if name == "leansam_tiny":
                torch.set_num_threads(work_threads)
                res["fidelity"] = _fidelity(fp32, q, held_out, gate_images, say)
    return res


# ---------------------------------------------------------------------------------------------


def _oversubscribed(e: dict, t: str) -> bool:
    """A thread count whose fp32 run took over twice the 1-thread time: the machine's load, not the model."""
    one = e["timing"].get("1")
    return (
        t != "1"
        and one is not None
        and e["timing"][t]["fp32_eager"]["median_s"] > 2 * one["fp32_eager"]["median_s"]
    )


def targets(res: dict) -> list[dict]:
    """Issue #8's quantization targets as measured in ``res`` (oversubscribed thread counts are skipped)."""
    out = []
    for name, e in res["models"].items():
        for t, tt in e["timing"].items():
            if _oversubscribed(e, t):
                continue
            for label, what in (
                ("int8_pytorch", "PyTorch int8"),
                ("ort_int8_static", "ONNX Runtime int8 static"),
            ):
                if label not in tt["ratios"]:
                    continue
                r = tt["ratios"][label]
                measured = f"{r:.2f} (wall)"
                if "cpu_ratios" in tt:
                    measured += f", {tt['cpu_ratios'][label]:.2f} (thread CPU time)"
                out.append(
                    {
                        "target": f"{name} {what} encoder <= 0.5x PyTorch fp32 eager ({t} thread{'s' if t != '1' else ''})",
                        "measured": measured,
                        "met": r <= 0.5,
                    }
                )
    f = res.get("fidelity")
    if f:
        d = f["int8"]["box_miou"] - f["fp32"]["box_miou"]
        stale = stale_note("leansam_tiny", f.get("weights_sha256"))
        out.append(
            {
                "target": "leansam_tiny int8 box mIoU within 1 point of fp32 (held-out synthetic set)",
                "measured": f"{f['int8']['box_miou']:.3f} vs {f['fp32']['box_miou']:.3f} ({100 * d:+.2f} points)"
                + (" (earlier weights)" if stale else ""),
                "met": abs(d) <= 0.01 and stale is None,
            }
        )
    return out


def _ms(t: dict) -> str:
    return f"{t['median_s'] * 1000:.1f}"


SUMMARY_COLUMNS = (
    ("fp32_eager", "fp32 eager (reference)"),
    ("int8_pytorch", "int8 PyTorch (TinySAM recipe)"),
    ("ort_fp32", "ONNX Runtime fp32"),
    ("ort_int8_static", "ORT int8 static"),
    ("ort_int8_dynamic", "ORT int8 dynamic"),
)


def fidelity_lines(res: dict) -> list[str]:
    """The int8 model's held-out mIoU beside fp32's and the fidelity gate's table (empty without them)."""
    f = res.get("fidelity")
    if not f:
        return []
    d = f["int8"]["box_miou"] - f["fp32"]["box_miou"]
    dp = f["int8"]["point_miou"] - f["fp32"]["point_miou"]
    stale = stale_note("leansam_tiny", f.get("weights_sha256"))
    return [
        *(["", f"**Stale:** the fidelity rows were {stale}."] if stale else []),
        "",
        f"**Fidelity of `leansam_tiny` int8** on its held-out set ({f['held_out']}, "
        f"{f['fp32']['n_images']} images, {f['fp32']['n_instances']} instances; docs/training.md protocol):",
        "",
        "| | fp32 | int8 | difference |",
        "|---|---|---|---|",
        f"| mIoU, GT box | {f['fp32']['box_miou']:.4f} | {f['int8']['box_miou']:.4f} | {100 * d:+.2f} points |",
        f"| mIoU, centre click | {f['fp32']['point_miou']:.4f} | {f['int8']['point_miou']:.4f} | {100 * dp:+.2f} points |",
        "",
        f"Fidelity gate, int8 against fp32 on the first {f['gate_images']} held-out images "
        f"(`leansam.fidelity`, thresholds {', '.join(f'{k} {v}' for k, v in GATE.items())}; "
        f"segment-everything with {', '.join(f'{k} {v}' for k, v in WEAK_EVERYTHING.items())}): "
        f"**{'PASS' if f['gate_passed'] else 'FAIL'}**",
        "",
        f["gate_table"],
    ]


def summary(res: dict, threads: str = "1") -> str:
    """The encoder times at ``threads`` threads (wall and thread CPU time) and the targets: docs/compression.md."""
    head = [f"encoder, {threads} thread{'s' if threads != '1' else ''}", *(c for _, c in SUMMARY_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in res["models"].items():
        tt = e["timing"].get(threads)
        if tt is None:
            continue
        kinds = [("wall", tt, tt["ratios"])]
        if "cpu_time" in tt:
            kinds.append(("thread CPU time", tt["cpu_time"], tt["cpu_ratios"]))
        for kind, times, ratios in kinds:
            cells = [f"`{name}`, {kind}"]
            for key, _ in SUMMARY_COLUMNS:
                if key not in times:
                    cells.append("-")
                elif key == "fp32_eager":
                    cells.append(f"{_ms(times[key])} ms")
                else:
                    cells.append(f"{_ms(times[key])} ms ({ratios[key]:.2f}x)")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets (int8 encoder <= 0.5x leansam's PyTorch eager fp32 encoder):", ""]
    for t in targets(res):
        lines.append(f"* {t['target']}: {t['measured']}, **{'met' if t['met'] else 'not met'}**")
    return "\n".join(lines + fidelity_lines(res)) + "\n"


def _timing_rows(res: dict) -> list[str]:
    """Encoder times per model, thread count and clock, with ratios to fp32 eager."""
    lines: list[str] = []
    main_rows = ("fp32_eager", "fp32_folded", "int8_pytorch")
    for name, e in res["models"].items():
        for t, tt in e["timing"].items():
            kinds = [("wall", tt, tt["ratios"])]
            if "cpu_time" in tt:
                kinds.append(("thread CPU time", tt["cpu_time"], tt["cpu_ratios"]))
            for kind, times, r in kinds:
                others = ", ".join(
                    f"{k} {_ms(times[k])} ms ({r[k]:.2f}x)" for k in times if k not in main_rows and k in r
                )
                lines.append(
                    f"| {name} | {e['weights']} | {t} ({kind}) | {_ms(times['fp32_eager'])} ms | "
                    f"{_ms(times['fp32_folded'])} ms ({r['fp32_folded']:.2f}x) | {_ms(times['int8_pytorch'])} ms | "
                    f"**{r['int8_pytorch']:.2f}** | {others or '-'} |"
                )
    return lines


def _oversubscribed_notes(res: dict) -> list[str]:
    """A note for every thread count whose fp32 run measured the machine's load."""
    lines: list[str] = []
    for name, e in res["models"].items():
        one = e["timing"].get("1")
        for t, tt in e["timing"].items():
            if _oversubscribed(e, t):
                lines.append(
                    f"\n**{name}, {t} threads: oversubscribed.** The fp32 encoder took "
                    f"{tt['fp32_eager']['median_s'] / one['fp32_eager']['median_s']:.1f}x longer with {t} threads "
                    "than with one: the other jobs on this machine held the cores, and OpenMP threads "
                    "waiting for each other dominate. These rows measure the machine's load, not the "
                    "model; read the 1-thread rows (or re-run on a quiet machine)."
                )
    return lines


def _layer_rows(res: dict) -> list[str]:
    """The PyTorch int8 model of each model: layers, fusions, errors, cosine."""
    lines = [
        "",
        "| model | int8 layers (conv / linear) | kept fp32 | activations fused | layer error, searched (min-max) | embedding cosine int8 vs fp32 | quantize time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in res["models"].items():
        qd = e["quantization"]
        lines.append(
            f"| {name} | {qd['layers_int8']} ({qd['conv']} / {qd['linear']}) | {qd['kept_fp32']} "
            f"({'; '.join(qd['kept_reasons']) or '-'}) | {qd['fused']} (check: {qd['fusion_check']}) | "
            f"{qd['layer_error_mean']:.4f} ({qd['layer_error_minmax_mean']:.4f}) | "
            f"{e['embedding_cosine_int8_vs_fp32']:.5f} | {e['quantize_seconds']:.0f} s |"
        )
    return lines


def _ort_lines(res: dict) -> list[str]:
    """The ONNX Runtime encoders: what is int8 and how close they stay to PyTorch fp32."""
    lines: list[str] = []
    ort_rows = []
    for name, e in res["models"].items():
        for label, info in (e.get("ort") or {}).items():
            ops = info.get("ops", {})
            nq = ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0)
            integer = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()) if "Integer" in k)
            what = (
                "fp32 export"
                if label == "ort_fp32"
                else (f"{nq} activation quantizers" if nq else "nothing quantized")
            )
            ort_rows.append(
                f"| {name} | {label} | {what}{f' ({integer})' if integer else ''} | "
                f"{info.get('embedding_cosine_vs_pytorch_fp32', float('nan')):.5f} |"
            )
    if ort_rows:
        lines += [
            "",
            "ONNX Runtime encoders (`leansam.compress.ort`; export by `leansam.export.onnx`, quantized with "
            "onnxruntime's `quantize_static` (QDQ, per-channel, MinMax on the same calibration images) or "
            "`quantize_dynamic` (MatMul/Gemm)); sessions with as many intra-op threads as the row:",
            "",
            "| model | encoder | what is int8 | embedding cosine vs PyTorch fp32 |",
            "|---|---|---|---|",
            *ort_rows,
        ]
    return lines


def render(res: dict) -> str:
    """The docs section of one result of :func:`run`."""
    m = res["machine"]
    load = res.get("load_average") or {}
    load_txt = (
        f" Load average (1 min) {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end "
        "(a shared machine: other jobs ran alongside; ratios are of interleaved runs)."
        if load
        else ""
    )
    lines = [
        "## Int8 post-training quantization (issue #8)",
        "",
        "Command:",
        "",
        "```",
        res.get("command", "python -m benchmarks.quantization"),
        "```",
        "",
        *[
            f"`{name}` was measured by an earlier run (another load on this shared machine): `{cmd}`."
            for name, cmd in res.get("earlier", {}).items()
        ],
        *([""] if res.get("earlier") else []),
        f"Machine: `{m['cpu']}`, {m['cores']} cores, torch {m['torch']}.{load_txt} "
        f"Calibration: the first {res['calibration']['used']} images of `{res['calibration']['command']}`. "
        "Encoder input: the preprocessed first calibration image. Median of interleaved runs; "
        "ratio = median / median of fp32 eager in the same run (per-run pair ratios in the JSON).",
        "",
        "| model | weights | threads | fp32 eager (reference) | fp32, BN folded | int8 PyTorch (TinySAM recipe) | int8 / fp32 | "
        + "other rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += _timing_rows(res) + _oversubscribed_notes(res) + _layer_rows(res) + _ort_lines(res)
    notes = {e["ort_note"] for e in res["models"].values() if e.get("ort_note")}
    lines += [""] + [f"{n}" for n in sorted(notes)]
    lines += fidelity_lines(res)
    return "\n".join(lines) + "\n"


def keep_other_models(old: dict, new: dict) -> dict:
    """``new`` plus the models of ``old`` that ``new`` did not measure (their commands kept under
    ``earlier``), so one model can be measured again without re-running the others."""
    others = {k: v for k, v in old.get("models", {}).items() if k not in new["models"]}
    if not others:
        return new
    out = dict(new, models={**new["models"], **others})
    if "fidelity" not in new and "fidelity" in old:
        out["fidelity"] = old["fidelity"]
    earlier = {k: v for k, v in old.get("earlier", {}).items() if k in others}
    earlier.update({k: old.get("command", "unknown") for k in others if k not in earlier})
    out["earlier"] = earlier
    kept = {k: v for k, v in old.get("bundled_weights", {}).items() if k in others}
    out["bundled_weights"] = {**kept, **new.get("bundled_weights", {})}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to time with")
    ap.add_argument("--calib-count", type=int, default=8)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument(
        "--work-threads",
        type=int,
        default=1,
        help="torch threads for the untimed work (quantization, evaluation)",
    )
    ap.add_argument("--json", default=str(RESULT))
    args = ap.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    threads = tuple(int(t) for t in args.threads.split(",") if t)
    start = [round(v, 2) for v in os.getloadavg()]
    res = run(models, args.runs, threads, args.calib_count, args.held_out, work_threads=args.work_threads)
    res["load_average"] = {"start": start, "end": [round(v, 2) for v in os.getloadavg()]}
    res = record_bundled(res)
    res["command"] = (
        f"python -m benchmarks.quantization --models {','.join(models)} --runs {args.runs} "
        f"--threads {args.threads} --calib-count {args.calib_count} --held-out {args.held_out} "
        f"--work-threads {args.work_threads}"
    )
    if args.json and Path(args.json).is_file():
        res = keep_other_models(json.loads(Path(args.json).read_text()), res)
    if args.json:
        write_json(args.json, res)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
