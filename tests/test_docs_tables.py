"""docs/testing.md's tables are what the scripts generate from their results files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["parity_tolerances.py", "mutate.py"])
def test_testing_page_is_regenerated_from_the_results(script: str) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "docs", "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, f"docs/testing.md is stale: run python scripts/{script} docs\n{r.stderr}"
