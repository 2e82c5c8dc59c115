"""Shared fixtures of the dataset-engine tests: a small synthetic image set, read-only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leansam.data.synth import SynthConfig, generate

N_IMAGES = 7
#: Options that make the bundled leansam_nano keep some masks on the synthetic images, fast.
EVERYTHING_OPTS = [
    "--points-per-side",
    "4",
    "--pred-iou-thresh",
    "0.1",
    "--stability-score-thresh",
    "0.3",
]


@pytest.fixture(scope="session")
def synth_images(tmp_path_factory) -> Path:
    """7 small synthetic images (64-128 px) with COCO annotations: ``images/`` and ``annotations.json``."""
    root = tmp_path_factory.mktemp("batch") / "set"
    generate(N_IMAGES, root, seed=3, config=SynthConfig(min_side=64, max_side=128))
    return root


@pytest.fixture
def dataset(synth_images, tmp_path) -> Path:
    """A writable folder of the synthetic images, 2 of them in a subfolder."""
    dst = tmp_path / "data"
    shutil.copytree(synth_images / "images", dst)
    (dst / "sub").mkdir()
    for name in ("000005.jpg", "000006.jpg"):
        (dst / name).rename(dst / "sub" / name)
    return dst


def shard_lines(out: Path) -> list[dict]:
    """Every line of every shard of ``out``, in shard order."""
    lines = []
    for p in sorted((out / "shards").glob("shard-*.jsonl")):
        lines += [json.loads(s) for s in p.read_text().splitlines()]
    return lines


def folder_bytes(out: Path) -> dict[str, bytes]:
    """{relative path: content} of every file under ``out``."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
