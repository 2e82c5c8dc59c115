"""``evaluate`` on the ``ray`` engine: the images to compute go to an actor pool on a Ray cluster.

Each actor loads the annotations (and detections) and one model, and turns a batch of image ids
into the same per-image records as the local loop (:class:`leansam.eval.coco_eval._Worker`).
The records come back to the driver, which appends them to the per-image cache and merges the
metrics as usual, so the result does not depend on the engine. Ray is imported only here.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

#: Image ids per actor call (a Ray task); a worker that dies loses at most this many images of work.
IDS_PER_TASK = 4


class EvalActor:
    """A Ray Data actor for one evaluation; :func:`_actor_class` binds ``config``."""

    config: dict[str, Any]

    def __init__(self) -> None:
        from .coco_eval import EvalConfig, _load_model, _Worker
        from .inputs import EvalData, load_annotations, load_detections

        cfg = EvalConfig(**self.config)
        dataset, gt = load_annotations(cfg.annotations, cfg.images)
        data = EvalData(dataset, gt)
        if cfg.detections is not None:
            data.detections = load_detections(cfg.detections, dataset)
        model, self.weights = _load_model(cfg)
        self.worker = _Worker(cfg, data, model.eval())

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        records = [json.dumps(self.worker(int(i))) for i in batch["image_id"]]
        return {"record": records, "weights": [self.weights] * len(records)}


def _actor_class(config: Any) -> type[EvalActor]:
    cfg = replace(config, engine="local", address=None, workers=None, progress=False)
    return type("BoundEvalActor", (EvalActor,), {"config": asdict(cfg)})


def run_ray_shard(
    config: Any, shard: Sequence[int], cache: Any, progress: bool
) -> tuple[dict[int, dict], dict[int, dict], float, str]:
    """Computes the images ``shard`` on the connected cluster; appends each record to ``cache``.

    Returns:
        (ok records, failed records, seconds, weights label of the workers' model).
    """
    from ..batch.ray_engine import default_workers, require_ray

    ray = require_ray()
    records: dict[int, dict] = {}
    failures: dict[int, dict] = {}
    weights = "no image computed in this run"
    t0 = time.perf_counter()
    if not shard:
        return records, failures, 0.0, weights
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n = config.workers or default_workers(config.device)
    per_actor = {"num_gpus": 1} if config.device.startswith("cuda") else {"num_cpus": 1}
    ds = ray.data.from_items([{"image_id": int(i)} for i in shard])
    results = ds.map_batches(
        _actor_class(config),
        batch_size=IDS_PER_TASK,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
        **per_actor,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc=f"eval {config.model} [ray x{n}]", unit="img", file=sys.stderr)
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            weights = str(batch["weights"][0])
            for text in batch["record"]:
                rec = json.loads(str(text))
                if cache is not None:
                    cache.append(rec)
                image_id = int(rec["image_id"])
                if rec["status"] == "ok":
                    records[image_id] = rec
                else:
                    failures[image_id] = rec
                    msg = f"warning: skipped image {rec['file']} (id {image_id}): {rec['error']}"
                    (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if cache is not None:
            cache.close()
    return records, failures, time.perf_counter() - t0, weights
