"""Compressed tracking models through the track gate: int8 image encoder and bfloat16 against float32.

    python -m benchmarks.video_int8 [--models efficienttam_ti,sam2.1_hiera_tiny] [--num-calib 6]
        [--runs 5] [--threads 2] [--json docs/results/video_int8.json]

Per model (stand-in weights, ``shared/parity/video``): the image encoder is quantized with
``leansam.video.quantize.quantize_video_`` (TinySAM's recipe) on the frames of the model's
``a_box_click`` case, then ``leansam.video.compare.compare_tracks`` tracks the box of the
``b_stream18`` case (another clip, 18 frames) with the float32 model and with each candidate (int8,
bfloat16), in lockstep, and reports per-frame mask agreement and tracking time per frame. The
encoder alone is timed float32 against int8 on one frame, alternated, median of ``--runs``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import torch

from leansam.bench.timing import machine_fingerprint, measure_interleaved
from leansam.io import write_json

RESULT = Path("docs/results/video_int8.json")
MODELS = ("efficienttam_ti", "sam2.1_hiera_tiny")
COMMAND = "python -m benchmarks.video_int8 --models {models} --num-calib {num_calib} --runs {runs} --threads {threads}"


def _prompts(spec: dict) -> dict[int, list]:
    """The case's prompts before its propagate call, as frame -> [Prompt]."""
    from leansam.video.stream import Prompt

    out: dict[int, list] = {}
    for c in spec["calls"]:
        if c["op"] == "add_new_points_or_box":
            labels = c.get("labels") or ([1] * len(c["points"]) if c.get("points") else None)
            prompt = Prompt(c["obj_id"], points=c.get("points"), labels=labels, box=c.get("box"))
            out.setdefault(c["frame_idx"], []).append(prompt)
    return out


def _agreement(report: Any) -> dict[str, Any]:
    iou, worst = report.iou, report.worst
    frames = len({r.frame_idx for r in report.rows})
    return {
        "frames": frames,
        "mean_iou": iou.mean,
        "min_iou": iou.min,
        "worst_frame": worst.frame_idx,
        "pixel_fraction": report.pixel_fraction,
        "ms_per_frame": {k: 1000 * v / frames for k, v in report.seconds.items()},
    }


def measure_model(name: str, num_calib: int, runs: int) -> dict[str, Any]:
    """Quantizes ``name``'s stand-in tracking model and gates it (and bfloat16) against float32."""
    from leansam.compress import TinySamPTQConfig
    from leansam.video import VideoPredictor
    from leansam.video.compare import compare_tracks
    from leansam.video.frames import frame_to_input
    from leansam.video.quantize import quantize_video_
    from tests.video import cases as C

    calib, _ = C.load(f"{name}/a_box_click")
    z, spec = C.load(f"{name}/b_stream18")
    model = C.model_for(spec)
    int8 = copy.deepcopy(model)
    report = quantize_video_(int8, TinySamPTQConfig(num_calib=num_calib), calib["frames"])
    ref, prompts = VideoPredictor(model), _prompts(spec)
    candidates = {"int8": VideoPredictor(int8), "bfloat16": VideoPredictor(model, precision="bfloat16")}
    agreement = {k: _agreement(compare_tracks(ref, c, z["frames"], prompts)) for k, c in candidates.items()}
    x = frame_to_input(z["frames"][0], model.cfg.image_size)
    with torch.inference_mode():
        timings = measure_interleaved(
            {"float32": lambda: model.encode_frame(x), "int8": lambda: int8.encode_frame(x)},
            runs=runs,
            warmup=1,
        )
    return {
        "calibration": f"{name}/a_box_click: {len(report.calibration)} frames",
        "tracked": f"{name}/b_stream18",
        "int8_layers": len(report.layers),
        "kept_float": len(report.kept_float),
        "quantize_s": report.seconds,
        "agreement": agreement,
        "encoder_ms": {k: 1000 * t.median for k, t in timings.items()},
    }


def run(
    models: list[str], num_calib: int, runs: int, threads: int, out: Path | None = RESULT
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows = {name: measure_model(name, num_calib, runs) for name in models}
    res = {
        "command": COMMAND.format(models=",".join(models), num_calib=num_calib, runs=runs, threads=threads),
        "machine": machine_fingerprint().__dict__,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "threads": threads,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "models": rows,
    }
    if out is not None:
        write_json(out, res)
    return res


def render(res: dict) -> str:
    m, lb, la = res["machine"], res["load_average"]["before"], res["load_average"]["after"]
    lines = [
        "## Compressed tracking models: int8 encoder and bfloat16 through the track gate",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {res['threads']} threads. Load average "
        f"{lb[0]:.2f} before, {la[0]:.2f} after. Command: `{res['command']}`. Stand-in weights: the agreement "
        "says how much each compression changes a random-weight model's tracks, not how a trained model "
        "fares. The image encoder is quantized on one public clip and gated on another (18 frames, box on "
        "frame 0) with `compare_tracks` (what `leansam compare --video` runs); each candidate is tracked in "
        "lockstep with float32, so its time per frame is alternated with the reference's.",
        "",
        "| model | candidate | mean mask IoU | worst frame IoU (frame) | pixels differing | ms/frame float32 "
        "| ms/frame candidate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res["models"].items():
        for cand, a in r["agreement"].items():
            ms = a["ms_per_frame"]
            lines.append(
                f"| {name} | {cand} | {a['mean_iou']:.4f} | {a['min_iou']:.4f} ({a['worst_frame']}) | "
                f"{a['pixel_fraction']:.3%} | {ms['reference']:.0f} | {ms['candidate']:.0f} |"
            )
    lines += [
        "",
        "| model | int8 layers | kept float | quantize s | encoder ms float32 | encoder ms int8 | ratio |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for name, r in res["models"].items():
        e = r["encoder_ms"]
        lines.append(
            f"| {name} | {r['int8_layers']} | {r['kept_float']} | {r['quantize_s']:.0f} | {e['float32']:.0f} | "
            f"{e['int8']:.0f} | {e['int8'] / e['float32']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video_int8", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--num-calib", type=int, default=6)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULT)
    args = p.parse_args(argv)
    models = [s for s in args.models.split(",") if s]
    print(render(run(models, args.num_calib, args.runs, args.threads, out=args.json)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
