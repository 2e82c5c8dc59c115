"""``evaluate`` on the ``ray`` engine: the images to compute go to an actor pool on a Ray cluster.

Each actor loads the annotations (and detections) and one model, and turns a batch of image ids
into the same per-image records as the local loop (:class:`leansam.eval.coco_eval._Worker`).
The records come back to the driver, which appends them to the per-image cache (the same loop as
the local engine) and merges the metrics as usual, so the result does not depend on the engine. Ray is imported only here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
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


def ray_records(config: Any, shard: Sequence[int]) -> tuple[Iterator[dict[str, Any]], dict[str, str]]:
    """The per-image records of the images ``shard``, computed on the connected cluster, as they arrive.

    Returns:
        (the records, in any order; a dict whose ``weights`` names the workers' weights once the
        first record arrived).
    """
    from ..batch.ray_engine import default_workers, require_ray

    info = {"weights": "no image computed in this run"}
    if not shard:
        return iter(()), info
    ray = require_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    n = config.workers or default_workers(config.device)
    per_actor = {"num_gpus": 1} if config.device.startswith("cuda") else {"num_cpus": 1}
    results = ray.data.from_items([{"image_id": int(i)} for i in shard]).map_batches(
        _actor_class(config),
        batch_size=IDS_PER_TASK,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
        **per_actor,
    )

    def records() -> Iterator[dict[str, Any]]:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            info["weights"] = str(batch["weights"][0])
            for text in batch["record"]:
                yield json.loads(str(text))

    return records(), info
