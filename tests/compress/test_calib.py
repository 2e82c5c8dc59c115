"""Calibration images: deterministic selection, model preprocessing, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leansam.compress.calib import find_images, load_calibration
from leansam.io import InputError

from .helpers import tiny_fp32


def _write(folder, names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.fromarray(np.full((20 + i, 30, 3), 10 * i, np.uint8)).save(folder / n)


def test_selection_is_sorted_and_limited(tmp_path):
    _write(tmp_path, ["b.png", "a.JPG", "c.jpeg"])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["a.JPG", "b.png", "c.jpeg"]
    assert [p.name for p in find_images(tmp_path, 2)] == ["a.JPG", "b.png"]


def test_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_images(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        find_images(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="has no images"):
        find_images(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="not an image"):
        load_calibration(broken, 4)
    with pytest.raises(InputError, match="uint8"):
        load_calibration([np.zeros((4, 4), np.uint8)], 1)


def test_inputs_use_the_models_preprocessing(tmp_path):
    _write(tmp_path, ["a.png", "b.png"])
    cal = load_calibration(tmp_path, 8)
    assert len(cal) == 2 and cal.names[0].endswith("a.png")
    model = tiny_fp32()
    xs = cal.inputs(model)
    assert [tuple(x.shape) for x in xs] == [(1, 3, 256, 256)] * 2
    assert torch.equal(xs[1], model.preprocess(cal.images[1]))
