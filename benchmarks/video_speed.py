"""Per-frame tracking time: leansam's VideoPredictor against the official SAM2VideoPredictor.

    python -m benchmarks.video_speed [--models sam2.1_hiera_tiny,efficienttam_ti] [--frames 32]
        [--runs 3] [--threads 2] [--precision float32|bfloat16] [--json docs/results/video_speed.json]

Two workflows on a folder of JPEG frames (480 x 640, a generated clip of moving textured objects):
``track``: ``init_state``, a box on frame 0, ``propagate_in_video`` over the whole clip;
``refine``: the same, then a correction click on the middle frame and a second propagation over the
whole clip (the interactive loop of SAM 2's demo). Per-frame time = run time / frames propagated.
Both sides are timed in alternation (A B A B ...) in one process. Weights: seeded random
initialisation of the official model, loaded strictly into leansam's (same numbers on both sides;
speed does not depend on weight values). The official side exists for SAM 2 / SAM 2.1 (PyPI ``sam2``);
EfficientTAM's official code is not on PyPI, so its rows are leansam only. The official predictor runs
with its defaults (hole filling is skipped without its CUDA extension; leansam fills holes on CPU).

``--precision bfloat16``: leansam's ``VideoPredictor(precision="bfloat16")`` against the official
predictor under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (how SAM 2's examples run it, on GPU);
results in ``docs/results/video_speed_bf16.json`` (topic :mod:`benchmarks.video_speed_bf16`), with
the masks' agreement with the official float32 recordings of the public parity cases.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leansam.bench.timing import machine_fingerprint, measure_interleaved
from leansam.io import write_json

RESULTS = {
    "float32": Path("docs/results/video_speed.json"),
    "bfloat16": Path("docs/results/video_speed_bf16.json"),
}
RESULT = RESULTS["float32"]
MODELS = ("sam2.1_hiera_tiny", "efficienttam_ti")
COMMAND = (
    "python -m benchmarks.video_speed --models {models} --frames {frames} --runs {runs} --threads {threads}"
)
#: The public parity case replayed per model for the bf16 masks' agreement with float32.
FIDELITY_CASE = "a_box_click"
TARGET = 0.6  # issue #15: leansam per-frame tracking time <= 0.6 x the official predictor
OFFICIAL_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
}
SIZE = (480, 640)
WORKFLOWS = {"track": False, "refine": True}


def clip_frame(t: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Frame ``t`` of the generated clip (H x W x 3 uint8): a fixed textured background and two
    rectangles moving across it. The object of the box prompt starts at :data:`BOX`."""
    h, w = size
    g = np.random.default_rng(0)
    frame = (g.integers(0, 4, (h // 16, w // 16, 3)) * 50 + 30).astype(np.uint8).repeat(16, 0).repeat(16, 1)
    for k, colour in enumerate(((220, 60, 40), (40, 200, 90))):
        y = (h // 4 + k * h // 3 + 3 * t) % (h - 100)
        x = (w // 5 + k * w // 3 + 5 * t) % (w - 140)
        frame[y : y + 100, x : x + 140] = colour
        frame[y + 40 : y + 60, x : x + 140] //= 2  # a stripe, so the object has texture
    return frame


BOX = (SIZE[1] // 5, SIZE[0] // 4, SIZE[1] // 5 + 140, SIZE[0] // 4 + 100)


def write_clip(folder: Path, frames: int) -> Path:
    """Writes ``frames`` JPEG frames ``00000.jpg``... (the official loader's input) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        Image.fromarray(clip_frame(t)).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


def official_predictor(name: str) -> Any:
    """The official SAM2VideoPredictor with seeded random weights (needs PyPI ``sam2``)."""
    from tests import oracles

    torch.manual_seed(0)
    sam2 = oracles.sam2()
    return sam2.build_sam.build_sam2_video_predictor(OFFICIAL_CONFIGS[name], None, device="cpu")


def leansam_predictor(name: str, official: Any | None, precision: str = "float32") -> Any:
    """leansam's VideoPredictor with the official model's weights (or seeded random ones)."""
    from leansam.video import VideoPredictor, build_video_model
    from leansam.video.build import load_video_state_dict

    torch.manual_seed(0)
    model = build_video_model(name)
    if official is not None:
        load_video_state_dict(model, name, official.state_dict())
    return VideoPredictor(model, precision=precision)


def official_autocast(precision: str) -> torch.autocast:
    """The official predictor's precision: bf16 autocast for ``bfloat16`` (its documented way)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def fidelity(name: str, precision: str) -> dict | None:
    """Masks of ``name``'s public parity case replayed at ``precision`` against the official float32
    recording: min mask IoU, max fraction of pixels that differ, max |object score diff|.
    None when the case or the fixtures are missing."""
    from leansam.video import VideoPredictor
    from tests import parity as P
    from tests.video import cases as C

    case = f"{name}/{FIDELITY_CASE}"
    if case not in C.CASES or not (P.parity_dir() / "video" / f"{case}.npz").is_file():
        return None
    z, spec = C.load(case)
    pred = VideoPredictor(
        C.model_for(spec), precision=precision, **spec["constructor"]["then_set_attributes"]
    )
    rows = C.mask_agreement(C.replay(pred, z, spec), z)
    return {
        "case": case,
        "outputs": len(rows),
        "min_iou": min(r["iou"] for r in rows),
        "mean_iou": sum(r["iou"] for r in rows) / len(rows),
        "max_pixels_differ": max(r["pixels_differ"] for r in rows),
        "max_score_diff": max(r["score_diff"] for r in rows),
    }


def object_centre(t: int, size: tuple[int, int] = SIZE) -> tuple[float, float]:
    """(x, y) centre of the boxed object in frame ``t`` of :func:`clip_frame`."""
    h, w = size
    return float((w // 5 + 5 * t) % (w - 140) + 70), float((h // 4 + 3 * t) % (h - 100) + 50)


def track(pred: Any, folder: Path, refine: bool = False) -> int:
    """One run: init, box on frame 0, propagate (``refine``: then a click on the middle frame and a
    second propagation); returns the number of frames yielded."""
    with torch.inference_mode():
        state = pred.init_state(str(folder))
        pred.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(BOX, dtype=np.float32))
        n = sum(1 for _ in pred.propagate_in_video(state))
        if refine:
            mid = n // 2
            click = np.array([object_centre(mid)], dtype=np.float32)
            pred.add_new_points_or_box(
                state,
                frame_idx=mid,
                obj_id=1,
                points=click,
                labels=np.array([1], np.int32),
                clear_old_points=False,
            )
            n += sum(1 for _ in pred.propagate_in_video(state))
        return n


def run(
    models: tuple[str, ...],
    frames: int,
    runs: int,
    threads: int,
    out: Path | None = RESULT,
    precision: str = "float32",
) -> dict:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip(Path(tmp) / "clip", frames)
        for name in models:
            official = official_predictor(name) if name in OFFICIAL_CONFIGS else None
            preds = {"leansam": leansam_predictor(name, official, precision)}
            if official is not None:
                preds["official"] = official
            rows[name] = {}
            for flow, refine in WORKFLOWS.items():
                fns = {side: _timed_call(side, p, folder, refine, precision) for side, p in preds.items()}
                n = (2 if refine else 1) * frames
                assert all(fn() == n for fn in fns.values())  # also the warm-up
                timings = measure_interleaved(fns, runs=runs, warmup=0)
                rows[name][flow] = {
                    side: {"median_s": t.median, "per_frame_s": t.median / n, "runs_s": list(t.runs)}
                    for side, t in timings.items()
                }
    command = COMMAND.format(models=",".join(models), frames=frames, runs=runs, threads=threads)
    res = {
        "command": command + ("" if precision == "float32" else f" --precision {precision}"),
        "precision": precision,
        "machine": machine_fingerprint().__dict__,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "frames": frames,
        "size": list(SIZE),
        "runs": runs,
        "threads": threads,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "models": rows,
    }
    if precision != "float32":
        res["fidelity"] = {name: fidelity(name, precision) for name in models}
    if out is not None:
        write_json(out, res)
    return res


def _timed_call(side: str, pred: Any, folder: Path, refine: bool, precision: str):
    """One run of a side: leansam at its predictor's precision, the official one under autocast."""

    def call() -> int:
        with official_autocast(precision if side == "official" else "float32"):
            return track(pred, folder, refine)

    return call


def targets(res: dict) -> list[dict]:
    """Per model with an official side and workflow: leansam per-frame time <= TARGET x the official one."""
    out = []
    for name, flows in res["models"].items():
        for flow, row in flows.items():
            if "official" in row:
                r = row["leansam"]["per_frame_s"] / row["official"]["per_frame_s"]
                out.append(
                    {
                        "target": f"tracking time per frame <= {TARGET}x the official predictor "
                        f"({name}, {flow}{_suffix(res)})",
                        "measured": f"{r:.2f}x",
                        "met": r <= TARGET,
                    }
                )
    return out


def _suffix(res: dict) -> str:
    return "" if res.get("precision", "float32") == "float32" else ", both in bfloat16"


def _precision_text(res: dict) -> list[str]:
    if res.get("precision", "float32") == "float32":
        return []
    lines = [
        "",
        'Both sides in bfloat16: leansam\'s `VideoPredictor(precision="bfloat16")` against the official '
        'predictor under `torch.autocast("cpu", dtype=torch.bfloat16)`. Masks of the public parity case '
        "replayed in bfloat16 against the official float32 recording (stand-in weights):",
        "",
        "| model | case | outputs | min mask IoU | mean mask IoU | max pixels differing | max object score diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in res.get("fidelity", {}).items():
        if f is None:
            lines.append(f"| {name} | - (no public case here) | | | | | |")
            continue
        lines.append(
            f"| {name} | {f['case']} | {f['outputs']} | {f['min_iou']:.4f} | {f['mean_iou']:.4f} | "
            f"{f['max_pixels_differ']:.2%} | {f['max_score_diff']:.4f} |"
        )
    return lines


def render(res: dict) -> str:
    m, lb, la = res["machine"], res["load_average"]["before"], res["load_average"]["after"]
    bf16 = res.get("precision", "float32") != "float32"
    lines = [
        "## Video tracking time per frame" + (", bfloat16" if bf16 else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {res['threads']} threads. Load average "
        f"{lb[0]:.2f} before, {la[0]:.2f} after. Command: `{res['command']}`: {res['frames']} frames of "
        f"{res['size'][0]} x {res['size'][1]}, median of {res['runs']} runs, both sides alternated; random "
        "weights, the same on both sides. Workflows: `track` = a box on frame 0 and one propagation; "
        "`refine` = then a correction click on the middle frame and a second propagation (per frame = "
        "time / frames propagated). The official predictor keeps the features of the last encoded frame "
        "only, so it encodes every frame again in the second propagation; leansam's predictor keeps "
        "recently used frames' features up to `feature_cache_mb` (default 1024).",
        *_precision_text(res),
        "",
        "| model | workflow | leansam ms/frame | official ms/frame | leansam / official |",
        "|---|---|---|---|---|",
    ]
    for name, flows in res["models"].items():
        for flow, row in flows.items():
            mine = row["leansam"]["per_frame_s"] * 1000
            off = row.get("official")
            ref = f"{off['per_frame_s'] * 1000:.0f}" if off else "- (no official code on PyPI)"
            ratio = f"{row['leansam']['per_frame_s'] / off['per_frame_s']:.2f}x" if off else "-"
            lines.append(f"| {name} | {flow} | {mine:.0f} | {ref} | {ratio} |")
    lines += ["", "Targets:", ""]
    for tg in targets(res):
        lines.append(f"* {tg['target']}: {tg['measured']} — {'met' if tg['met'] else '**not met**'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video_speed", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=tuple(RESULTS), default="float32")
    p.add_argument("--json", type=Path, default=None, help="default: docs/results/video_speed[_bf16].json")
    args = p.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    out = args.json or RESULTS[args.precision]
    print(render(run(models, args.frames, args.runs, args.threads, out=out, precision=args.precision)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
