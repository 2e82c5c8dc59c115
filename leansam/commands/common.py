"""Pieces shared by the CLI commands."""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from ..checkpoints import load_model
from ..io import DEFAULT_MAX_PIXELS, InputError, open_image
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


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: let ``--out`` replace files of the output names that leansam did not write."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out with the output names even if leansam did not write them "
        "(other files are never touched)",
    )


def preflight_output(args: argparse.Namespace, owned_patterns: tuple[str, ...]) -> None:
    """Refuses ``--out`` before any work (see :class:`leansam.outputs.OutputDir`; nothing is created)."""
    from ..outputs import OutputDir

    OutputDir(args.out, overwrite=args.overwrite, owned_patterns=owned_patterns).discard()


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


# --- video prompts (`leansam track`, `leansam compare --video`) ------------------------------
# ``--box F:X0,Y0,X1,Y1[:OBJ]``, ``--point F:X,Y[,LABEL][:OBJ]``, ``--mask F:PNG[:OBJ]`` name their frame F
# and object OBJ (1 when omitted); coordinates are video pixels.


def _split(text: str, flag: str) -> tuple[int, str, int]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{flag} takes F:VALUE[:OBJ], not {text!r}")
    try:
        frame, obj = int(parts[0]), int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{flag}: frame and object id must be integers in {text!r}"
        ) from None
    if frame < 0:
        raise argparse.ArgumentTypeError(f"{flag}: frame must be >= 0 in {text!r}")
    return frame, parts[1], obj


def _box(text: str) -> tuple[int, tuple, int]:
    frame, value, obj = _split(text, "--box")
    return frame, parse_box(value), obj


def _point(text: str) -> tuple[int, tuple, int]:
    frame, value, obj = _split(text, "--point")
    return frame, parse_point(value), obj


def _mask(text: str) -> tuple[int, str, int]:
    return _split(text, "--mask")


def add_prompt_args(p: argparse.ArgumentParser) -> None:
    """Adds ``--box``, ``--point``, ``--mask`` (repeatable) and ``--reverse``."""
    p.add_argument("--box", type=_box, action="append", default=[], metavar="F:X0,Y0,X1,Y1[:OBJ]")
    p.add_argument("--point", type=_point, action="append", default=[], metavar="F:X,Y[,LABEL][:OBJ]")
    p.add_argument("--mask", type=_mask, action="append", default=[], metavar="F:PNG[:OBJ]")
    p.add_argument("--reverse", action="store_true", help="track backwards from the last prompted frame")


def _read_mask(png: str, h: int, w: int) -> np.ndarray:
    with open_image(png) as im:
        try:
            mask = np.asarray(im.convert("L")) > 0
        except Exception as e:  # corrupt data, in whichever way the decoder notices
            raise InputError(f"cannot read mask {png}: {e}") from None
    if mask.shape != (h, w):
        raise InputError(f"mask {png} is {mask.shape[1]}x{mask.shape[0]}, the video is {w}x{h}")
    return mask


def prompts_from_args(args: argparse.Namespace, h: int, w: int, n_frames: int | None) -> dict[int, list]:
    """frame -> [:class:`~leansam.video.stream.Prompt`]: clicks of one object on one frame merged,
    masks read and size-checked against the H x W video; InputError for prompts past the end."""
    from ..video.stream import Prompt

    merged: dict[tuple[int, int], dict] = {}
    for frame, box, obj in args.box:
        merged.setdefault((frame, obj), {})["box"] = box
    for frame, (x, y, label), obj in args.point:
        d = merged.setdefault((frame, obj), {})
        d.setdefault("points", []).append((x, y))
        d.setdefault("labels", []).append(label)
    for frame, png, obj in args.mask:
        merged.setdefault((frame, obj), {})["mask"] = _read_mask(png, h, w)
    if not merged:
        raise InputError("give at least one prompt (--box, --point or --mask)")
    out: dict[int, list] = {}
    for (frame, obj), d in sorted(merged.items()):
        if n_frames is not None and frame >= n_frames:
            raise InputError(
                f"a prompt is on frame {frame}, the video has {n_frames} frames (0..{n_frames - 1})"
            )
        if "mask" in d and len(d) > 1:
            raise InputError(f"object {obj} on frame {frame}: a mask cannot be combined with points or a box")
        out.setdefault(frame, []).append(Prompt(obj, **d))
    return out
