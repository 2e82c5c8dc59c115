"""``leansam train``: promptable-segmentation training of a registered architecture from masks."""

from __future__ import annotations

import argparse

from ..train.cli_args import add_dataclass_args, config_from_args
from .common import add_overwrite_arg, log


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..train.train import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a registered architecture on masks (SAM's focal+dice, IoU head, correction clicks)",
        description="Promptable-segmentation training. Data: synth:N[:SEED], a COCO .json, or a folder "
        "(SA-1B layout or COCO set). Resumes from OUT/last.pt; works under torchrun (gloo on CPU).",
    )
    add_dataclass_args(p, TrainConfig)
    add_overwrite_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..train.runner import hold_run_folder
    from ..train.train import TrainConfig, train

    cfg = config_from_args(TrainConfig, args)
    with hold_run_folder(cfg.out, args.overwrite):
        last = train(cfg)
    log(
        f"done: {cfg.steps} steps, last loss {last.get('loss', float('nan')):.4f}; weights in {cfg.out}/model.pt"
    )
    return 0
