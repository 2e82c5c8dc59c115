"""Timing loops and machine fingerprints shared by every benchmark."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``runs`` timed calls (warm-up calls excluded)."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def p90(self) -> float:
        s = sorted(self.runs)
        return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]

    @property
    def best(self) -> float:
        return min(self.runs)

    def to_dict(self) -> dict:
        return {"median_s": self.median, "p90_s": self.p90, "best_s": self.best, "runs_s": list(self.runs)}


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], runs: int = 5, warmup: int = 1, device: torch.device | str | None = None
) -> Timing:
    """Calls ``fn`` ``warmup`` times untimed, then ``runs`` times timed (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return Timing(tuple(times))


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    runs: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Times several functions in alternation (A B A B ...) so machine-load drift hits all alike.

    ``clock``: wall time by default; ``time.thread_time`` measures the calling thread's CPU time
    (single-threaded work on a shared machine, where waiting for a core is not the code's cost).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return {k: Timing(tuple(v)) for k, v in times.items()}


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    threads: int
    torch: str
    device: str
    platform: str

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fingerprint(device: str = "cpu") -> Machine:
    """CPU model, cores, torch threads, torch version and device of this run."""
    dev = device
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        device=dev,
        platform=platform.platform(),
    )


class StageTimer:
    """Wall time spent inside chosen modules and methods, summed per stage name, call after call.

    Both sides of a comparison can be split the same way (e.g. image encoder, mask decoder,
    upscaling) without touching their code:

        timer = StageTimer()
        timer.module("encoder", model.image_encoder)          # forward pre/post hooks
        timer.method("upscale", model, "postprocess_masks")   # an instance-attribute wrapper
        gen.generate(image); split = timer.take()             # {"encoder": s, "upscale": s}

    Several wrappers may feed one stage; they must not nest (nested time would count twice).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def _add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def module(self, name: str, module: torch.nn.Module) -> None:
        """Adds the time of every ``module(...)`` call to stage ``name``."""

        def pre(_m: Any, _a: Any) -> None:
            self._start[name] = time.perf_counter()

        def post(_m: Any, _a: Any, _o: Any) -> None:
            self._add(name, time.perf_counter() - self._start.pop(name))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def method(self, name: str, obj: Any, attr: str) -> None:
        """Adds the time of every ``obj.attr(...)`` call to stage ``name`` (wraps the bound method)."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - t)

        object.__setattr__(obj, attr, timed)  # plain attribute, also on an nn.Module

    def take(self) -> dict[str, float]:
        """The seconds per stage since the last ``take`` (then starts again from zero)."""
        out, self.seconds = self.seconds, {}
        return out
