"""Per-image result cache: JSON lines appended atomically, so an interrupted run resumes.

Layout in the output folder::

    run.json                 what was run (model, checkpoint, prompt, data files): a resumed run
                             must match it; written with the first result, not before
    per_image/rank<R>.jsonl  one line per image: {"image_id", "status": "ok" | "failed", ...}

Each process (``torchrun`` rank) appends to its own file with one ``write`` of a whole line
followed by ``fsync``; a line cut short by a crash is dropped when the file is opened again.
Reading merges every ``rank*.jsonl`` (any earlier world size), so a run can be resumed with a
different number of processes. An image counts as done when some file holds an ``ok`` line
for it; failed images are retried.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..io import InputError, write_json
from ..outputs import claim

CACHE_VERSION = 1
#: The entries of an eval output folder: this cache and the results (leansam.outputs.RunFolder).
OWNED = ("run.json", "per_image", "results.json", "segm_results.json")


class ImageCache:
    """The per-image JSONL cache of one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path, rank: int = 0) -> None:
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"output path {self.out} exists and is not a folder")
        self.dir = self.out / "per_image"
        self.rank = rank
        self._fd: int | None = None
        self._pending_run: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.dir / f"rank{self.rank}.jsonl"

    # --- run identity ----------------------------------------------------------------------------
    def check_run(self, run: dict[str, Any], fresh: bool = False, write: bool = True) -> None:
        """Ties the cache to ``run``; clears it when ``fresh``.

        Raises:
            InputError: the folder holds per-image results of a different run (and not ``fresh``).
        """
        meta = self.out / "run.json"
        run = {"cache_version": CACHE_VERSION, **run}
        if fresh:
            if write:
                self.clear()
        elif meta.exists():
            try:
                old = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != run and any(self.dir.glob("rank*.jsonl")):
                diff = sorted(k for k in run if not isinstance(old, dict) or old.get(k) != run[k])
                raise InputError(
                    f"{self.out} holds per-image results of a different run (differs in: {', '.join(diff)}); "
                    f"use another --out, or --fresh to discard them"
                )
        # Written with the first result (or the final outputs), never before anything can fail.
        self._pending_run = run if write else None

    def write_run(self) -> None:
        """Writes ``run.json`` (what :meth:`check_run` was given), creating the folder, once."""
        if self._pending_run is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            claim(self.out, OWNED, "leansam eval")
            write_json(self.out / "run.json", self._pending_run)
            self._pending_run = None

    def clear(self) -> None:
        """Deletes the cached per-image results."""
        for p in self.dir.glob("rank*.jsonl"):
            p.unlink()

    # --- writing ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Appends one image's record as one line (single write + fsync)."""
        if self._fd is None:
            self.write_run()
            self.dir.mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- reading ---------------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record of every rank file (lines that do not parse are skipped)."""
        for p in sorted(self.dir.glob("rank*.jsonl")):
            with open(p, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        continue  # cut short by a crash
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "image_id" in rec:
                        yield rec

    def done(self) -> dict[int, dict[str, Any]]:
        """image id -> its ``ok`` record (failed images are not done)."""
        return {int(r["image_id"]): r for r in self.records() if r.get("status") == "ok"}


def _drop_partial_line(path: Path) -> None:
    """Truncates a file after its last newline (removes a line cut short by a crash)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back for the last newline.
        pos = size
        chunk = 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)
