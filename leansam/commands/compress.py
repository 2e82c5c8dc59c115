"""``leansam compress``: a compression pipeline (distil -> prune -> quantize -> export) with fidelity gates.

    leansam compress --recipe recipe.yaml --out runs/compressed
    leansam compress --sweep sweep.yaml --out docs/results      # pruning Pareto report

The recipe format is in docs/pruning.md (and ``leansam.compress.recipe``): the starting model, the
gate images and default thresholds, and the steps. Each step's model is compared with the starting
model (``leansam compare``'s measures); the first failing gate stops the pipeline.

Exit status: 0 when every gate held, 1 when a gate failed (the report says which; an expected
outcome, not an error), 2 for bad input (nothing written).
"""

from __future__ import annotations

import argparse

from .common import add_overwrite_arg, log

EXIT_GATE_FAILED = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="compression pipeline (distil, prune, quantize, export) with a fidelity gate after each step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", help="pipeline recipe (YAML)")
    what.add_argument("--sweep", help="pruning sweep (YAML): Pareto report of latency vs mIoU")
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(p)
    p.add_argument("--no-timing", action="store_true", help="sweep: skip the latency measurement")


def run(args: argparse.Namespace) -> int:
    if args.sweep:
        from ..prune.sweep import load_sweep, run_sweep

        sweep = load_sweep(args.sweep)
        result = run_sweep(sweep, args.out, timing=not args.no_timing, log=log, overwrite=args.overwrite)
        log(f"wrote {len(result['rows'])} rows to {args.out}")
        return 0
    from ..compress.pipeline import report_markdown, run_recipe
    from ..compress.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    report = run_recipe(recipe, args.out, log=log, overwrite=args.overwrite)
    print(report_markdown(report))
    return 0 if report["passed"] else EXIT_GATE_FAILED
