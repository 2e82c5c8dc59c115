"""Peak memory of tracking a video as it grows: 32 against 256 frames, leansam's stream vs the official predictor.

    python -m benchmarks.video_memory [--model sam2.1_hiera_tiny] [--frames 32,256] [--threads 2]
        [--json docs/results/video_memory.json]

Each measurement runs in a fresh process (``--child``) and reports its resident-set high-water mark
(``VmHWM``) after tracking one box from frame 0 through a folder of JPEG frames of the generated clip
of :mod:`benchmarks.video_speed` (480 x 640): leansam through its CLI, ``leansam track FOLDER --stream``
(frames read one at a time, masks.jsonl and overlay.mp4 written as frames are tracked), and the official
``SAM2VideoPredictor`` (``init_state`` on the folder, then ``propagate_in_video``; it has no streaming
mode). Seeded random weights of the official model, written as an official checkpoint for leansam.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from leansam.bench.memory import _status_kib
from leansam.bench.timing import machine_fingerprint
from leansam.io import write_json

from .video_speed import (
    BOX,
    OFFICIAL_CONFIGS,
    official_predictor,
    track,
    write_clip,
)

RESULT = Path("docs/results/video_memory.json")
COMMAND = "python -m benchmarks.video_memory --model {model} --frames {frames} --threads {threads} --sides {sides}{extra}"
SIDES = ("leansam", "official")
TARGET = 1.1  # issue #15: the longest streaming run's peak <= 1.1 x the shortest one's


def child(side: str, model: str, frames: int, folder: str, checkpoint: str) -> dict:
    """Tracks in this process; returns the peak resident memory in bytes."""
    if side == "leansam":
        from leansam.cli import main as cli

        with tempfile.TemporaryDirectory() as tmp:
            box = ",".join(str(v) for v in BOX)
            args = ["track", folder, "--model", model, "--checkpoint", checkpoint, "--box", f"0:{box}"]
            if cli([*args, "--out", str(Path(tmp) / "out"), "--stream"]) != 0:
                raise RuntimeError("leansam track failed")
            n = len((Path(tmp) / "out" / "masks.jsonl").read_text().splitlines())
    else:
        n = track(official_predictor(model), Path(folder))
    if n != frames:
        raise RuntimeError(f"{side} tracked {n} frames, not {frames}")
    return {"peak_bytes": (_status_kib("VmHWM") or 0) * 1024, "frames": n}


def _measure(side: str, model: str, frames: int, folder: Path, checkpoint: Path, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.video_memory", "--child", side, "--model", model]
    cmd += ["--frames", str(frames), "--folder", str(folder), "--checkpoint", str(checkpoint)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} {frames} frames failed: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    model: str,
    lengths: tuple[int, ...],
    threads: int,
    out: Path | None = RESULT,
    sides: tuple[str, ...] = SIDES,
    official_max_frames: int | None = None,
    resume: bool = False,
) -> dict:
    """Peak memory per side and clip length (``sides``: a subset of :data:`SIDES`). The official side
    runs only on clips of at most ``official_max_frames`` frames (it takes seconds per frame).

    ``out`` is rewritten after every measurement (``"complete": false`` until the last), so a long
    run that is stopped keeps what it measured; ``resume`` skips the measurements that ``out``
    already holds for the same model and threads.
    """
    if model not in OFFICIAL_CONFIGS:
        raise SystemExit(f"error: {model}: no official checkpoint can be built here (SAM 2 models only)")
    res = {
        "command": COMMAND.format(
            model=model,
            frames=",".join(map(str, lengths)),
            threads=threads,
            sides=",".join(sides),
            extra=f" --official-max-frames {official_max_frames}" if official_max_frames else "",
        ),
        "machine": machine_fingerprint().__dict__,
        "load_average": {"before": list(os.getloadavg()), "after": None},
        "model": model,
        "threads": threads,
        "lengths": list(lengths),
        "sides": {s: {} for s in sides},
        "complete": False,
    }
    if resume and out is not None and out.is_file():
        old = json.loads(out.read_text())
        if old.get("model") == model and old.get("threads") == threads:
            for side in sides:
                res["sides"][side].update(old.get("sides", {}).get(side, {}))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / f"{model}.pt"
        torch.save({"model": official_predictor(model).state_dict()}, checkpoint)
        folder = write_clip(Path(tmp) / "clip", max(lengths))
        for n in lengths:
            sub = Path(tmp) / f"clip{n}"
            sub.mkdir()
            for t in range(n):
                os.link(folder / f"{t:05d}.jpg", sub / f"{t:05d}.jpg")
            for side in sides:  # alternated per length
                if side == "official" and official_max_frames is not None and n > official_max_frames:
                    continue
                if str(n) in res["sides"][side]:
                    continue
                res["sides"][side][str(n)] = _measure(side, model, n, sub, checkpoint, threads)
                res["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
                if out is not None:
                    write_json(out, res)
    res["load_average"]["after"] = list(os.getloadavg())
    res["complete"] = True
    if out is not None:
        write_json(out, res)
    return res


def _growth(res: dict, side: str) -> float | None:
    """Peak at the longest clip this side ran over the peak at the shortest (None below 2 clips)."""
    row = res["sides"][side]
    if len(row) < 2:
        return None
    lo, hi = (str(n) for n in (min(map(int, row)), max(map(int, row))))
    return row[hi]["peak_bytes"] / row[lo]["peak_bytes"]


def targets(res: dict) -> list[dict]:
    """leansam's streaming peak at the longest clip <= TARGET x the shortest (once both are measured)."""
    row = res["sides"].get("leansam", {})
    g = _growth(res, "leansam")
    if g is None:
        return []
    lo, hi = min(map(int, row)), max(map(int, row))
    longest = max(res["lengths"])
    if hi < longest:  # an incomplete run says so instead of judging a shorter clip
        return [
            {
                "target": f"streaming peak memory at {longest} frames <= {TARGET}x at {lo} frames ({res['model']})",
                "measured": f"not measured yet ({hi} frames: {g:.2f}x)",
                "met": False,
            }
        ]
    return [
        {
            "target": f"streaming peak memory at {hi} frames <= {TARGET}x at {lo} frames ({res['model']})",
            "measured": f"{g:.2f}x",
            "met": g <= TARGET,
        }
    ]


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        "## Video tracking memory",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Command: `{res['command']}`. Peak resident memory "
        "(VmHWM) of a fresh process per run."
        + ("" if res.get("complete", True) else " **Incomplete run: the missing cells were not measured.**"),
        "",
        "| side | " + " | ".join(f"{n} frames (MiB)" for n in res["lengths"]) + " | longest / shortest |",
        "|---|" + "---|" * (len(res["lengths"]) + 1),
    ]
    for side, row in res["sides"].items():
        cells = [f"{row[str(n)]['peak_bytes'] / 2**20:.0f}" if str(n) in row else "-" for n in res["lengths"]]
        g = _growth(res, side)
        lines.append(f"| {side} | " + " | ".join(cells) + (f" | {g:.2f}x |" if g is not None else " | - |"))
    lines += ["", "Targets:", ""]
    for tg in targets(res):
        lines.append(f"* {tg['target']}: {tg['measured']} — {'met' if tg['met'] else '**not met**'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video_memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--frames", default="32,256", help="comma-separated clip lengths")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULT)
    p.add_argument("--sides", default=",".join(SIDES), help="comma-separated: leansam, official")
    p.add_argument(
        "--official-max-frames", type=int, default=None, help="run the official side on shorter clips only"
    )
    p.add_argument("--resume", action="store_true", help="keep the measurements already in --json")
    p.add_argument("--child", choices=("leansam", "official"), help=argparse.SUPPRESS)
    p.add_argument("--folder", default="", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.model, int(args.frames), args.folder, args.checkpoint)))
        return 0
    lengths = tuple(int(n) for n in args.frames.split(",") if n)
    sides = tuple(s for s in args.sides.split(",") if s)
    if not sides or any(s not in SIDES for s in sides):
        p.error(f"--sides takes a comma-separated subset of {','.join(SIDES)}")
    res = run(
        args.model,
        lengths,
        args.threads,
        out=args.json,
        sides=sides,
        official_max_frames=args.official_max_frames,
    )
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
