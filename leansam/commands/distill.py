"""``leansam distill``: distil a teacher SAM into a student (MobileSAM / TinySAM / EdgeSAM / SAMI modes)."""

from __future__ import annotations

import argparse

from ..train.cli_args import add_dataclass_args, config_from_args
from .common import add_overwrite_arg, log


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..train.distill import MODES, DistillConfig

    p = sub.add_parser(
        "distill",
        help=f"distil a teacher into a student ({', '.join(MODES)})",
        description="--teacher NAME[:CKPT] --student ARCH --mode MODE. ARCH: a registry name, resnet:PRESET, "
        "resnet:{json}, tiny_vit:{json} or repvit:{json}. Resumes from OUT/last.pt; works under torchrun.",
    )
    add_dataclass_args(p, DistillConfig)
    add_overwrite_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..train.distill import DistillConfig, distill
    from ..train.runner import hold_run_folder

    cfg = config_from_args(DistillConfig, args)
    with hold_run_folder(cfg.out, args.overwrite):
        last = distill(cfg)
    log(
        f"done: {cfg.steps} steps ({cfg.mode}), last loss {last.get('loss', float('nan')):.4f}; student in {cfg.out}/model.pt"
    )
    return 0
