"""``leansam bench``: speed, size and compute of registered models, one protocol for all.

    leansam bench --models mobile_sam,efficientvit_sam_l0 --runs 5 --out bench_out
    leansam bench --models all --device cuda --dtype bf16 --out bench_gpu
    leansam bench --render bench_out/results.json --docs report.md   # no run: outputs again

Writes ``OUT/results.json`` (everything, with the machine fingerprint), ``results.csv``,
``results.md`` and, with matplotlib (``pip install 'leansam[plot]'``), ``latency_vs_prompts.png``
and ``throughput_vs_accuracy.png`` (when ``--accuracy`` results are given).
See :mod:`leansam.bench.protocol` for what is measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..io import InputError
from .common import add_overwrite_arg, log, positive_int, preflight_output


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return vals


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes HxW, e.g. 480x640, not {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"--size must be positive, not {text!r}")
    return h, w


def _name_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--checkpoint takes NAME=PATH, not {text!r}")
    return name, path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark models: params, MACs, memory, latency, throughput, segment-everything",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", default=None, help="comma-separated names or patterns, or 'all'")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--runs", type=positive_int, default=5, help="timed runs per latency (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls (default 1)")
    p.add_argument("--out", default="bench_out", help="output folder (default ./bench_out)")
    add_overwrite_arg(p)
    p.add_argument(
        "--prompts", type=_int_list, default=(1, 10, 20, 30, 40, 50), help="box counts of the decoder curve"
    )
    p.add_argument("--batches", type=_int_list, default=(1, 8), help="encoder batch sizes for throughput")
    p.add_argument("--grids", type=_int_list, default=(16, 32, 64), help="segment-everything points per side")
    p.add_argument("--strategies", default=None, help="segment-everything strategies (default: all)")
    p.add_argument("--no-everything", action="store_true", help="skip segment-everything")
    p.add_argument("--size", type=_size, default=(480, 640), help="test image HxW (default 480x640)")
    p.add_argument(
        "--weights",
        choices=("auto", "random", "official"),
        default="auto",
        help="auto: cached official checkpoint else random init (no download); random; official (downloads)",
    )
    p.add_argument(
        "--checkpoint",
        type=_name_path,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="weights for a model",
    )
    p.add_argument(
        "--counts-only", action="store_true", help="only parameters and MACs (no weights, no timing)"
    )
    p.add_argument("--no-interleave", action="store_true", help="time models one after another")
    p.add_argument("--no-memory", action="store_true", help="skip peak memory")
    p.add_argument(
        "--accuracy", action="append", default=[], metavar="RESULTS.json", help="`leansam eval` results"
    )
    p.add_argument("--no-plots", action="store_true", help="no PNG plots")
    p.add_argument(
        "--render", default=None, metavar="RESULTS.json", help="re-render outputs of an earlier run"
    )
    p.add_argument("--docs", default=None, metavar="MD", help="also write the docs section (markdown) here")


def _read_accuracy(paths: list[str]) -> tuple[dict[str, float], str]:
    acc: dict[str, float] = {}
    metric = "mIoU"
    for p in paths:
        path = Path(p)
        try:
            d = json.loads(path.read_text())
            metrics = d["metrics"]
            model = d["model"]
        except FileNotFoundError:
            raise InputError(f"accuracy file not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"{path} is not a `leansam eval` results.json (needs 'model' and 'metrics')"
            ) from None
        if metrics.get("mIoU") is not None:
            acc[model], metric = float(metrics["mIoU"]), f"mIoU ({d.get('prompt', '')} prompt)"
        elif metrics.get("AP") is not None:
            acc[model], metric = float(metrics["AP"]), "mask AP"
        else:
            raise InputError(f"{path} has neither mIoU nor AP")
    return acc, metric


def run(args: argparse.Namespace) -> int:
    from ..bench.protocol import BenchConfig, run_benchmark
    from ..bench.report import OWNED, render_markdown, write_outputs
    from ..outputs import check_output_file

    if args.docs:
        check_output_file(args.docs)
    if args.render:
        path = Path(args.render)
        try:
            result = json.loads(path.read_text())
            result["models"]
        except FileNotFoundError:
            raise InputError(f"no such file: {path}") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{path} is not a `leansam bench` results.json") from None
    else:
        if not args.models:
            raise InputError("--models is required (names, patterns or 'all'), or --render RESULTS.json")
        preflight_output(args, OWNED)
        acc, metric = _read_accuracy(args.accuracy)
        try:
            config = BenchConfig(
                device=args.device,
                dtype=args.dtype,
                threads=args.threads,
                runs=args.runs,
                warmup=args.warmup,
                prompt_counts=args.prompts,
                throughput_batches=args.batches,
                everything_grids=() if args.no_everything else args.grids,
                everything_strategies=tuple(s.strip() for s in args.strategies.split(","))
                if args.strategies
                else None,
                image_size=args.size,
                weights=args.weights,
                checkpoints=dict(args.checkpoint),
                interleave=not args.no_interleave,
                measure_memory=not args.no_memory,
                accuracy=acc,
                accuracy_metric=metric,
                counts_only=args.counts_only,
            )
            result = run_benchmark(args.models, config, progress=True)
        except ValueError as e:
            raise InputError(str(e)) from None
    for w in write_outputs(result, args.out, plots=not args.no_plots, overwrite=args.overwrite):
        log(f"warning: {w}")
    if args.docs:
        from ..io import atomic_path

        with atomic_path(args.docs) as tmp:
            tmp.write_text(render_markdown(result))
        log(f"docs section written to {args.docs}")
    d = result if isinstance(result, dict) else result.to_dict()
    for m in d["models"]:
        enc = (m.get("encoder_latency") or {}).get("median_s")
        seg = (m.get("segany_latency") or {}).get("median_s")
        macs = (m.get("macs") or {}).get("image_encoder")
        params = (m.get("params") or {}).get("total")
        line = (
            f"{m['name']}: {params / 1e6:.2f} M params, encoder {macs / 1e9:.1f} GMACs"
            if macs and params
            else m["name"]
        )
        if enc and seg:
            line += f"; encoder {enc * 1000:.0f} ms, one-box SegAny {seg * 1000:.0f} ms ({m['weights']})"
        if m.get("errors"):
            line += f"; errors in {', '.join(m['errors'])}"
        log(line)
    log(f"results written to {args.out}/results.json, .csv, .md")
    return 0
