"""The training loop shared by ``leansam train`` and ``leansam distill``.

What every run gets:

* ``<out>/config.json``: the run's config dataclass (``dataclasses.asdict``), written first.
* ``<out>/metrics.csv``: one row per optimiser step (step, lr, loss, the step function's metrics,
  wall and CPU seconds), flushed every step; a tqdm bar on stderr (rank 0).
* ``<out>/last.pt``: a checkpoint every ``ckpt_every`` steps and at the end, written to a
  temporary file and renamed (a SIGKILL leaves the previous checkpoint intact). It holds the
  step, the trainable module, optimiser, LR scheduler and the torch / numpy / python RNG states.
* ``<out>/model.pt``: the final weights (a plain state_dict loadable by ``leansam.build_model``).
* ``<out>/.leansam-outputs.json``: names these files as leansam's (:func:`leansam.outputs.claim`);
  ``leansam train`` / ``distill`` hold the folder with :func:`hold_run_folder` for the run.

Exact resume: all randomness of a step is drawn from generators seeded with
``(seed, step, rank)`` (see :func:`step_seed`) and the data order is a pure function of the
step (:func:`leansam.train.data.sample_indices`), so restarting from ``last.pt`` replays the
remaining steps bit for bit (same machine, same thread count). Rows of ``metrics.csv`` written
after the checkpoint by a killed run are dropped on resume.

Data parallel: under ``torchrun`` (``WORLD_SIZE > 1``) each rank draws its own samples, gradients
are averaged with one all-reduce per step (gloo on CPU, NCCL on CUDA), and rank 0 writes files.
On CUDA the step function runs under bf16 autocast when ``bf16`` is set.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..io import InputError, torch_save
from ..outputs import RunFolder, claim


@dataclasses.dataclass
class RunConfig:
    """Options every run has.

    Attributes:
        out: output folder (config.json, metrics.csv, last.pt, model.pt).
        steps: optimiser steps (the length of the LR schedule).
        stop_after: end the run after this many steps (0: ``steps``), the schedule unchanged: a run
            cut short keeps the learning rates it was trained with.
        batch_size: images per step per rank.
        lr: peak learning rate (AdamW); linear warm-up for ``warmup`` steps, then cosine to
            ``lr * min_lr_frac``.
        weight_decay: AdamW weight decay.
        warmup: warm-up steps.
        min_lr_frac: final LR as a fraction of ``lr``.
        grad_clip: max gradient norm (0 = off).
        ckpt_every: steps between checkpoints.
        seed: seed of initialisation, data order and prompt sampling.
        threads: torch CPU threads per process (0 = leave torch's default).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        bf16: bf16 autocast on CUDA.
        resume: continue from ``<out>/last.pt`` when present.
        progress: show a tqdm bar.
    """

    out: str = "runs/run"
    steps: int = 100
    stop_after: int = 0
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    min_lr_frac: float = 0.05
    grad_clip: float = 1.0
    ckpt_every: int = 50
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    bf16: bool = True
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.ckpt_every <= 0:
            raise ValueError("steps, batch_size and ckpt_every must be positive")
        if not 0 <= self.stop_after <= self.steps:
            raise ValueError(f"stop_after must be in [0, steps={self.steps}], not {self.stop_after}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, not {self.lr}")
        if self.weight_decay < 0 or self.warmup < 0 or self.grad_clip < 0 or self.threads < 0:
            raise ValueError("weight_decay, warmup, grad_clip and threads must be >= 0")
        if not 0 <= self.min_lr_frac <= 1:
            raise ValueError("min_lr_frac must be in [0, 1]")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, not {self.device!r}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, **dataclasses.asdict(self)}


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed for (seed, step, rank, stream), independent across all four."""
    ss = np.random.SeedSequence([int(seed), int(step), int(rank), int(stream)])
    return int(ss.generate_state(2, np.uint64)[0] >> np.uint64(1))


def lr_lambda(cfg: RunConfig) -> Callable[[int], float]:
    """Warm-up + cosine multiplier of the peak LR at a given step."""

    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / (cfg.warmup + 1)
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


#: The files a run writes in its folder (see leansam.outputs.RunFolder).
RUN_FILES = ("config.json", "metrics.csv", "last.pt", "model.pt")


def hold_run_folder(out: str | Path, overwrite: bool = False) -> contextlib.AbstractContextManager:
    """The run's :class:`leansam.outputs.RunFolder` (checked, locked, foreign files refused) on the
    process that writes (rank 0 under ``torchrun``); a no-op elsewhere."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return contextlib.nullcontext()
    return RunFolder(out, RUN_FILES, overwrite)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch_save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints and assets are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_file(path: str | Path, obj: Any) -> None:
    """Writes JSON atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclasses.dataclass
class DistInfo:
    """Rank, world size and device of this process."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(cfg: RunConfig) -> DistInfo:
    """Threads, device and (under torchrun) the process group."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, device)


def _rng_state() -> dict[str, Any]:
    """The global RNG states as tensors, ints and strings only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    # a checkpoint read onto a GPU (map_location) holds these tensors there: the states live on the CPU
    torch.set_rng_state(s["torch"].cpu())
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))


def read_run_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A run's ``last.pt`` (step, module, optimizer, scheduler, rng, config), read with ``weights_only=True``."""
    return torch.load(path, map_location=device, weights_only=True)


class MetricsCSV:
    """Per-step metrics; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.fields: list[str] | None = None
        rows: list[dict[str, str]] = []
        if resume_step > 0 and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or []) or None
                rows = [r for r in reader if int(r["step"]) < resume_step]
        if self.fields:
            self._rewrite(rows)  # the kept rows stay intact if this fails (a full disk)
            self.f = open(path, "a", newline="")  # noqa: SIM115 (closed by close())
            self.w = csv.DictWriter(self.f, self.fields)
        else:
            self.f = open(path, "w", newline="")  # noqa: SIM115 (closed by close())

    def write(self, row: dict[str, float]) -> None:
        if self.fields is not None and not set(row) <= set(self.fields):
            self._add_columns([k for k in row if k not in self.fields])
        if self.fields is None:
            self.fields = list(row)
            self.w = csv.DictWriter(self.f, self.fields)
            self.w.writeheader()
        self.w.writerow({k: row.get(k, "") for k in self.fields})
        self.f.flush()

    def _add_columns(self, new: list[str]) -> None:
        """Rewrites the file with extra (empty so far) columns: a resumed run may log more metrics."""
        self.f.close()
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = [*(self.fields or []), *new]
        self._rewrite(rows)
        self.f = open(self.path, "a", newline="")  # noqa: SIM115 (closed by close())
        self.w = csv.DictWriter(self.f, self.fields)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """Replaces the file with the header and ``rows`` (temporary file, then rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, self.fields or [])
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def close(self) -> None:
        self.f.close()


StepFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


def _optimizer(
    cfg: RunConfig, module: nn.Module, params: list[nn.Parameter] | list[dict[str, Any]] | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, list[nn.Parameter]]:
    """AdamW over ``params`` (or parameter groups with an ``lr_scale``), its schedule, the flat list."""
    params = params if params is not None else [p for p in module.parameters() if p.requires_grad]
    if params and isinstance(params[0], dict):
        groups = [{"params": g["params"], "lr": cfg.lr * g.get("lr_scale", 1.0)} for g in params]
        params = [p for g in groups for p in g["params"]]
    else:
        groups = params
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg)), params


def _resume(cfg: RunConfig, module: nn.Module, opt, sched, info: DistInfo) -> int:
    """Loads ``<out>/last.pt`` when resuming (returns its step), else syncs the ranks' weights (0).

    A ``last.pt`` with only ``step`` and ``module`` (a committed snapshot, see
    :func:`leansam.train.recipe.snapshot_stage`) resumes the weights and the LR schedule; the
    optimizer's moments start afresh. Data and augmentation are seeded per step either way.
    """
    ckpt = Path(cfg.out) / "last.pt"
    if cfg.resume and ckpt.is_file():
        state = read_run_checkpoint(ckpt, info.device)
        module.load_state_dict(state["module"])  # copied into the module's dtypes (fp16 snapshots too)
        step = int(state["step"])
        if "optimizer" not in state:  # a weights-only snapshot: fresh AdamW moments, schedule at `step`
            lrs = [base * f(step) for base, f in zip(sched.base_lrs, sched.lr_lambdas)]
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
            sched.last_epoch, sched._last_lr = step, lrs
            return step
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return step
    if info.world > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)
    return 0


def _one_step(
    cfg: RunConfig, step: int, step_fn: StepFn, opt, sched, params: list[nn.Parameter], info: DistInfo
) -> dict[str, float]:
    """One optimiser step (global RNGs reseeded from ``(seed, step, rank)``); returns its metrics row."""
    t0, c0 = time.perf_counter(), time.process_time()
    seed = step_seed(cfg.seed, step, info.rank, 99)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=info.device.type == "cuda" and cfg.bf16):
        loss, metrics = step_fn(step)
    loss.backward()
    if info.world > 1:
        _allreduce_grads(params, info.world)
    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    row = {"step": step, "lr": lr, "loss": float(loss.detach()), "grad_norm": float(gnorm), **metrics}
    if info.world > 1:
        row = _average_metrics(row, info.world)
    row["seconds"] = time.perf_counter() - t0
    row["cpu_seconds"] = time.process_time() - c0  # all threads of this process
    return row


def _save_checkpoint(cfg: RunConfig, done: int, module: nn.Module, opt, sched, info: DistInfo) -> None:
    if info.main:
        state = {
            "step": done,
            "module": module.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            "config": cfg.to_json(),
        }
        save_atomic(state, Path(cfg.out) / "last.pt")
    if info.world > 1:
        dist.barrier()


def fit(
    cfg: RunConfig,
    module: nn.Module,
    step_fn: StepFn,
    info: DistInfo,
    export: Callable[[], dict[str, torch.Tensor]],
    params: list[nn.Parameter] | list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Runs (or resumes) ``cfg.steps`` (or ``cfg.stop_after``) optimiser steps of ``step_fn``.

    Args:
        cfg: the run's config (saved as config.json).
        module: everything trainable whose state a checkpoint must hold (already on device).
        step_fn: ``f(step) -> (loss, metrics)``; must draw randomness only from
            :func:`step_seed`-seeded generators (or the global RNGs, reseeded here each step).
        info: from :func:`setup`.
        export: returns the final model state_dict for ``model.pt``.
        params: parameters to optimise (default: all of ``module`` that require grad), or AdamW
            parameter groups (dicts with ``params`` and an optional ``lr_scale`` of ``cfg.lr``).

    Returns:
        the metrics of the last step.
    """
    out = Path(cfg.out)
    opt, sched, params = _optimizer(cfg, module, params)
    start = _resume(cfg, module, opt, sched, info)
    end = cfg.stop_after or cfg.steps
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        claim(out, RUN_FILES, "leansam training run")
        write_json_file(out / "config.json", cfg.to_json())
    log = MetricsCSV(out / "metrics.csv", start) if info.main else None
    bar = None
    if info.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=start, desc=out.name, dynamic_ncols=True, mininterval=2.0)
    last: dict[str, float] = {}
    module.train()
    for step in range(start, end):
        last = _one_step(cfg, step, step_fn, opt, sched, params, info)
        if log is not None:
            log.write(last)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            _save_checkpoint(cfg, step + 1, module, opt, sched, info)
    for closing in (bar, log):
        if closing is not None:
            closing.close()
    if info.world > 1:
        check_in_sync(module)
    if info.main:
        save_atomic({k: v.detach().cpu() for k, v in export().items()}, out / "model.pt")
    if info.world > 1:
        dist.barrier()
    return last


def check_in_sync(module: nn.Module) -> None:
    """Raises if the ranks' parameters differ (they must stay bit-identical under data parallelism)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    mine = torch.stack(
        [flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64).remainder(97)).sum()]
    )
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError("data-parallel ranks diverged: their parameters differ after training")


def _allreduce_grads(params: list[nn.Parameter], world: int) -> None:
    """Averages gradients over ranks with one flat all-reduce (missing grads count as zero)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i : i + n].view_as(g).clone()
        i += n


def _average_metrics(row: dict[str, float], world: int) -> dict[str, float]:
    keys = [k for k in row if k != "step"]
    t = torch.tensor([float(row[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {"step": row["step"], **{k: float(v) / world for k, v in zip(keys, t.tolist())}}
