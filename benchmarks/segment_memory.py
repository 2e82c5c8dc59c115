"""Peak memory of ``leansam segment`` as a function of image size, up to 108 megapixels.

    python -m benchmarks.segment_memory [--megapixels 1,4,16,36,64,108] [--json docs/results/segment_memory.json]

For each size a JPEG of that many pixels (4:3, a smooth gradient with noise, quality 90) is written to a
temporary folder, then ``leansam segment IMAGE --box ... --max-pixels N`` runs in a fresh process with
the default (bundled) model. Its peak is the resident-set high-water mark of its own address space
(``VmHWM`` in /proc/self/status, read as the command returns): ``ru_maxrss`` from ``wait4`` would not
do, since at ``exec`` the kernel folds the high-water mark of the address space the child leaves
(the parent's, under vfork) into it. The decoded size is 3 bytes per pixel (H x W x 3 uint8); the
ratio is peak over decoded size, and the issue's target is below 3 at 108 megapixels. A
0.01-megapixel run gives the baseline of the process (interpreter, torch, model) that every peak
includes.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.weights import record_bundled
from leansam.bench.timing import machine_fingerprint
from leansam.io import write_json

RESULT = Path("docs/results/segment_memory.json")
MEGAPIXELS = (1.0, 4.0, 16.0, 36.0, 64.0, 108.0)
BASELINE_MP = 0.01
COMMAND = "python -m benchmarks.segment_memory --megapixels {megapixels}"
TARGET_RATIO = 3.0  # issue #16: a 108-megapixel image segments below 3x its decoded size


def _size(megapixels: float) -> tuple[int, int]:
    """(H, W) of a 4:3 image with about ``megapixels`` million pixels."""
    h = max(8, round(math.sqrt(megapixels * 1e6 * 3 / 4)))
    return h, max(8, round(h * 4 / 3))


def write_image(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    """A JPEG of about ``megapixels`` (built band by band to keep this process small); returns (H, W)."""
    h, w = _size(megapixels)
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h))
    band = max(1, (1 << 22) // w)
    x = np.linspace(0, 255, w, dtype=np.float32)
    for y0 in range(0, h, band):
        rows = min(band, h - y0)
        y = np.linspace(y0, y0 + rows - 1, rows, dtype=np.float32)[:, None] * 255 / h
        base = np.stack([x[None].repeat(rows, 0), y.repeat(w, 1), (x[None] + y) / 2], axis=2)
        noise = rng.integers(-12, 12, base.shape, dtype=np.int16)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        img.paste(Image.fromarray(arr), (0, y0))
    img.save(path, format="JPEG", quality=90)
    return h, w


#: ``leansam ARGS``, then the high-water mark of this process's own address space on stderr.
CHILD = """
import re, sys
from leansam.cli import main
code = main(sys.argv[1:])
hwm = re.search(r"^VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read(), re.M)
sys.stderr.write(f"\\npeak_rss_kib {hwm.group(1)}\\n")
sys.exit(code)
"""


def peak_rss(args: list[str], env: dict[str, str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``leansam ARGS`` run in a fresh process."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seconds = time.perf_counter() - t
    err = proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
    if proc.returncode != 0:
        raise RuntimeError(f"leansam {' '.join(args[:2])} ... failed ({proc.returncode}): {err[-1]}")
    kib = [int(line.split()[1]) for line in err if line.startswith("peak_rss_kib ")]
    return kib[-1] * 1024, seconds


def measure(megapixels: float, tmp: Path, threads: int) -> dict[str, Any]:
    """One size: writes the image, runs ``leansam segment`` on it, returns its row."""
    image = tmp / f"img_{megapixels:g}.jpg"
    h, w = write_image(image, megapixels)
    box = f"{w // 4},{h // 4},{3 * w // 4},{3 * h // 4}"
    args = ["segment", str(image), "--box", box]
    args += ["--max-pixels", str(h * w), "--out", str(tmp / f"out_{megapixels:g}"), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    peak, seconds = peak_rss(args, env)
    image.unlink()
    decoded = 3 * h * w
    return {
        "megapixels": h * w / 1e6,
        "height": h,
        "width": w,
        "decoded_bytes": decoded,
        "peak_rss_bytes": peak,
        "ratio": peak / decoded,
        "seconds": seconds,
    }


def run(megapixels: tuple[float, ...], threads: int = 1, out: Path | None = RESULT) -> dict[str, Any]:
    """Measures every size (and the baseline); writes ``out`` when given."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        base = measure(BASELINE_MP, Path(d), threads)
        for mp in megapixels:
            print(f"segment on {mp:g} Mpx ...", file=sys.stderr, flush=True)
            rows.append(measure(mp, Path(d), threads))
    result = {
        "command": COMMAND.format(megapixels=",".join(f"{m:g}" for m in megapixels)),
        "model": "leansam_tiny (the default, bundled weights)",
        "threads": threads,
        "baseline": base,
        "rows": rows,
        "machine": machine_fingerprint("cpu").to_dict(),
    }
    if out is not None:
        write_json(out, record_bundled(result))
    return result


def render(result: dict[str, Any]) -> str:
    """The Markdown section of docs/benchmarks.md."""
    base = result["baseline"]["peak_rss_bytes"]
    lines = [
        "## Memory of `leansam segment` by image size",
        "",
        f"`{result['command']}` ({result['model']}, {result['threads']} thread(s)): peak resident memory "
        f"of the whole process (high-water mark), including a baseline of {base / 2**20:.0f} MiB "
        f"(interpreter, torch and the model, measured on a {result['baseline']['megapixels']:.2f}-megapixel image).",
        "",
        "| megapixels | size (W x H) | decoded (MiB) | peak RSS (MiB) | peak / decoded | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['megapixels']:.1f} | {r['width']} x {r['height']} | {r['decoded_bytes'] / 2**20:.0f} | "
            f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['ratio']:.2f} | {r['seconds']:.1f} |"
        )
    for t in targets(result):
        verdict = "met" if t["met"] else "**not met**"
        lines += ["", f"Target (issue #16): {t['target']}: {t['measured']}, {verdict}."]
    return "\n".join(lines) + "\n"


def summary(result: dict[str, Any]) -> str:
    """One sentence for docs/security.md: the largest image measured, its peak and the target."""
    r = max(result["rows"], key=lambda r: r["megapixels"])
    met = "below" if r["ratio"] < TARGET_RATIO else "not below"
    return (
        f"`leansam segment` on a {r['megapixels']:.0f}-megapixel JPEG ({r['width']} x {r['height']}, "
        f"{r['decoded_bytes'] / 2**20:.0f} MiB decoded) peaked at {r['peak_rss_bytes'] / 2**20:.0f} MiB resident, "
        f"{r['ratio']:.2f}x its decoded size ({met} the {TARGET_RATIO:g}x target), the process's "
        f"{result['baseline']['peak_rss_bytes'] / 2**20:.0f} MiB baseline included "
        f"(`{result['command']}`, docs/benchmarks.md).\n"
    )


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's target: the largest image measured peaks below 3x its decoded size."""
    if not result["rows"]:
        return []
    r = max(result["rows"], key=lambda r: r["megapixels"])
    return [
        {
            "target": f"`segment` on {r['megapixels']:.0f} Mpx peaks below {TARGET_RATIO:g}x its decoded size",
            "measured": f"{r['ratio']:.2f}x",
            "met": r["ratio"] < TARGET_RATIO,
        }
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.segment_memory", description=__doc__.splitlines()[0]
    )
    p.add_argument("--megapixels", default=",".join(f"{m:g}" for m in MEGAPIXELS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=RESULT)
    args = p.parse_args(argv)
    sizes = tuple(float(m) for m in args.megapixels.split(",") if m)
    print(render(run(sizes, args.threads, out=args.json)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
