"""``leansam serve``: the interactive segmentation web app and its HTTP API."""

from __future__ import annotations

import argparse
import socket
import sys

from ..io import InputError
from .common import positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port takes a number 1-65535, not {text!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port takes a number 1-65535, not {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="interactive segmentation web app and HTTP API (FastAPI)")
    p.add_argument("--model", default=None, help="default model (`leansam models`); default: the bundled one")
    p.add_argument("--images", default=None, metavar="DIR", help="folder of images the app may open")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument(
        "--max-upload-mb", type=positive_int, default=32, help="largest request body (default 32 MB)"
    )
    p.add_argument(
        "--max-pixels", type=positive_int, default=1 << 26, help="refuse larger images (default 2^26)"
    )
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    from ..serve import require_serve_deps

    try:
        require_serve_deps()
    except ImportError as e:
        raise InputError(str(e)) from None
    import uvicorn

    from ..serve.app import ServeConfig, create_app

    app = create_app(
        ServeConfig(
            model=args.model,
            images=args.images,
            device=args.device,
            max_upload_bytes=args.max_upload_mb << 20,
            max_pixels=args.max_pixels,
        )
    )
    _check_port_free(args.host, args.port)
    lm = app.state.pool.get(None, allow_download=True)  # now: missing weights fail before listening
    if args.host not in LOOPBACK:
        sys.stderr.write(
            f"warning: listening on {args.host}: anyone who can reach this port can use the app\n"
        )
    sys.stderr.write(f"leansam serve: {lm.name} on http://{args.host}:{args.port}/ (API docs at /docs)\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
