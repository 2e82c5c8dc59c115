"""The output folder of a dataset run: shards of JSON Lines, the plan of the remaining work, the merge.

Layout::

    OUT/run.json                      what was run (task, model, weights, options, source):
                                      a rerun into OUT must match it
    OUT/shards/shard-NNNNNN.jsonl     one line per image (leansam.batch.jobs), written whole:
                                      a temporary file renamed into place when complete
    OUT/coco.json                     every shard merged into one COCO file (after the run)
    OUT/summary.json                  images, masks, failures with their reasons

A shard file exists only when all of its images are done, so the images of the shard files are
exactly the finished ones: a rerun plans new shards (numbered after the existing ones) for the
other images only. Writing a shard again (a retried worker) replaces it with the same lines.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import InputError, atomic_path
from .sources import ImageItem

SHARDS = "shards"
_SHARD = re.compile(r"^shard-(\d{6,})\.jsonl$")


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: ``shard`` (its number) and its images."""

    shard: int
    items: tuple[ImageItem, ...]

    def to_row(self) -> dict[str, Any]:
        """A plain row (for Ray Data): shard number, keys, paths."""
        return {
            "shard": self.shard,
            "keys": [i.key for i in self.items],
            "paths": [i.path for i in self.items],
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ShardTask:
        return cls(
            int(row["shard"]), tuple(ImageItem(str(k), str(p)) for k, p in zip(row["keys"], row["paths"]))
        )


def shard_path(out: str | Path, shard: int) -> Path:
    return Path(out) / SHARDS / f"shard-{shard:06d}.jsonl"


def dumps_line(line: dict[str, Any]) -> str:
    """One result line as compact JSON (no NaN), without the newline."""
    return json.dumps(line, separators=(",", ":"), allow_nan=False)


def write_shard(out: str | Path, shard: int, lines: Iterable[dict[str, Any]]) -> Path:
    """Writes a whole shard atomically (temporary file, fsync, rename); returns its path."""
    dest = shard_path(out, shard)
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(dumps_line(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return dest


def shard_numbers(out: str | Path) -> list[int]:
    """The numbers of the complete shards in ``out``, ascending."""
    folder = Path(out) / SHARDS
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _SHARD.match(p.name)))


def read_lines(out: str | Path) -> Iterator[dict[str, Any]]:
    """Every result line of every complete shard, in shard order."""
    for n in shard_numbers(out):
        with open(shard_path(out, n), encoding="utf-8") as f:
            for raw in f:
                yield json.loads(raw)


def remove_stale_temporaries(out: str | Path) -> None:
    """Deletes the temporary files of shards whose writer died before the rename."""
    folder = Path(out) / SHARDS
    if folder.is_dir():
        for p in folder.glob(".shard-*.tmp"):
            p.unlink(missing_ok=True)


def plan(items: Iterable[ImageItem], done: set[str], shard_size: int, first: int) -> Iterator[ShardTask]:
    """Groups the images not in ``done`` into shards of ``shard_size``, numbered from ``first``."""
    chunk: list[ImageItem] = []
    n = first
    for item in items:
        if item.key in done:
            continue
        chunk.append(item)
        if len(chunk) == shard_size:
            yield ShardTask(n, tuple(chunk))
            n, chunk = n + 1, []
    if chunk:
        yield ShardTask(n, tuple(chunk))


def check_run(out: str | Path, identity: dict[str, Any]) -> None:
    """Refuses an output folder holding shards of a different run.

    Raises:
        InputError: ``out`` is a file, or its ``run.json`` differs from ``identity`` while shards exist.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    meta = out / "run.json"
    if not shard_numbers(out):
        return
    try:
        old = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if old != identity:
        diff = sorted(k for k in identity if not isinstance(old, dict) or old.get(k) != identity[k])
        raise InputError(
            f"{out} holds results of a different run (differs in: {', '.join(diff) or 'run.json'}); "
            f"use another --out"
        )


def merge(out: str | Path) -> dict[str, Any]:
    """Writes ``coco.json`` and ``summary.json`` from the shards; returns the summary.

    ``coco.json`` is a COCO instances file whose annotations also carry ``score``, so it serves
    both as a data set (``pycocotools.coco.COCO``) and, through its ``annotations``, as a COCO
    results list. Categories are the prompts file's ``category_id`` values, else one ``object``.

    Images are numbered 1, 2, ... in shard order unless their lines carry an ``image_id`` (from a
    prompts file); annotation ids likewise, in line order. The result depends only on the shard
    files, so it is the same for every engine and every rerun.
    """
    out = Path(out)
    summary: dict[str, Any] = {"images": 0, "labelled": 0, "masks": 0, "failed": 0, "failures": []}
    with atomic_path(out / "coco.json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"info":{"description":"leansam dataset run"},"images":[')
        first = True
        for n, line in enumerate(_ok_lines(out, summary), 1):
            image = {"id": line.get("image_id", n), "file_name": line["file"]}
            image.update(height=line["height"], width=line["width"])
            f.write(("" if first else ",") + dumps_line(image))
            first = False
        f.write('],"annotations":[')
        first, ann_id, categories = True, 0, {1}
        for n, line in enumerate(_ok_lines(out, None), 1):
            for m in line["masks"]:
                ann_id += 1
                categories.add(m.get("category_id", 1))
                ann = {
                    "id": ann_id,
                    "image_id": line.get("image_id", n),
                    "category_id": m.get("category_id", 1),
                }
                ann.update({k: m[k] for k in ("segmentation", "area", "bbox", "score")}, iscrowd=0)
                f.write(("" if first else ",") + dumps_line(ann))
                first = False
        cats = [{"id": c, "name": "object" if c == 1 else f"category {c}"} for c in sorted(categories)]
        f.write('],"categories":' + dumps_line(cats) + "}\n")
    summary["masks"] = ann_id
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _ok_lines(out: Path, summary: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The ``ok`` lines; counts images and failures into ``summary`` on the way (when given)."""
    for line in read_lines(out):
        if summary is not None:
            summary["images"] += 1
        if line.get("status") == "ok":
            if summary is not None:
                summary["labelled"] += 1
            yield line
        elif summary is not None:
            summary["failed"] += 1
            summary["failures"].append({"file": line["file"], "error": line.get("error", "")})
