"""The ``leansam`` command line: a thin layer over the library.

Every command reports bad input as one line ``error: ...`` on stderr and exits
with status 2, without a traceback and without writing partial outputs; a file-system
failure (full disk, read-only folder) is one ``error:`` line with status 1; SIGINT
(status 130) and SIGTERM (status 143) clean up the same way.
Progress and timings go to stderr; results go to files (or stdout for listings).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .io import InputError, one_line

EXIT_USAGE = 2
#: The file system refused a write or read (full disk, read-only folder, permissions).
EXIT_OS = 1


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one ``error:`` line (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


# Subcommand modules under leansam/commands/: each defines ``add_parser(subparsers)`` and
# ``run(args) -> int``. Listed explicitly (no import side effects, fixed help order).
COMMANDS: tuple[str, ...] = (
    "segment",
    "everything",
    "models",
    "bench",
    "eval",
    "data",
    "train",
    "distill",
    "export",
    "quantize",
    "prune",
    "compress",
    "compare",
    "track",
    "serve",
)


def _command_modules() -> dict:
    import importlib

    # A missing module raises: a typo here must not make a command vanish.
    return {name: importlib.import_module(f"leansam.commands.{name}") for name in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="leansam", description="Fast Segment Anything: every efficient SAM variant, one API."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for mod in _command_modules().values():
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors and --help: return the status instead of exiting
        return int(e.code or 0)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .checkpoints import CheckpointError
    from .outputs import OutputError
    from .registry import UnknownModelError

    start = time.perf_counter()
    previous = _handle_sigterm()
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return _command_modules()[args.command].run(args)
    except OutputError as e:
        sys.stderr.write(f"error: {one_line(e)}\n")
        return EXIT_OS
    except (InputError, CheckpointError, UnknownModelError) as e:
        sys.stderr.write(f"error: {one_line(e)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        sys.stderr.write(
            f"error: {what} after {time.perf_counter() - start:.1f} s; no output was left half-written\n"
        )
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:  # the file system refused (full disk, read-only, permissions): no traceback
        where = f" ({e.filename})" if e.filename else ""
        sys.stderr.write(f"error: {e.strerror or one_line(e)}{where}; the command stopped\n")
        return EXIT_OS
    finally:
        _restore_sigterm(previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and ``except BaseException`` cleans up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _handle_sigterm() -> object:
    """Installs the SIGTERM handler (main thread only); returns the previous one."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm(previous: object) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
