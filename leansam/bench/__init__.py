"""Benchmarks: one protocol for every model, plus the timing / counting / memory pieces.

* :func:`run_benchmark` / :class:`BenchConfig` / :class:`BenchResult` — params, MACs, peak memory,
  encoder / decoder / one-box latency, throughput, segment-everything (``leansam bench``).
* :func:`write_outputs`, :func:`render_markdown` — the run's JSON, CSV, markdown report and PNG plots.
* :func:`model_macs`, :func:`param_counts`, :func:`peak_memory` — the measurements on their own.
* :func:`measure`, :func:`machine_fingerprint`, :class:`~leansam.bench.timing.StageTimer` — timing loops
  that exclude warm-up, machine fingerprints, time per stage.

The benchmark scripts and the page they write (docs/benchmarks.md) live in ``benchmarks/``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported lazily: ``import leansam.bench`` stays cheap.
_EXPORTS = {
    "MacCounts": "flops",
    "ParamCounts": "flops",
    "build_meta": "flops",
    "count_macs": "flops",
    "model_macs": "flops",
    "param_counts": "flops",
    "MemoryPeak": "memory",
    "peak_memory": "memory",
    "render_markdown": "report",
    "write_outputs": "report",
    "BenchConfig": "protocol",
    "BenchResult": "results",
    "ModelBench": "results",
    "run_benchmark": "protocol",
    "Timing": "timing",
    "machine_fingerprint": "timing",
    "measure": "timing",
}

if TYPE_CHECKING:
    from .flops import MacCounts, ParamCounts, build_meta, count_macs, model_macs, param_counts
    from .memory import MemoryPeak, peak_memory
    from .protocol import BenchConfig, run_benchmark
    from .report import render_markdown, write_outputs
    from .results import BenchResult, ModelBench
    from .timing import Timing, machine_fingerprint, measure


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BenchConfig",
    "BenchResult",
    "MacCounts",
    "MemoryPeak",
    "ModelBench",
    "ParamCounts",
    "Timing",
    "build_meta",
    "count_macs",
    "machine_fingerprint",
    "measure",
    "model_macs",
    "param_counts",
    "peak_memory",
    "render_markdown",
    "run_benchmark",
    "write_outputs",
]
