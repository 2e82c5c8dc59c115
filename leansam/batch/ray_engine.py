"""The ``ray`` engine: shards labelled by an actor pool on a Ray cluster (Ray Data).

The plan's shards become the rows of a Ray dataset; ``map_batches`` runs them, one shard per
call, on ``workers`` actors that each hold one model (:class:`ShardActor`). The actors write the
shard files themselves (the output folder must be on storage every node sees) and return small
counts, which the driver streams for progress. A worker that dies is restarted and its shard
retried (Ray Data's defaults for actor pools); writing a shard is atomic and idempotent, so a
retried shard never duplicates lines. Ray is imported only here and only when this engine is chosen.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ..io import InputError
from .engine import ExitHook, label_shard
from .jobs import JobSpec, Labeler
from .shards import ShardTask

RAY_HINT = "pip install 'leansam[ray]'"


def require_ray() -> Any:
    """Imports ``ray`` (with Ray Data) or raises ImportError with the install hint."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(f"--engine ray needs Ray Data: {RAY_HINT}") from e
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raises InputError when ``host:port`` (optionally ``ray://``) does not accept connections."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"Ray address must be HOST:PORT, ray://HOST:PORT or auto, not {address!r}")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str | None) -> Callable[[], None] | None:
    """Joins the cluster at ``address`` (None: a new local one; ``auto``: the running one), unless
    this process is already connected. Returns the function that disconnects, or None.

    Raises:
        InputError: Ray is not installed, or the address is unreachable.
    """
    try:
        ray = require_ray()
    except ImportError as e:
        raise InputError(str(e)) from None
    if ray.is_initialized():
        return None
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {e}") from None
    return ray.shutdown


class ShardActor:
    """A Ray Data actor: one model; each call labels the shards of its batch and writes them.

    Subclasses made by :func:`actor_class` set ``spec``, ``out`` and ``exit_hook``; they travel
    with the class, which keeps Ray from storing constructor arguments for actor restarts."""

    spec: dict[str, Any]
    out: str
    exit_hook: str | None = None

    def __init__(self) -> None:
        self.labeler = Labeler(JobSpec.from_dict(self.spec))
        self.hook = ExitHook(self.exit_hook)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = [
            {"shard": int(s), "keys": list(k), "paths": list(p)}
            for s, k, p in zip(batch["shard"], batch["keys"], batch["paths"])
        ]
        stats = [label_shard(self.labeler, ShardTask.from_row(r), self.out, self.hook) for r in rows]
        return {k: [s[k] for s in stats] for k in ("shard", "images", "masks", "failed", "errors")}


def actor_class(spec: JobSpec, out: str, exit_hook: str | None) -> type[ShardActor]:
    """A :class:`ShardActor` bound to one run."""
    return type(
        "BoundShardActor", (ShardActor,), {"spec": spec.to_dict(), "out": str(out), "exit_hook": exit_hook}
    )


def default_workers(device: str) -> int:
    """One worker per GPU of the cluster on cuda, else one per CPU."""
    ray = require_ray()
    res = ray.cluster_resources()
    return max(1, int(res.get("GPU" if device.startswith("cuda") else "CPU", 1)))


def run_ray(
    spec: JobSpec,
    tasks: Sequence[ShardTask],
    out: str,
    workers: int | None,
    on_shard: Callable[[dict], None],
    exit_hook: str | None = None,
) -> None:
    """Labels ``tasks`` on ``workers`` actors of the connected cluster; ``on_shard`` gets each shard's counts."""
    ray = require_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    n = workers or default_workers(spec.device)
    per_actor = {"num_gpus": 1} if spec.device.startswith("cuda") else {"num_cpus": 1}
    ds = ray.data.from_items([t.to_row() for t in tasks], override_num_blocks=max(1, min(len(tasks), 4 * n)))
    results = ds.map_batches(
        actor_class(spec, out, exit_hook),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
        **per_actor,
    )
    for batch in results.iter_batches(batch_size=1, batch_format="numpy"):
        for i in range(len(batch["shard"])):
            on_shard(
                {
                    "shard": int(batch["shard"][i]),
                    "images": int(batch["images"][i]),
                    "masks": int(batch["masks"][i]),
                    "failed": int(batch["failed"][i]),
                    "errors": [str(e) for e in batch["errors"][i]],
                }
            )
