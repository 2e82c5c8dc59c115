"""Peak memory of one call.

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (bytes held by
  torch's allocator, above what was allocated before the call).
* CPU (Linux): the process's resident-set high-water mark ``VmHWM`` from ``/proc/self/status``.
  Writing ``5`` to ``/proc/self/clear_refs`` resets the mark to the current RSS, so the
  peak of the call is ``VmHWM after - VmRSS before``. (``tracemalloc`` does not see torch's
  allocations, so it is not used.) Where the reset is not allowed, the absolute high-water
  mark is reported with ``method = "vmhwm_absolute"`` (an upper bound that includes everything
  the process touched before).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MemoryPeak:
    """Peak bytes of one call and how they were measured (``cuda_allocator``, ``vmhwm_delta``,
    ``vmhwm_absolute`` or ``unavailable``)."""

    peak_bytes: int | None
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu") -> MemoryPeak:
    """Runs ``fn()`` once and returns the peak memory it needed (see the module docstring)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return MemoryPeak(int(torch.cuda.max_memory_allocated(dev) - before), "cuda_allocator")
    reset = _reset_hwm()
    before = _status_kib("VmRSS")
    fn()
    hwm = _status_kib("VmHWM")
    if hwm is None or before is None:
        return MemoryPeak(None, "unavailable")
    if reset:
        return MemoryPeak(max(0, hwm - before) * 1024, "vmhwm_delta")
    return MemoryPeak(hwm * 1024, "vmhwm_absolute")


def segany_peak_subprocess(
    name: str,
    device: str = "cpu",
    dtype: str = "fp32",
    threads: int | None = None,
    image_size: tuple[int, int] = (480, 640),
    seed: int = 0,
    timeout: float = 1800.0,
) -> MemoryPeak:
    """Peak memory of one end-to-end one-box call of ``name``, measured in a fresh process.

    A fresh process has no heap left over from other models (freed memory that the allocator
    keeps would hide part of the peak), so models are comparable. The child builds the model
    with random weights (memory does not depend on weight values), runs the call once and
    reports the ``VmHWM`` delta around it (CPU) or the allocator peak (CUDA).
    """
    import json
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "leansam.bench._peak_child",
        name,
        "--device",
        device,
        "--dtype",
        dtype,
        "--size",
        f"{image_size[0]}x{image_size[1]}",
        "--seed",
        str(seed),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}): {tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return MemoryPeak(out["peak_bytes"], out["method"] + "_subprocess")


if __name__ == "__main__":  # pragma: no cover - kept for `python -m leansam.bench.memory NAME`
    from ._peak_child import main

    raise SystemExit(main())
