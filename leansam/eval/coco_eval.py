"""``evaluate``: a model on a COCO-format data set, resumable, shardable with ``torchrun``.

Two modes:

* **prompted** (no detections): each non-crowd ground-truth instance is prompted with a box or
  clicks derived from it (:mod:`leansam.eval.gt_prompts`); the metric is mIoU, overall and per
  COCO area range (:class:`~leansam.eval.evaluators.MaskIoUEvaluator`).
* **detections** (``detections=RESULTS.json``): every detected box prompts the model; the
  masks, scored with the detection score, are evaluated with COCOeval (segm AP, AP50, AP75,
  APs/m/l; :class:`~leansam.eval.evaluators.COCOInstanceEvaluator`).

Per image: one encoder call, then the instances' prompts in chunks of ``batch_size`` per decoder
call. With ``out`` set, each image's result is appended to a JSON-lines cache
(:mod:`leansam.eval.journal`) as soon as it is computed; running again with the same arguments
skips the images already done. Under ``torchrun`` (env ``RANK`` / ``WORLD_SIZE``) the images
are split round-robin across processes (gloo process group), each process writes its own
cache file, and after a barrier every process merges all files; rank 0 writes the outputs.
The metrics depend only on the set of per-image results, so any sharding gives the same numbers.

Images that are missing or cannot be decoded are reported on stderr, listed in the result
(``failed_images``) and left out of the metrics (AP is computed on the images evaluated).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import InputError, load_image, write_json
from ..models.sam import Sam
from ..outputs import RunFolder, claim
from ..predictor import SamPredictor
from .evaluators import COCOInstanceEvaluator, MaskIoUEvaluator
from .gt_prompts import InstancePrompts, check_prompt_kind, make_prompts, xywh_to_xyxy
from .inputs import EvalData, image_header_size, load_annotations, load_detections
from .journal import OWNED, ImageCache
from .predict import predict_instances


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        model: registry name.
        images: folder the annotation file's ``file_name`` entries are relative to.
        annotations: COCO (or LVIS-in-COCO-layout) instances JSON.
        checkpoint: weights file; None: the official checkpoint (cache / download).
        prompt: prompt kind in prompted mode (see :data:`leansam.eval.gt_prompts.PROMPT_KINDS`).
        detections: COCO results JSON of a detector: switches to detections mode (AP).
        out: output folder (results.json, per-image cache); None keeps everything in memory.
        limit: evaluate only the first N images of the annotation file.
        seed: seed of the random clicks.
        batch_size: prompts per decoder call.
        device: torch device.
        progress: tqdm progress bar on stderr.
        fresh: discard cached per-image results in ``out`` instead of resuming.
        trust_pickle: allow pickled-object checkpoints.
        allow_outside_images: read ``file_name`` entries that leave ``images`` (absolute, ``..``,
            symlinks out); refused by default.
        engine: ``local`` (this process; ``torchrun`` splits the images) or ``ray`` (an actor pool
            on the Ray cluster at ``address``, None: a new local one; ``workers`` actors, None:
            one per CPU, or per GPU on cuda).
        overwrite: replace files with the output names in ``out`` that leansam did not write.
    """

    model: str
    images: str
    annotations: str
    checkpoint: str | None = None
    prompt: str = "box"
    detections: str | None = None
    out: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    progress: bool = False
    fresh: bool = False
    trust_pickle: bool = False
    allow_outside_images: bool = False
    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    overwrite: bool = False

    def run_identity(self) -> dict[str, Any]:
        """What makes cached per-image results reusable (not limit, device or batch size)."""

        def ident(p: str | None) -> dict | None:
            if p is None:
                return None
            path = Path(p).resolve()
            st = path.stat() if path.exists() else None
            return {
                "path": str(path),
                "size": st.st_size if st else None,
                "mtime_ns": st.st_mtime_ns if st else None,
            }

        return {
            "model": self.model,
            "checkpoint": ident(self.checkpoint),
            "prompt": None if self.detections else self.prompt,
            "seed": self.seed,
            "annotations": ident(self.annotations),
            "images": str(Path(self.images).resolve()),
            "detections": ident(self.detections),
        }


@dataclass
class EvalResult:
    """What :func:`evaluate` measured. ``to_dict()`` is JSON-serialisable.

    Attributes:
        model, weights: the model and a description of its weights.
        mode: ``prompted`` (mIoU) or ``detections`` (AP).
        prompt: the prompt kind (prompted mode).
        metrics: ``mIoU``, ``mIoU_small/medium/large`` (percent) and instance counts; or
            ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (percent) and ``n_detections``.
        n_images: images evaluated; ``n_images_selected``: images the run was asked for.
        failed_images: ``{"image_id", "file", "error"}`` of images skipped because they could not be read.
        skipped_instances: crowd annotations and empty masks left out of the mIoU.
        seconds: wall time of this call; ``images_per_s`` over the images computed in this call.
        world_size: processes that shared the work.
        machine: :func:`leansam.bench.timing.machine_fingerprint`.
        config: the :class:`EvalConfig`.
    """

    model: str
    weights: str
    mode: str
    prompt: str | None
    metrics: dict[str, Any]
    n_images: int
    n_images_selected: int
    failed_images: list[dict[str, Any]] = field(default_factory=list)
    skipped_instances: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_s: float | None = None
    world_size: int = 1
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        m = self.metrics

        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f}"

        if self.mode == "prompted":
            head = (
                f"{self.model} ({self.weights}), prompt {self.prompt}: mIoU {f(m['mIoU'])} "
                f"(small {f(m['mIoU_small'])}, medium {f(m['mIoU_medium'])}, large {f(m['mIoU_large'])}) "
                f"over {m['n']} instances"
            )
        else:
            head = (
                f"{self.model} ({self.weights}), detector boxes: AP {f(m['AP'])}, AP50 {f(m['AP50'])}, "
                f"AP75 {f(m['AP75'])}, APs {f(m['APs'])}, APm {f(m['APm'])}, APl {f(m['APl'])} "
                f"from {m['n_detections']} detections"
            )
        lines = [head + f" on {self.n_images} image(s)"]
        if self.failed_images:
            lines.append(f"{len(self.failed_images)} image(s) could not be read and were skipped:")
            lines += [f"  {f['file']} (id {f['image_id']}): {f['error']}" for f in self.failed_images[:20]]
        return "\n".join(lines)


# --- distributed ----------------------------------------------------------------------------------
def _dist_setup() -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
    return rank, world, True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _log(msg: str, bar: Any = None) -> None:
    if bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


# --- the run --------------------------------------------------------------------------------------
def _select_images(data: EvalData, limit: int | None) -> list[int]:
    ids = data.dataset.image_ids()
    return ids[:limit] if limit else ids


def _precheck(data: EvalData, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Header check of every selected image: failures (missing / unreadable) by image id.

    Raises:
        InputError: an image's size differs from its annotation entry, or no image was found.
    """
    ds = data.dataset
    failed: dict[int, dict[str, Any]] = {}
    mismatched = []
    for i in ids:
        path = ds.image_path(i)  # raises for a path outside the image folder
        try:
            hw = image_header_size(path)
        except InputError as e:
            failed[i] = {"image_id": i, "file": ds.images[i].file_name, "error": str(e)}
            continue
        entry = (ds.images[i].height, ds.images[i].width)
        if hw != entry:
            mismatched.append(
                f"{ds.images[i].file_name} is {hw[1]}x{hw[0]} but annotated as {entry[1]}x{entry[0]}"
            )
    if mismatched:
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        raise InputError(
            f"image sizes do not match the annotations' width/height, so the masks cannot match: "
            f"{'; '.join(mismatched[:3])}{more} (wrong --images folder or annotation file?)"
        )
    if ids and len(failed) == len(ids):
        first = next(iter(failed.values()))
        raise InputError(
            f"none of the {len(ids)} image(s) in {ds.path.name} could be read from {ds.image_root} "
            f"(first: {first['error']})"
        )
    return failed


class _Worker:
    """Computes one image's record (model + evaluator), for either mode."""

    def __init__(self, cfg: EvalConfig, data: EvalData, model: Sam) -> None:
        self.cfg = cfg
        self.data = data
        self.predictor = SamPredictor(model)
        self.detections = cfg.detections is not None
        self.evaluator = (
            COCOInstanceEvaluator(data.gt, distributed=False) if self.detections else MaskIoUEvaluator(False)
        )

    def __call__(self, image_id: int) -> dict[str, Any]:
        ds = self.data.dataset
        info = ds.images[image_id]
        t0 = time.perf_counter()
        try:
            image = load_image(ds.image_path(image_id))
        except InputError as e:
            return {"image_id": image_id, "status": "failed", "file": info.file_name, "error": str(e)}
        if image.shape[:2] != (info.height, info.width):
            raise InputError(
                f"{info.file_name} is {image.shape[1]}x{image.shape[0]} but annotated as "
                f"{info.width}x{info.height}: the masks cannot match (wrong --images folder?)"
            )
        rec: dict[str, Any] = {"image_id": image_id, "status": "ok"}
        if self.detections:
            dets = self.data.detections.get(image_id, [])
            boxes = xywh_to_xyxy(np.array([d.bbox for d in dets], dtype=np.float32).reshape(-1, 4))
            masks = self._predict(image, InstancePrompts(boxes, None, None, multimask=False))
            self.evaluator.process(
                [{"image_id": image_id}],
                [
                    {
                        "masks": masks,
                        "scores": [d.score for d in dets],
                        "category_ids": [d.category_id for d in dets],
                    }
                ],
            )
        else:
            anns = ds.annotations_for(image_id)
            crowd = [a for a in anns if a.iscrowd]
            kept, gt = [], []
            n_empty = 0
            for a in anns:
                if a.iscrowd:
                    continue
                m = ds.mask(a)
                if not m.any():
                    n_empty += 1
                    continue
                kept.append(a)
                gt.append(m)
            gt_arr = np.stack(gt) if gt else np.zeros((0, info.height, info.width), dtype=bool)
            prompts = make_prompts(
                self.cfg.prompt,
                gt_arr,
                np.array([a.bbox for a in kept], dtype=np.float32).reshape(-1, 4),
                image_id,
                [a.id for a in kept],
                self.cfg.seed,
            )
            masks = self._predict(image, prompts)
            self.evaluator.process(
                [
                    {
                        "image_id": image_id,
                        "gt_masks": gt_arr,
                        "areas": [a.area for a in kept],
                        "ann_ids": [a.id for a in kept],
                        "category_ids": [a.category_id for a in kept],
                    }
                ],
                [{"masks": masks}],
            )
            rec["skipped"] = {"crowd": len(crowd), "empty_mask": n_empty}
        rec["rows"] = self.evaluator.image_rows(image_id)
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _predict(self, image: np.ndarray, prompts: InstancePrompts) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros((0, *image.shape[:2]), dtype=bool)
        with torch.inference_mode():
            self.predictor.set_image(image)
        masks, _ = predict_instances(self.predictor, prompts, self.cfg.batch_size)
        return masks


def _weights_label(report: Any) -> str:
    if report is None:
        return "random init (no weights)"
    return f"checkpoint {Path(report.path).name}" + (" (sha256 verified)" if report.sha256_verified else "")


def _load_data(cfg: EvalConfig) -> tuple[EvalData, list[int], dict[int, dict[str, Any]]]:
    """Validated inputs: (data, selected image ids, images that fail before any model runs)."""
    try:
        check_prompt_kind(cfg.prompt)
    except ValueError as e:
        raise InputError(str(e)) from None
    if cfg.limit is not None and cfg.limit <= 0:
        raise InputError(f"--limit must be positive, got {cfg.limit}")
    dataset, gt = load_annotations(cfg.annotations, cfg.images, cfg.allow_outside_images)
    data = EvalData(dataset, gt)
    if cfg.detections is not None:
        data.detections = load_detections(cfg.detections, dataset)
    ids = _select_images(data, cfg.limit)
    return data, ids, _precheck(data, ids)


def _load_model(cfg: EvalConfig) -> tuple[Sam, str]:
    """The model of ``cfg`` on its device, and how its weights were loaded."""
    from ..checkpoints import load_model

    model, report = load_model(cfg.model, cfg.checkpoint, trust_pickle=cfg.trust_pickle)
    try:
        return model.to(cfg.device), _weights_label(report)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"cannot use device {cfg.device!r}: {e}") from None


def _run_shard(
    computed: Iterable[dict[str, Any]],
    shard: list[int],
    cache: ImageCache | None,
    desc: str,
    position: int,
    progress: bool,
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], float]:
    """Collects the records of the images of ``shard`` as ``computed`` yields them (any order),
    caching each: (ok records, failed records, seconds in the loop)."""
    records: dict[int, dict[str, Any]] = {}
    failures: dict[int, dict[str, Any]] = {}
    bar = None
    if progress and shard:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc=desc, unit="img", file=sys.stderr, position=position)
    t_loop = time.perf_counter()
    try:
        for rec in computed:
            image_id = int(rec["image_id"])
            if cache is not None:
                cache.append(rec)
            if rec["status"] == "ok":
                records[image_id] = rec
            else:
                failures[image_id] = rec
                _log(f"warning: skipped image {rec['file']} (id {image_id}): {rec['error']}", bar)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if cache is not None:
            cache.close()
    return records, failures, time.perf_counter() - t_loop


def _cached_results(
    cache: ImageCache, ids: list[int]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Every process's ok and failed records of the selected images, read back from the cache."""
    selected = set(ids)
    records = {i: r for i, r in cache.done().items() if i in selected}
    failures = {
        int(r["image_id"]): r
        for r in cache.records()
        if r.get("status") == "failed" and int(r["image_id"]) in selected
    }
    return records, failures


def evaluate(config: EvalConfig, model: Sam | None = None) -> EvalResult:
    """Evaluates ``config.model`` (or the given ``model``) as :class:`EvalConfig` says.

    Under ``torchrun`` every process returns the same merged result; rank 0 writes the outputs.

    Raises:
        InputError: bad annotations / detections / image folder, mismatched image sizes,
            unknown prompt kind, an ``out`` folder holding another run's cache.
    """
    from ..bench.timing import machine_fingerprint

    cfg = config
    t_start = time.perf_counter()
    data, ids, pre_failed = _load_data(cfg)
    rank, world, own_group = _dist_setup()
    if world > 1 and cfg.out is None:
        raise InputError("an output folder (--out) is required when running under torchrun")
    disconnect = _connect_engine(cfg, world, model)
    lock = None
    try:
        if cfg.out is not None and world == 1:  # under torchrun every rank writes the folder
            lock = RunFolder(cfg.out, OWNED, cfg.overwrite)
        cache = ImageCache(cfg.out, rank) if cfg.out is not None else None
        if cache is not None:
            cache.check_run(cfg.run_identity(), fresh=cfg.fresh, write=rank == 0)
        _barrier(world)
        done = cache.done() if cache is not None else {}
        shard = [i for i in ids[rank::world] if i not in pre_failed and i not in done]
        weights = "given model"
        desc = f"eval {cfg.model}" + (f" [{rank}/{world}]" if world > 1 else "")
        if cfg.engine == "ray":
            from .ray_eval import ray_records

            computed, ray_info = ray_records(cfg, shard)
            new, failures, loop_s = _run_shard(computed, shard, cache, desc + " [ray]", 0, cfg.progress)
            weights = ray_info["weights"]
        else:
            if model is None:
                model, weights = _load_model(cfg)
            worker = _Worker(cfg, data, model.eval())
            new, failures, loop_s = _run_shard(map(worker, shard), shard, cache, desc, rank, cfg.progress)
        records = {**done, **new}
        for i, f in pre_failed.items():
            if rank == 0:
                _log(f"warning: skipped image {f['file']} (id {i}): {f['error']}")
        _barrier(world)
        if cache is not None:
            records, failures = _cached_results(cache, ids)
        failures = {i: r for i, r in failures.items() if i not in records}
        failures.update(pre_failed)
        result = _merge(cfg, data, ids, records, failures, weights, world)
        result.seconds = time.perf_counter() - t_start
        result.images_per_s = len(shard) / loop_s if shard and loop_s > 0 else None
        result.machine = machine_fingerprint(cfg.device).to_dict()
        if rank == 0 and cache is not None:
            cache.write_run()
            _write_outputs(cfg, result, records)
        return result
    finally:
        if lock is not None:
            lock.release()
        if disconnect is not None:
            disconnect()
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _connect_engine(cfg: EvalConfig, world: int, model: Sam | None) -> Any:
    """Joins the Ray cluster for ``engine="ray"`` (before anything is written); the disconnect function or None.

    Raises:
        InputError: unknown engine, Ray under torchrun or with a model object, Ray missing or unreachable.
    """
    if cfg.engine not in ("local", "ray"):
        raise InputError(f"unknown engine {cfg.engine!r}; choose local or ray")
    if cfg.engine != "ray":
        if cfg.address or cfg.workers:
            raise InputError("--address and --workers need --engine ray")
        return None
    if world > 1:
        raise InputError("--engine ray replaces torchrun: run one process")
    if model is not None:
        raise InputError("the ray engine builds its models on the workers: pass a registry name, not a model")
    from ..batch.ray_engine import connect

    return connect(cfg.address)


def _merge(
    cfg: EvalConfig,
    data: EvalData,
    ids: list[int],
    records: dict[int, dict[str, Any]],
    failures: dict[int, dict[str, Any]],
    weights: str,
    world: int,
) -> EvalResult:
    """Metrics from the per-image records of every process (exact: depends only on the set)."""
    if cfg.detections is not None:
        ev: MaskIoUEvaluator | COCOInstanceEvaluator = COCOInstanceEvaluator(data.gt, distributed=False)
    else:
        ev = MaskIoUEvaluator(distributed=False)
    skipped = {"crowd": 0, "empty_mask": 0}
    for i in sorted(records):
        ev.add_image_rows(i, records[i]["rows"])
        for k, v in records[i].get("skipped", {}).items():
            skipped[k] = skipped.get(k, 0) + int(v)
    metrics = ev.evaluate()
    failed = [
        {"image_id": i, "file": failures[i].get("file", ""), "error": failures[i].get("error", "")}
        for i in sorted(failures)
    ]
    return EvalResult(
        model=cfg.model,
        weights=weights,
        mode="detections" if cfg.detections is not None else "prompted",
        prompt=None if cfg.detections is not None else cfg.prompt,
        metrics=metrics,
        n_images=len(records),
        n_images_selected=len(ids),
        failed_images=failed,
        skipped_instances=skipped if cfg.detections is None else {},
        world_size=world,
        config=asdict(cfg),
    )


def _write_outputs(cfg: EvalConfig, result: EvalResult, records: dict[int, dict]) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    claim(out, OWNED, "leansam eval")
    if cfg.detections is not None:
        segm = [r for i in sorted(records) for r in records[i]["rows"]]
        write_json(out / "segm_results.json", segm)
    write_json(out / "results.json", result.to_dict())
