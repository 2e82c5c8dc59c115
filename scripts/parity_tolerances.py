"""Measure the parity tests' worst differences, set their tolerances, and write the docs table.

    python scripts/parity_tolerances.py measure [--slow] [PYTEST_ARGS...]
    python scripts/parity_tolerances.py docs [--check]

``measure`` runs the parity tests with ``LEANSAM_RECORD_TOLERANCES`` set (each check records its
observed difference instead of asserting; see tests/tolerances.py), then writes
``tests/parity_tolerances.json``: per check the worst observed difference, the metric's floor,
and the threshold ``MARGIN x max(observed, floor)``. Checks not run this time keep their entry.
``--slow`` includes the slow lane (heavy models). ``docs`` regenerates the tolerance table in
docs/testing.md from that file (``--check``: exit 1 if the page differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_tables import splice  # noqa: E402

from tests import tolerances as T  # noqa: E402

PARITY_TESTS = (
    "tests/video/test_parity.py",
    "tests/video/test_stream.py",
    "tests/video/test_onnx.py",
    "tests/video/test_oracle.py",
    "tests/models/test_registry_parity.py",
    "tests/models/test_mobile_sam_oracle.py",
    "tests/models/test_sam_vit.py",
    "tests/models/test_sam2_oracle.py",
    "tests/models/test_efficientvit_oracle.py",
    "tests/models/test_efficientvit.py",
    "tests/models/test_efficientsam.py",
    "tests/models/test_efficienttam.py",
    "tests/models/test_hiera.py",
    "tests/models/test_repvit.py",
    "tests/models/test_slimsam.py",
    "tests/models/test_tiny_vit.py",
)
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- tolerances:begin -->", "<!-- tolerances:end -->"


def measure(slow: bool, extra: list[str]) -> int:
    """Runs the parity tests in recording mode and merges what they observed into the table."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "observed.jsonl"
        record.touch()
        env = {**os.environ, T.RECORD_ENV: str(record)}
        # An empty -m overrides the "not slow" of pyproject's addopts.
        lane = ["-m", ""] if slow else ["-m", "not slow"]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *lane, *PARITY_TESTS, *extra]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        rows = [json.loads(line) for line in record.read_text().splitlines()]
    if rc != 0:
        print(f"error: the parity tests failed (exit {rc}); the table is left unchanged", file=sys.stderr)
        return 2
    checks = json.loads(T.TABLE.read_text())["checks"] if T.TABLE.is_file() else {}
    worst: dict[str, dict[str, float]] = {}
    for r in rows:
        w = worst.setdefault(r["key"], {"observed": 0.0, "floor": 0.0})
        w["observed"] = max(w["observed"], r["observed"])
        w["floor"] = max(w["floor"], r["floor"])
    for key, w in worst.items():
        threshold = T.MARGIN * max(w["observed"], w["floor"])
        checks[key] = {**w, "threshold": threshold, "margin": T.MARGIN}
    table = {
        "written_by": "python scripts/parity_tolerances.py measure" + (" --slow" if slow else ""),
        "margin": T.MARGIN,
        "checks": dict(sorted(checks.items())),
    }
    T.TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{len(worst)} checks measured, {len(checks)} in {T.TABLE.relative_to(ROOT)}")
    return 0


def render_table() -> str:
    """The markdown table of every check in tests/parity_tolerances.json."""
    table = json.loads(T.TABLE.read_text())
    lines = [
        f"Written by `{table['written_by']}` into `tests/parity_tolerances.json`; "
        f"threshold = {table['margin']:g} x max(observed, floor).",
        "",
        "| check | observed worst | floor | threshold | margin |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, c in table["checks"].items():
        lines.append(
            f"| `{key}` | {c['observed']:.3g} | {c['floor']:.3g} | {c['threshold']:.3g} | {c['margin']:g}x |"
        )
    return "\n".join(lines)


def docs(check: bool) -> int:
    """Regenerates the table in docs/testing.md (``check``: exit 1 if the page differs)."""
    return splice(DOC, BEGIN, END, render_table(), check)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("measure", "docs"):
        print(
            f"error: usage: {__doc__.strip().splitlines()[2].strip()} | ... docs [--check]", file=sys.stderr
        )
        return 2
    if argv[0] == "measure":
        slow = "--slow" in argv[1:]
        return measure(slow, [a for a in argv[1:] if a != "--slow"])
    return docs("--check" in argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
