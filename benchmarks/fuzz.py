"""The fuzz run of the parsers of untrusted input, and the tables of docs/security.md.

    python -m benchmarks.fuzz [--examples 10000]        # also: make fuzz

Runs ``tests/hardening/test_fuzz.py`` with ``LEANSAM_FUZZ_EXAMPLES`` generated inputs per parser test
(hypothesis) and writes the counts, the outcome, the peak memory and the limits in force to
``docs/results/fuzz.json``; docs/security.md shows them (``python -m benchmarks docs``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT = Path("docs/results/fuzz.json")


def run(examples: int, out: Path = RESULT) -> int:
    """Runs the fuzz tests; the session writes ``out``. Returns pytest's exit status."""
    env = {**os.environ, "LEANSAM_FUZZ_EXAMPLES": str(examples), "LEANSAM_FUZZ_RESULTS": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hardening/test_fuzz.py"]
    return subprocess.run(cmd, env=env, check=False).returncode


def _bytes(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def limits_table(result: dict[str, Any]) -> str:
    """The limits, their defaults (from the code: ``leansam.limits``, ``--max-pixels``) and how to set them."""
    from leansam import limits
    from leansam.io import DEFAULT_MAX_PIXELS

    rows = [
        "| limit | default | set with |",
        "|---|---:|---|",
        f"| pixels of an image | {DEFAULT_MAX_PIXELS:,} | `--max-pixels N` |",
    ]
    for lim in limits.ALL:
        default = _bytes(lim.default) if lim.unit == "bytes" else f"{lim.default:g}"
        rows.append(f"| {lim.what} | {default} | `{lim.env}=VALUE` |")
    return "\n".join(rows) + "\n"


def summary(result: dict[str, Any]) -> str:
    """The fuzz run: inputs and outcomes per parser."""
    ok = result["failures"] == 0 and result["pytest_exit_status"] == 0
    lines = [
        f"`{result['command']}` with {result['examples_per_test']:,} examples per parser test "
        f"({result['date']}, {result['machine']}): "
        + (
            "every input gave a valid result or leansam's error; no other exception."
            if ok
            else f"**{result['failures']} parser test(s) failed**."
        ),
        "",
        "| parser | inputs | valid result | leansam error |",
        "|---|---:|---:|---:|",
    ]
    for name, counts in result["parsers"].items():
        total = counts["ok"] + counts["error"]
        lines.append(f"| {name} | {total:,} | {counts['ok']:,} | {counts['error']:,} |")
    lines += [
        "",
        f"Peak resident memory of the whole run: {_bytes(result['peak_rss_bytes'])} "
        f"(memory limit in force: {_bytes(result['memory_limit_bytes'])}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--json", type=Path, default=RESULT)
    args = p.parse_args(argv)
    return run(args.examples, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
