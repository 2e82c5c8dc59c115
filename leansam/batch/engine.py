"""A dataset run: plan the shards of the images not yet done, label them on an engine, merge.

Engines: ``local`` labels the shards in this process with one model; ``ray`` hands them to an
actor pool on a Ray cluster (:mod:`leansam.batch.ray_engine`). Both call :func:`label_shard`
on the same plan, so they write the same shard files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import InputError, write_json
from ..outputs import RunFolder, claim
from .jobs import JobSpec, Labeler
from .prompts import load_prompt_table
from .shards import (
    SHARDS,
    ShardTask,
    check_run,
    merge,
    plan,
    read_lines,
    remove_stale_temporaries,
    shard_numbers,
    write_shard,
)
from .sources import iter_images, source_kind

#: The entries of a dataset run's folder (see :mod:`leansam.batch.shards`; leansam.outputs.RunFolder).
OWNED = ("run.json", SHARDS, "coco.json", "summary.json")

ENGINES = ("local", "ray")
#: Test hook: ``N:MARKER`` makes a worker process exit abruptly after labelling N images, once
#: (when the file MARKER does not exist yet; it is created first). Used to test recovery.
EXIT_HOOK_ENV = "LEANSAM_BATCH_EXIT_AFTER"


@dataclass
class RunConfig:
    """A dataset run.

    Attributes:
        source: folder, glob pattern or list file of images.
        out: output folder (shards, coco.json, summary.json; see :mod:`leansam.batch.shards`).
        spec: what each image gets.
        engine: ``local`` or ``ray``; address: Ray cluster (None: start a local one, ``auto``:
            the running one); workers: Ray actors (None: one per CPU, or per GPU on cuda).
        shard_size: images per shard (the unit of writing, of resuming and of Ray tasks).
        progress: progress lines on stderr.
        overwrite: replace files with the output names in ``out`` that leansam did not write.
    """

    source: str
    out: str
    spec: JobSpec
    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    shard_size: int = 16
    progress: bool = True
    overwrite: bool = False

    def identity(self) -> dict[str, Any]:
        """What makes the shards in ``out`` reusable (not the engine, workers or shard size)."""
        spec = self.spec.to_dict()
        for k in ("device", "threads", "batch_size"):
            spec.pop(k)
        for k in ("checkpoint", "prompts"):
            spec[k] = _file_identity(spec[k])
        ident = {"version": 1, "source": _source_identity(self.source), **spec}
        return json.loads(json.dumps(ident))  # as run.json reads back (tuples become lists)


def _file_identity(p: str | None) -> dict[str, Any] | None:
    if p is None:
        return None
    path = Path(p).resolve()
    st = path.stat() if path.exists() else None
    return {"path": str(path), "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None}


def _source_identity(source: str) -> str:
    return source if source_kind(source) == "glob" else str(Path(source).resolve())


class ExitHook:
    """The :data:`EXIT_HOOK_ENV` test hook (inactive when the variable is unset)."""

    def __init__(self, value: str | None) -> None:
        self.value = value
        self.after, self.marker, self.count = 0, None, 0
        if value:
            n, _, marker = value.partition(":")
            self.after, self.marker = int(n), Path(marker)

    def tick(self) -> None:
        self.count += 1
        if self.marker is not None and self.count >= self.after and not self.marker.exists():
            self.marker.touch()
            os._exit(3)


def label_shard(labeler: Labeler, task: ShardTask, out: str, hook: ExitHook) -> dict[str, Any]:
    """Labels the images of ``task`` and writes its shard; returns {shard, images, masks, failed}."""
    lines = []
    for item in task.items:
        lines.append(labeler.label(item))
        hook.tick()
    write_shard(out, task.shard, lines)
    failed = [ln for ln in lines if ln["status"] != "ok"]
    return {
        "shard": task.shard,
        "images": len(lines),
        "masks": sum(len(ln.get("masks", ())) for ln in lines),
        "failed": len(failed),
        "errors": [f"{ln['file']}: {ln['error']}" for ln in failed],
    }


class Progress:
    """Images done, images/s and ETA on stderr, at most every ``every`` seconds and at the end."""

    def __init__(self, total: int, enabled: bool, every: float = 2.0) -> None:
        self.total, self.enabled, self.every = total, enabled, every
        self.done = self.masks = self.failed = 0
        self.start = self.last = time.perf_counter()

    def update(self, stats: dict[str, Any]) -> None:
        self.done += stats["images"]
        self.masks += stats["masks"]
        self.failed += stats["failed"]
        for e in stats["errors"]:
            _log(f"warning: skipped {e}")
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or self.done == self.total):
            self.last = now
            _log(self.line())

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"{self.done}/{self.total} images, {rate:.2f} images/s, ETA {_duration(eta)}, "
            f"{self.masks} masks, {self.failed} failed"
        )


def _duration(s: float) -> str:
    if s != s:  # NaN: no rate yet
        return "?"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run_local(
    labeler: Labeler, tasks: Iterable[ShardTask], out: str, on_shard: Callable[[dict], None]
) -> None:
    """Labels ``tasks`` in this process with ``labeler``'s model."""
    hook = ExitHook(os.environ.get(EXIT_HOOK_ENV))
    for task in tasks:
        on_shard(label_shard(labeler, task, out, hook))


def run_dataset(cfg: RunConfig) -> dict[str, Any]:
    """Runs ``cfg``: resumes from the shards in ``cfg.out``, labels the rest, merges; returns the summary.

    Raises:
        InputError: no images in the source, a list file naming missing files, an output folder of
            another run (or held by a running one, or holding files with the output names that
            leansam did not write: :class:`leansam.outputs.RunFolder`), an unknown engine, Ray
            missing or its cluster unreachable. Nothing is written in these cases.
    """
    if cfg.engine not in ENGINES:
        raise InputError(f"unknown engine {cfg.engine!r}; choose one of {', '.join(ENGINES)}")
    if cfg.shard_size <= 0:
        raise InputError(f"shard size must be positive, not {cfg.shard_size}")
    with RunFolder(cfg.out, OWNED, cfg.overwrite):
        return _run(cfg)


def _run(cfg: RunConfig) -> dict[str, Any]:
    check_run(cfg.out, cfg.identity())
    done = {line["file"] for line in read_lines(cfg.out)}
    numbers = shard_numbers(cfg.out)
    tasks = list(plan(iter_images(cfg.source), done, cfg.shard_size, numbers[-1] + 1 if numbers else 0))
    if not tasks and not done:
        raise InputError(f"no images found in {cfg.source} (image files end in .jpg, .png, ...)")
    total = sum(len(t.items) for t in tasks)
    # Everything that can fail on bad input happens before anything is written.
    stop = labeler = None
    if cfg.spec.prompts:
        load_prompt_table(cfg.spec.prompts)
    if cfg.engine == "ray" and tasks:
        from .ray_engine import connect

        stop = connect(cfg.address)
    elif tasks:
        labeler = Labeler(cfg.spec)
    try:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        claim(cfg.out, OWNED, "leansam dataset run")
        write_json(Path(cfg.out) / "run.json", cfg.identity())
        remove_stale_temporaries(cfg.out)
        _log(f"{len(done)} image(s) already done in {cfg.out}; labelling {total} in {len(tasks)} shard(s)")
        progress = Progress(total, cfg.progress)
        if cfg.engine == "ray" and tasks:
            from .ray_engine import run_ray

            run_ray(cfg.spec, tasks, cfg.out, cfg.workers, progress.update, os.environ.get(EXIT_HOOK_ENV))
        elif labeler is not None:
            run_local(labeler, tasks, cfg.out, progress.update)
    finally:
        if stop is not None:
            stop()
    summary = merge(cfg.out)
    summary["seconds"] = time.perf_counter() - progress.start
    summary["images_per_s"] = progress.rate() if total else None
    _log(
        f"done: {summary['images']} images ({summary['labelled']} labelled, {summary['failed']} failed), "
        f"{summary['masks']} masks; this run: {total} images in {summary['seconds']:.1f} s"
    )
    return summary
