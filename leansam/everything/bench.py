"""Timing of the segment-everything strategies against segment_anything's generator.

    from leansam.everything.bench import benchmark_generators
    result = benchmark_generators(model, image, official=SamAutomaticMaskGenerator(sam, points_per_side=16),
                                  points_per_side=16)
    print(result.table())

Every run is end to end (image encoder included) and timed with ``time.perf_counter``;
the best of ``repeats`` runs is reported. The official generator is optional and is
passed in by the caller, so leansam does not depend on segment_anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .generator import AutomaticMaskGenerator


@dataclass
class RunTiming:
    """One generator on one image.

    Attributes:
        name: e.g. ``"leansam grid"``, ``"segment_anything grid"``.
        seconds: best wall time over the repeats (seconds, encoder included).
        all_seconds: every repeat's wall time.
        masks: records returned.
        prompts: prompts decoded (leansam runs; None for the official generator).
        stats: leansam's :class:`~leansam.everything.GenerateStats` of the best run, as a dict.
    """

    name: str
    seconds: float
    all_seconds: list[float]
    masks: int
    prompts: int | None = None
    stats: dict[str, Any] | None = None


@dataclass
class BenchmarkResult:
    """Timings of several generators on the same image with the same options."""

    image_size: tuple[int, int]
    options: dict[str, Any]
    threads: int
    runs: list[RunTiming] = field(default_factory=list)

    def get(self, name: str) -> RunTiming:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)

    def speedup(self, name: str, baseline: str) -> float:
        """How many times faster ``name`` is than ``baseline`` (best times)."""
        return self.get(baseline).seconds / self.get(name).seconds

    def table(self) -> str:
        """A Markdown table: generator, seconds, masks, prompts decoded, and the leansam stage split."""
        lines = [
            f"image {self.image_size[1]}x{self.image_size[0]}, torch threads {self.threads}, options {self.options}",
            "",
            "| generator | seconds (best) | masks | prompts | encode / decode / filter+RLE / nms (s) |",
            "|---|---:|---:|---:|---|",
        ]
        for r in self.runs:
            split = ""
            if r.stats is not None:
                s = r.stats["seconds"]
                split = f"{s['encode']:.2f} / {s['decode']:.2f} / {s['filter']:.2f} / {s['nms']:.2f}"
            prompts = "" if r.prompts is None else str(r.prompts)
            lines.append(f"| {r.name} | {r.seconds:.2f} | {r.masks} | {prompts} | {split} |")
        return "\n".join(lines)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def benchmark_generators(
    model: Any,
    image: np.ndarray,
    *,
    official: Any = None,
    strategies: Sequence[str] = ("grid", "hierarchical"),
    repeats: int = 1,
    **options: Any,
) -> BenchmarkResult:
    """Times leansam's strategies (and optionally segment_anything's generator) on one image.

    Args:
        model: a :class:`leansam.Sam`.
        image: H x W x 3 uint8 RGB.
        official: segment_anything's generator for the same weights and options, i.e. an
            object with ``generate(image)`` (``SamAutomaticMaskGenerator(sam, **options)``)
            or a callable ``image -> records``; None skips it.
        strategies: leansam strategies to time (``grid``, ``hierarchical``; ``boxes`` needs ``boxes=``).
        repeats: runs per generator; the best time is reported.
        **options: :class:`AutomaticMaskGenerator` options, the same for every leansam run
            (e.g. ``points_per_side=16``); pass the same values to the official generator.

    Returns:
        :class:`BenchmarkResult` with one :class:`RunTiming` per generator, leansam's first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = BenchmarkResult(
        (int(image.shape[0]), int(image.shape[1])),
        {k: v for k, v in options.items() if k != "boxes"},
        torch.get_num_threads(),
    )
    for strategy in strategies:
        gen = AutomaticMaskGenerator(model, strategy, **options)
        stats: list[dict[str, Any]] = []

        def run(gen: AutomaticMaskGenerator = gen, stats: list = stats) -> list[dict[str, Any]]:
            out = gen.generate(image)
            stats.append(gen.last_stats.to_dict())
            return out

        times, records = _time(run, repeats)
        best = int(np.argmin(times))
        result.runs.append(
            RunTiming(
                f"leansam {strategy}",
                times[best],
                times,
                len(records),
                stats[best]["prompts_decoded"],
                stats[best],
            )
        )
    if official is not None:
        fn = official.generate if hasattr(official, "generate") else official
        times, records = _time(lambda: fn(image), repeats)
        result.runs.append(RunTiming("segment_anything grid", min(times), times, len(records)))
    return result
