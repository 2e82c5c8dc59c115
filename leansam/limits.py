"""Resource limits on untrusted input: every decoder and size-like option checks its cost first.

Each limit has a default and an environment variable that raises (or lowers) it; a refusal is an
:class:`~leansam.io.InputError` naming the limit, the estimate and how to raise it, raised before
anything large is allocated. The image pixel limit is ``--max-pixels`` (see :mod:`leansam.io`).

===============================  ==========  =============================================================
variable                         default     what it bounds
===============================  ==========  =============================================================
``LEANSAM_MAX_MEMORY``           8 GiB       estimated memory of one decode step: a polygon or RLE
                                             rasterised, the prompts and masks of ``everything`` options,
                                             the members of a checkpoint zip
``LEANSAM_MAX_JSON_BYTES``       4 GiB       size of a JSON file read (annotations, detections, boxes)
``LEANSAM_MAX_INFLATE_RATIO``    50          uncompressed / compressed size of one compressed zip member
===============================  ==========  =============================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .io import InputError

GIB = 1 << 30


@dataclass(frozen=True)
class Limit:
    """A limit: ``env`` overrides ``default``; ``unit`` is ``"bytes"`` or ``""`` (a plain number)."""

    env: str
    default: int
    unit: str
    what: str


MEMORY = Limit("LEANSAM_MAX_MEMORY", 8 * GIB, "bytes", "memory")
JSON_BYTES = Limit("LEANSAM_MAX_JSON_BYTES", 4 * GIB, "bytes", "JSON file size")
INFLATE_RATIO = Limit("LEANSAM_MAX_INFLATE_RATIO", 50, "", "zip inflate-ratio")
ALL: tuple[Limit, ...] = (MEMORY, JSON_BYTES, INFLATE_RATIO)

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def value(limit: Limit) -> int:
    """The limit in force: ``$ENV`` (an integer, optionally with a K/M/G/T suffix) or the default.

    Raises:
        InputError: the variable is set but is not a positive integer.
    """
    text = os.environ.get(limit.env, "").strip()
    if not text:
        return limit.default
    scale = 1
    if limit.unit == "bytes" and text[-1].lower() in _SUFFIXES:
        scale, text = _SUFFIXES[text[-1].lower()], text[:-1]
        text = text[:-1] if text.lower().endswith("i") else text
    try:
        v = int(text) * scale
    except ValueError:
        v = 0
    if v <= 0:
        raise InputError(
            f"{limit.env}={os.environ[limit.env]!r} is not a positive integer "
            f"({'bytes, e.g. 16G' if limit.unit == 'bytes' else 'e.g. 100'})"
        )
    return v


def fmt_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check(limit: Limit, estimate: float, what: str) -> None:
    """Raises :class:`InputError` when ``estimate`` exceeds the limit in force.

    ``what`` names the thing measured, e.g. ``"annotations[3].segmentation: the polygon"``.
    """
    cap = value(limit)
    if estimate <= cap:
        return
    shown = fmt_bytes if limit.unit == "bytes" else (lambda v: f"{v:g}")
    if limit.unit == "bytes" and estimate > 1 << 50:
        raise InputError(
            f"{what} needs more than 1 PiB, beyond any machine (the {limit.what} limit is "
            f"{shown(cap)}, {limit.env}); use smaller values"
        )
    raise InputError(
        f"{what} needs about {shown(estimate)}, above the {limit.what} limit of {shown(cap)} "
        f"({limit.env}); if that is expected and the machine has the memory, raise it, "
        f"e.g. {limit.env}={_suggest(limit, estimate)}"
    )


def _suggest(limit: Limit, estimate: float) -> str:
    if limit.unit != "bytes":
        return str(int(estimate) + 1)
    return f"{int(estimate // GIB) + 1}G"
