"""The ``leansam`` command line: a thin layer over the library.

Every command reports bad input as one line ``error: ...`` on stderr and exits
with status 2, without a traceback and without writing partial outputs.
Progress and timings go to stderr; results go to files (or stdout for listings).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence

from .io import DEFAULT_MAX_PIXELS, InputError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one ``error:`` line (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


def _point(text: str) -> tuple[float, float, int]:
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


def _box(text: str) -> tuple[float, float, float, float]:
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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {v}")
    return v


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="registry name (`leansam models`); default: the bundled model")
    p.add_argument("--checkpoint", default=None, help="checkpoint file in the official format or .safetensors")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow checkpoints that are pickled Python objects (runs code from the file: trusted files only)",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")


def _add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (any format PIL reads; EXIF orientation is applied)")
    p.add_argument(
        "--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default 2^28)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leansam", description="Fast Segment Anything: every efficient SAM variant, one API.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("segment", help="promptable segmentation of one image (points and/or boxes)")
    _add_image_args(p)
    p.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y[,LABEL]")
    p.add_argument(
        "--box",
        type=_box,
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="one prompt per box (the points, if any, are added to each box)",
    )
    p.add_argument("--multimask", action="store_true", help="3 candidate masks per prompt instead of 1")
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    _add_model_args(p)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. '*sam*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    from .commands import models, segment

    return {"segment": segment.run, "models": models.run}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .checkpoints import CheckpointError
    from .registry import UnknownModelError

    start = time.perf_counter()
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return _commands()[args.command](args)
    except (InputError, CheckpointError, UnknownModelError) as e:
        sys.stderr.write(f"error: {_one_line(e)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"error: interrupted after {time.perf_counter() - start:.1f} s; nothing was written\n")
        return 130


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return " | ".join(line.strip() for line in text.splitlines()) if text else type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
