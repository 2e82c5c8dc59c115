"""Dataset engine: images per second with the local engine and on Ray with 1 and 2 workers, and the
cost of each stage of an image (read, label, write, merge) that the scaling plan rests on.

    python -m benchmarks.dataset_engine [--images 24] [--models leansam_tiny,mobile_sam]
        [--tasks segment,everything] [--workers 1,2] [--json docs/results/dataset_engine.json]

1. Data: ``--images`` synthetic images (``leansam.data.synth``, seed 11, the generator's default
   sizes, 320-1024 px on the long side) and their annotations; ``segment`` prompts every annotated
   object's box (``--prompts annotations.json``, a stand-in for detector boxes), ``everything``
   runs the 16 x 16 point grid (filters per model in ``GRID``).
2. Weights: ``leansam_tiny`` its bundled weights; ``mobile_sam`` the deterministic stand-in
   weights of shared/parity (speed does not depend on weight values).
3. Engines: ``local`` with torch on every core (one model, this process); ``ray`` with N workers of
   one core each on a local Ray cluster started once (its start-up is reported apart). Each row
   is one ``run_dataset`` call into a fresh output folder, worker start-up and model loading
   included; rows of one model and task alternate engines (A B C A B C) ``--runs`` times and
   report the median.
4. Stages, in this process with one thread: per image the milliseconds to read and decode the
   file, to label it (encoder + prompts + masks to RLE), to write its shard line, and to merge it
   into coco.json, with the bytes read and written per image.
"""

from __future__ import annotations

__all__ = ["main", "render", "run", "scaling_table"]

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.everything import SPEED_OPTS
from benchmarks.weights import record_bundled
from leansam.bench.timing import machine_fingerprint
from leansam.io import write_json

RESULT = Path("docs/results/dataset_engine.json")
MODELS = ("leansam_tiny", "mobile_sam")
TASKS = ("segment", "everything")
#: 16 x 16 grid filters under which each model keeps masks: the bundled model's weak logits need low
#: thresholds; the stand-in weights need benchmarks.everything's settings.
GRID = {
    "leansam_tiny": {
        "points_per_side": 16,
        "pred_iou_thresh": 0.2,
        "stability_score_thresh": 0.3,
        "stability_score_offset": 0.25,
    },
    "mobile_sam": {"points_per_side": 16, **SPEED_OPTS},
}


def _data(root: Path, n: int) -> Path:
    from leansam.data.synth import generate

    generate(n, root, seed=11)
    return root


def _checkpoint(model: str, tmp: Path) -> str | None:
    if model == "leansam_tiny":
        return None
    from tests import parity as P

    return str(P.write_stand_in_checkpoint(model, tmp / f"{model}.pt"))


def _spec(task: str, model: str, ckpt: str | None, data: Path, threads: int) -> Any:
    from leansam.batch import JobSpec

    if task == "segment":
        return JobSpec("segment", model, ckpt, threads=threads, prompts=str(data / "annotations.json"))
    return JobSpec("everything", model, ckpt, threads=threads, generator=GRID[model])


def _one_run(spec: Any, data: Path, engine: str, workers: int | None, tmp: Path) -> dict[str, Any]:
    from leansam.batch import RunConfig, run_dataset

    out = Path(tempfile.mkdtemp(dir=tmp))
    t = time.perf_counter()
    summary = run_dataset(
        RunConfig(
            str(data / "images"), str(out), spec, engine=engine, workers=workers, shard_size=4, progress=False
        )
    )
    return {"seconds": time.perf_counter() - t, "images": summary["images"], "masks": summary["masks"]}


def engines(models: list[str], tasks: list[str], workers: list[int], n: int, runs: int) -> dict[str, Any]:
    """Images per second of every (model, task, engine) row (see the module docstring)."""
    import ray

    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = _data(tmp / "data", n)
        t = time.perf_counter()
        root = str(Path(__file__).resolve().parents[1])  # workers import this checkout
        ray.init(
            num_cpus=max(workers),
            include_dashboard=False,
            logging_level="WARNING",
            runtime_env={"env_vars": {"PYTHONPATH": root}},
        )
        startup = time.perf_counter() - t
        try:
            for model in models:
                ckpt = _checkpoint(model, tmp)
                for task in tasks:
                    setups = [("local", None, cores)] + [("ray", w, 1) for w in workers]
                    times: dict[int, list[dict]] = {i: [] for i in range(len(setups))}
                    for _ in range(runs):
                        for i, (engine, w, threads) in enumerate(setups):
                            spec = _spec(task, model, ckpt, data, threads)
                            times[i].append(_one_run(spec, data, engine, w, tmp))
                    for i, (engine, w, threads) in enumerate(setups):
                        secs = statistics.median(r["seconds"] for r in times[i])
                        rows.append(
                            {
                                "model": model,
                                "task": task,
                                "engine": engine if engine == "local" else f"ray x{w}",
                                "threads_per_model": threads,
                                "images": times[i][0]["images"],
                                "masks": times[i][0]["masks"],
                                "seconds": [r["seconds"] for r in times[i]],
                                "images_per_s": times[i][0]["images"] / secs,
                            }
                        )
                        sys.stderr.write(
                            f"{model} {task} {rows[-1]['engine']}: {rows[-1]['images_per_s']:.2f} img/s\n"
                        )
        finally:
            ray.shutdown()
    return {"rows": rows, "ray_startup_s": startup}


def stages(models: list[str], tasks: list[str], n: int) -> list[dict[str, Any]]:
    """Per-image milliseconds of read, label, write and merge, and bytes in and out (one thread)."""
    from leansam.batch import Labeler, iter_images
    from leansam.batch.shards import dumps_line, merge, write_shard
    from leansam.io import load_image

    torch.set_num_threads(1)
    out_rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = _data(tmp / "data", n)
        items = list(iter_images(str(data / "images")))
        t = time.perf_counter()
        for item in items:
            load_image(item.path)
        read_s = (time.perf_counter() - t) / len(items)
        in_bytes = statistics.mean(Path(i.path).stat().st_size for i in items)
        for model in models:
            ckpt = _checkpoint(model, tmp)
            for task in tasks:
                labeler = Labeler(_spec(task, model, ckpt, data, 1))
                t = time.perf_counter()
                lines = [labeler.label(item) for item in items]
                label_s = (time.perf_counter() - t) / len(items) - read_s
                out = tmp / f"out-{model}-{task}"
                t = time.perf_counter()
                for i in range(0, len(lines), 4):
                    write_shard(out, i // 4, lines[i : i + 4])
                write_s = (time.perf_counter() - t) / len(items)
                t = time.perf_counter()
                merge(out)
                merge_s = (time.perf_counter() - t) / len(items)
                out_rows.append(
                    {
                        "model": model,
                        "task": task,
                        "read_ms": read_s * 1e3,
                        "label_ms": label_s * 1e3,
                        "write_ms": write_s * 1e3,
                        "merge_ms": merge_s * 1e3,
                        "in_bytes": in_bytes,
                        "out_bytes": statistics.mean(len(dumps_line(ln)) + 1 for ln in lines),
                        "masks_per_image": statistics.mean(len(ln.get("masks", ())) for ln in lines),
                    }
                )
    return out_rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    models, tasks = args.models.split(","), args.tasks.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    result: dict[str, Any] = {
        "machine": machine_fingerprint().to_dict(),
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "n_images": args.images,
        "runs": args.runs,
        "weights": {"leansam_tiny": "bundled", "mobile_sam": "stand-in (shared/parity)"},
        "grid": GRID,
    }
    result.update(engines(models, tasks, workers, args.images, args.runs))
    result["stages"] = stages(models, tasks, args.images)
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.dataset_engine", description=__doc__.splitlines()[0]
    )
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--workers", default="1,2", help="Ray worker counts (default 1,2)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULT)
    args = p.parse_args(argv)
    result = run(args)
    write_json(args.json, record_bundled(result))
    print(args.json)
    return 0


def engine_table(res: dict[str, Any]) -> str:
    lines = [
        "| model | task | engine | threads per model | images | masks | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['engine']} | {r['threads_per_model']} | {r['images']} | "
            f"{r['masks']} | {r['images_per_s']:.2f} |"
        )
    return "\n".join(lines)


def scaling_table(res: dict[str, Any]) -> str:
    """Per-image stage costs, and what 100 machines of this kind would need (docs/datasets.md)."""
    lines = [
        "| model | task | read ms | label ms | write ms | merge ms | KB in | KB out | "
        "1 machine img/s (best engine) | 100 machines: MB/s in | MB/s out | merge of 1M images |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res["stages"]:
        best = max(
            r["images_per_s"] for r in res["rows"] if r["model"] == s["model"] and r["task"] == s["task"]
        )
        fleet = 100 * best
        lines.append(
            f"| {s['model']} | {s['task']} | {s['read_ms']:.1f} | {s['label_ms']:.1f} | {s['write_ms']:.2f} | "
            f"{s['merge_ms']:.2f} | {s['in_bytes'] / 1e3:.0f} | {s['out_bytes'] / 1e3:.1f} | {best:.2f} | "
            f"{fleet * s['in_bytes'] / 1e6:.1f} | {fleet * s['out_bytes'] / 1e6:.1f} | "
            f"{s['merge_ms'] * 1e6 / 1e3 / 60:.0f} min |"
        )
    m = res["machine"]
    lines.append("")
    lines.append(
        f"Measured on {m['cpu']} ({m['cores']} cores), {res['n_images']} synthetic images, load average "
        f"{res['load_before'][0]} before / {res['load_after'][0]} after; Ray cluster start-up "
        f"{res['ray_startup_s']:.1f} s. Stage times: one thread, this process. Stand-in weights give "
        "fragmented masks (many RLE runs), so their KB out is larger than trained weights' would be."
    )
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## Dataset engine: local vs Ray",
            "",
            "`python -m benchmarks.dataset_engine`: images per second of `run_dataset` (worker start-up and "
            "model loading included; median of "
            f"{res['runs']} alternated runs) on {res['n_images']} synthetic images; weights: "
            + ", ".join(f"{k} {v}" for k, v in res["weights"].items())
            + ". The scaling plan in docs/datasets.md rests on the stage table.",
            "",
            engine_table(res),
            "",
            scaling_table(res),
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
