"""Pieces shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ..checkpoints import load_model
from ..models.sam import Sam
from ..registry import default_model_name, get_model_info


def log(msg: str) -> None:
    """Progress and timing lines go to stderr, keeping stdout for results."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def resolve_model_name(args: argparse.Namespace) -> str:
    name = args.model or default_model_name()
    get_model_info(name)  # raises UnknownModelError with suggestions
    return name


def model_from_args(args: argparse.Namespace, name: str) -> Sam:
    """Builds ``name`` with ``--checkpoint`` / the official or bundled weights, on ``--device``."""
    t = time.perf_counter()
    model, report = load_model(name, args.checkpoint, trust_pickle=args.trust_pickle)
    try:
        model = model.to(args.device)
    except (RuntimeError, AssertionError) as e:
        from ..io import InputError

        raise InputError(f"cannot use device {args.device!r}: {e}") from None
    detail = report.summary() if report else f"{name} (no weights)"
    log(f"{detail} in {time.perf_counter() - t:.2f} s")
    return model


def describe_checkpoint(args: argparse.Namespace, name: str) -> str:
    if args.checkpoint:
        return str(args.checkpoint)
    info = get_model_info(name)
    return info.weights.file_name if info.weights else "none"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
