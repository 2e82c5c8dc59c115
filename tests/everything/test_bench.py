"""benchmark_generators: structure of the result (timings themselves are machine-dependent)."""

from __future__ import annotations

import pytest

from leansam.everything.bench import BenchmarkResult, benchmark_generators
from tests import oracles
from tests.everything.models import RegionSam, rectangles_image, scripted_official


def test_benchmark_generators_times_leansam_and_official():
    image = rectangles_image()
    official = oracles.segment_anything().SamAutomaticMaskGenerator(scripted_official(), points_per_side=8)
    result = benchmark_generators(RegionSam(), image, official=official, repeats=2, points_per_side=8)
    assert isinstance(result, BenchmarkResult)
    assert [r.name for r in result.runs] == ["leansam grid", "leansam hierarchical", "segment_anything grid"]
    grid, hier, ref = result.runs
    assert grid.masks == ref.masks  # same model, same options
    assert grid.prompts == 64 and hier.prompts < 64
    assert all(len(r.all_seconds) == 2 and r.seconds == min(r.all_seconds) > 0 for r in result.runs)
    assert result.speedup("leansam grid", "segment_anything grid") > 0
    table = result.table()
    assert "| leansam hierarchical |" in table and "segment_anything grid" in table
    with pytest.raises(KeyError):
        result.get("nope")
    with pytest.raises(ValueError, match="repeats"):
        benchmark_generators(RegionSam(), image, repeats=0)
