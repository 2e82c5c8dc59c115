"""Video prompts on the command line, shared by ``leansam track`` and ``leansam compare --video``.

``--box F:X0,Y0,X1,Y1[:OBJ]``, ``--point F:X,Y[,LABEL][:OBJ]`` and ``--mask F:PNG[:OBJ]`` name their
frame ``F`` and object ``OBJ`` (1 when omitted); coordinates are video pixels.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..io import InputError, open_image
from .common import parse_box, parse_point


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
