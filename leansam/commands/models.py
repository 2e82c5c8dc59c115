"""``leansam models``: the registry as a table (or JSON)."""

from __future__ import annotations

import argparse
import json

from ..checkpoints import checkpoint_path, is_cached
from ..registry import get_model_info, list_models
from ..video.config import can_track


def _row(name: str) -> dict:
    info = get_model_info(name)
    w = info.weights
    if w is None:
        cached = "-"
    elif w.url.startswith("package://"):
        cached = "bundled"
    else:
        cached = "yes" if is_cached(info) else "no"
    return {
        "name": name,
        "family": info.family,
        "params": info.n_params,
        "input": info.input_size,
        "license": w.license if w else "-",
        "cached": cached,
        "sha256": (w.sha256 or "not published") if w else "-",
        "url": w.url if w else "",
        "path": str(checkpoint_path(info)) if w else "",
        "source": w.source if w else "",
        "paper": w.paper if w else "",
        "description": info.description,
        "track": can_track(name),
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. '*sam*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    rows = [_row(n) for n in list_models(args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = [
        ("name", 22),
        ("family", 12),
        ("params", 12),
        ("input", 6),
        ("license", 22),
        ("cached", 8),
        ("track", 6),
    ]
    print("  ".join(f"{c:<{n}}" for c, n in cols) + "  description")
    for r in rows:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "?"
        track = "yes" if r["track"] else "-"
        vals = [r["name"], r["family"], params, str(r["input"]), r["license"], r["cached"], track]
        print("  ".join(f"{v:<{n}}" for v, (_, n) in zip(vals, cols)) + f"  {r['description']}")
    unverified = [r["name"] for r in rows if r["sha256"] == "not published"]
    if unverified:
        print(f"\nno published sha256 (loaded without a hash check): {', '.join(unverified)}")
    return 0
