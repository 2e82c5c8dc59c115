"""Shared fixtures: a small synthetic COCO set and the tiny test models in the registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leansam.data.synth import generate

from . import tiny

N_IMAGES = 4


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory) -> Path:
    """A read-only synthetic set: ``images/`` and ``annotations.json`` (4 images, seed 0)."""
    root = tmp_path_factory.mktemp("synth") / "set"
    generate(N_IMAGES, root, seed=0)
    return root


@pytest.fixture
def synth_copy(synth_set, tmp_path) -> Path:
    """A private, writable copy of :func:`synth_set`."""
    dst = tmp_path / "set"
    shutil.copytree(synth_set, dst)
    return dst


@pytest.fixture(scope="module")
def tiny_models():
    """Registers ``tiny_test`` and ``tiny_scripted`` for the module."""
    with pytest.MonkeyPatch.context() as mp:
        tiny.register(mp)
        yield tiny
