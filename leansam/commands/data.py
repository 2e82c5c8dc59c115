"""``leansam data``: data-set utilities.

    leansam data synth --n 200 --out data/synth [--seed 0] [--workers 2] [--overwrite]

``synth`` writes a procedural COCO-format instance-segmentation set
(``OUT/images/*.jpg``, ``OUT/annotations.json``; see :mod:`leansam.data.synth`), ready for
``leansam eval --images OUT/images --annotations OUT/annotations.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io import InputError
from .common import log, positive_int


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data-set utilities (synthetic COCO data)")
    dsub = p.add_subparsers(dest="data_command", parser_class=type(p))
    s = dsub.add_parser("synth", help="generate a synthetic COCO-format instance-segmentation set")
    s.add_argument("--n", type=_non_negative_int, required=True, help="number of images")
    s.add_argument("--out", required=True, help="output folder (images/ and annotations.json)")
    s.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    s.add_argument("--workers", type=positive_int, default=1, help="processes rendering images (default 1)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an annotations.json in --out that leansam did not write (other files are never touched)",
    )


def run(args: argparse.Namespace) -> int:
    if getattr(args, "data_command", None) != "synth":
        raise InputError("missing data command: use `leansam data synth --n N --out DIR`")
    from ..data.synth import generate

    t = time.perf_counter()
    try:
        path = generate(args.n, args.out, seed=args.seed, overwrite=args.overwrite, workers=args.workers)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(str(e)) from None
    log(
        f"wrote {args.n} images to {Path(args.out) / 'images'} and annotations to {path} "
        f"in {time.perf_counter() - t:.1f} s"
    )
    return 0
