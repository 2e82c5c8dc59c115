"""Dataset inputs of ``leansam everything`` and ``leansam segment``: the engine options and the
dispatch to :mod:`leansam.batch` when the image argument is a folder, a glob or a list file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..commands.common import positive_int, resolve_model_name
from ..io import InputError

IMAGE_HELP = (
    "image file, or a dataset: a folder (recursive), a quoted glob ('imgs/**/*.jpg') or a list file "
    "(.txt, one path per line); datasets write shards of JSON Lines and coco.json (docs/datasets.md)"
)


def add_engine_args(p: argparse.ArgumentParser, shards: bool = True) -> None:
    """``--engine``, ``--address``, ``--workers`` and (with ``shards``) ``--shard-size``."""
    g = p.add_argument_group("engine" if not shards else "datasets (folder, glob or list file inputs)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: an actor pool on a Ray cluster (pip install 'leansam[ray]')",
    )
    g.add_argument(
        "--address",
        default=None,
        help="with --engine ray: the cluster (HOST:PORT or auto); default: start one",
    )
    g.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="with --engine ray: model replicas (default: one per CPU)",
    )
    g.add_argument("--shard-size", type=positive_int, default=16, help="images per output shard (default 16)")


def run_batch(args: argparse.Namespace, task: str, **spec: Any) -> int:
    """Runs ``task`` over the dataset ``args.image`` into ``args.out`` (see :mod:`leansam.batch`)."""
    from . import JobSpec, RunConfig, run_dataset

    if args.backend != "torch":
        raise InputError("dataset inputs run on --backend torch (ONNX Runtime takes one image at a time)")
    if args.engine != "ray" and (args.address or args.workers):
        raise InputError("--address and --workers need --engine ray")
    job = JobSpec(
        task=task,
        model=resolve_model_name(args),
        checkpoint=str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        trust_pickle=args.trust_pickle,
        device=args.device,
        threads=args.threads,
        max_pixels=args.max_pixels,
        **spec,
    )
    cfg = RunConfig(
        source=str(args.image),
        out=str(args.out),
        spec=job,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
    )
    run_dataset(cfg)
    return 0


def check_engine_args_unused(args: argparse.Namespace) -> None:
    """Refuses the dataset options with a single image."""
    if args.engine != "local" or args.address or args.workers:
        raise InputError(
            "--engine, --address and --workers are for dataset inputs (a folder, glob or list file)"
        )
