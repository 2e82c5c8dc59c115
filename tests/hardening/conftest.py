"""Shared helpers of the hardening tests: run the CLI in-process, check the one-line error contract."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
from pathlib import Path

import pytest

from leansam import limits
from leansam.cli import main
from leansam.data.synth import generate
from tests.eval.conftest import tiny_models  # noqa: F401 (the fixture, shared)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "leansam" / "assets" / "example.jpg"


def cli(args, capsys) -> tuple[int, str, str]:
    """``leansam ARGS`` in this process: (status, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(code: int, err: str, pattern: str, status: int = 2) -> str:
    """One ``error:`` line containing ``pattern``, exit ``status``, no traceback; returns the line."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]  # progress lines may precede it
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory) -> Path:
    """A synthetic COCO set (``images/``, ``annotations.json``; 2 images)."""
    root = tmp_path_factory.mktemp("hsynth") / "set"
    generate(2, root, seed=0)
    return root


@pytest.fixture(scope="module")
def case_inputs(tiny_models, synth_set, tmp_path_factory) -> dict:  # noqa: F811 (the fixture)
    """What the cases of ``output_cases.py`` read: a synthetic set, a bench results.json, a folder."""
    root = tmp_path_factory.mktemp("faults")
    results = root / "bench"
    args = ["bench", "--models", "tiny_test", "--runs", "1", "--warmup", "0", "--prompts", "1"]
    args += ["--batches", "1", "--no-everything", "--no-memory", "--out", results]
    assert main([str(a) for a in args]) == 0
    return {"root": root, "set": synth_set, "bench": results / "results.json"}


def coco(synth_set: Path) -> dict:
    """A fresh copy of the synthetic set's annotations."""
    return json.loads((synth_set / "annotations.json").read_text())


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def pytest_sessionfinish(session, exitstatus) -> None:
    """With ``LEANSAM_FUZZ_RESULTS=PATH`` (``make fuzz``): the fuzz counts and outcome as JSON."""
    target = os.environ.get("LEANSAM_FUZZ_RESULTS")
    if not target:
        return
    from tests.hardening.test_fuzz import EXAMPLES, STATS

    parsers: dict[str, dict[str, int]] = {}
    for (parser, outcome), n in sorted(STATS.items()):
        parsers.setdefault(parser, {"ok": 0, "error": 0})[outcome] = n
    result = {
        "command": "python -m benchmarks.fuzz (make fuzz)",
        "examples_per_test": EXAMPLES,
        "parsers": parsers,
        "inputs_per_parser": {k: v["ok"] + v["error"] for k, v in parsers.items()},
        "pytest_exit_status": int(exitstatus),
        "failures": session.testsfailed,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "memory_limit_bytes": limits.value(limits.MEMORY),
        "machine": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    Path(target).write_text(json.dumps(result, indent=1) + "\n")
