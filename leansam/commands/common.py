"""Pieces shared by the CLI commands."""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from ..checkpoints import load_model
from ..io import DEFAULT_MAX_PIXELS
from ..models.sam import Sam
from ..registry import default_model_name, get_model_info


def parse_point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--point takes X,Y or X,Y,LABEL, not {text!r}")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"--point takes numbers X,Y[,LABEL], not {text!r}") from None
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be 1 (foreground) or 0 (background), not {label}")
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"point coordinates must be finite numbers, not {text!r}")
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box takes numbers X0,Y0,X1,Y1, not {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"--box takes X0,Y0,X1,Y1, not {text!r}")
    if not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"box coordinates must be finite numbers, not {text!r}")
    x0, y0, x1, y1 = vals
    if x1 <= x0 or y1 <= y0:
        raise argparse.ArgumentTypeError(f"box {text!r} is empty: need X0 < X1 and Y0 < Y1")
    return x0, y0, x1, y1


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {v}")
    return v


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="registry name (`leansam models`) or a pruned model's folder; default: the bundled model",
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint file in the official format or .safetensors"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow checkpoints that are pickled Python objects (runs code from the file: trusted files only)",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def add_image_args(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("image", help=help or "image file (any format PIL reads; EXIF orientation is applied)")
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse larger images (default 2^28)",
    )


def log(msg: str) -> None:
    """Progress and timing lines go to stderr, keeping stdout for results."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def resolve_model_name(args: argparse.Namespace) -> str:
    """The registry name of ``--model`` (a pruned model's path sets ``args.checkpoint`` to it)."""
    from ..prune.arch import resolve_spec

    name, args.checkpoint = resolve_spec(args.model, getattr(args, "checkpoint", None))
    name = name or default_model_name()
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
