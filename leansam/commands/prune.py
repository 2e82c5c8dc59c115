"""``leansam prune``: structural pruning of the image encoder (SlimSAM), with recovery by distillation.

    leansam prune --model sam_vit_b --ratio 0.5 --out slim50
    leansam prune --model leansam_tiny_teacher:teacher.pt --ratio 0.5 --importance taylor \\
        --calib synth:64:7 --recovery-steps 2000 --out teacher_p50

Writes ``OUT/model.safetensors`` (weights + architecture in its metadata) and ``OUT/prune.json``;
the folder is a model: ``--model OUT`` (segment, everything, export, quantize),
``leansam.build_model("OUT")``, ``leansam compare --candidate OUT``. docs/pruning.md describes the method.
"""

from __future__ import annotations

import argparse

from ..io import InputError
from .common import add_overwrite_arg, log, positive_int, preflight_output


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..prune.importance import IMPORTANCES
    from ..prune.pruner import RECOVERY_MODES

    p = sub.add_parser(
        "prune",
        help="structural pruning of the image encoder (SlimSAM alternate slimming + distillation)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default=None, help="NAME, NAME:CKPT or a pruned model's folder (default: bundled)"
    )
    p.add_argument("--ratio", type=float, required=True, help="fraction of channels removed, in (0, 1)")
    p.add_argument("--importance", choices=IMPORTANCES, default="disturbed-taylor", help="channel importance")
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(p)
    p.add_argument(
        "--calib", default="synth:16:0", help="synth:N[:SEED], annotated data folder or image folder"
    )
    p.add_argument("--num-calib", type=positive_int, default=8, help="calibration images (default 8)")
    p.add_argument("--no-alternate", action="store_true", help="prune bottleneck and embedding dims at once")
    p.add_argument("--recovery-steps", type=int, default=0, help="distillation steps after each stage")
    p.add_argument("--recovery-mode", choices=RECOVERY_MODES, default="encoder", help="distillation loss")
    p.add_argument(
        "--recovery-data", default="synth:2000:0", help="distillation images (leansam distill --data)"
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="recovery batch size")
    p.add_argument("--lr", type=float, default=1e-4, help="recovery learning rate")
    p.add_argument(
        "--teacher-cache",
        default="",
        help="folder caching the teacher's embeddings across runs (default: none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where recovery runs")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow pickled checkpoints (trusted files only)"
    )
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def config_from_args(args: argparse.Namespace):
    from ..prune.pruner import PruneConfig

    try:
        return PruneConfig(
            ratio=args.ratio,
            importance=args.importance,
            calib=args.calib,
            num_calib=args.num_calib,
            alternate=not args.no_alternate,
            recovery_steps=args.recovery_steps,
            recovery_mode=args.recovery_mode,
            recovery_data=args.recovery_data,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            teacher_cache=args.teacher_cache,
        )
    except ValueError as e:
        raise InputError(f"--{str(e).replace('_', '-')}") from None


def run(args: argparse.Namespace) -> int:
    from ..prune.arch import OWNED, save_pruned
    from ..prune.pruner import load_model_spec, prune_model

    cfg = config_from_args(args)
    preflight_output(args, OWNED)
    teacher, spec = load_model_spec(args.model, args.trust_pickle, prunable=True)
    model, report = prune_model(teacher, spec, cfg, log=log)
    save_pruned(model, args.out, report, overwrite=args.overwrite)
    before, after = report["encoder_params_before"], report["encoder_params_after"]
    log(f"encoder parameters {before:,} -> {after:,} ({after / before:.1%}); wrote {args.out}")
    log(
        f"check it with: leansam compare --reference {spec.split(':')[0]} --candidate {args.out} --images DIR"
    )
    return 0
