"""Fixtures for the ``leansam serve`` tests: images, an in-process app, a real uvicorn server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

try:
    import fastapi  # noqa: F401
except ImportError:  # a CI machine must have the test extra: fail there instead of skipping
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("needs the serve extra: pip install 'leansam[serve]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "leansam" / "assets" / "example.jpg"


@pytest.fixture(scope="session")
def tiny():
    """The bundled default model, built the way the server builds it (at test time: never stored numbers)."""
    import leansam

    return leansam.build_model("leansam_tiny")


@pytest.fixture(scope="session")
def example_image() -> np.ndarray:
    from leansam.io import load_image

    return load_image(EXAMPLE)


def reference_masks(model, image: np.ndarray, **prompts) -> tuple[np.ndarray, np.ndarray]:
    """What :class:`leansam.SamPredictor` gives for ``prompts`` (its predict() arguments)."""
    import leansam

    pred = leansam.SamPredictor(model)
    pred.set_image(image)
    masks, scores, _ = pred.predict(**prompts)
    return masks, scores


def decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """A folder for --images: the example image, a sub-folder, and symlinks leading outside it."""
    base = tmp_path_factory.mktemp("serve")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(EXAMPLE.read_bytes())
    (outside / "secret.txt").write_text("top secret\n")
    d = base / "images"
    (d / "sub").mkdir(parents=True)
    (d / "example.jpg").write_bytes(EXAMPLE.read_bytes())
    (d / "sub" / "copy.jpg").write_bytes(EXAMPLE.read_bytes())
    (d / "link_out.png").symlink_to(outside / "secret.png")
    (d / "linkdir").symlink_to(outside, target_is_directory=True)
    (d / "link_in.jpg").symlink_to(d / "example.jpg")
    return d


@pytest.fixture(scope="module")
def server(image_dir, tmp_path_factory):
    """``leansam serve`` run as a user would, on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "LEANSAM_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "leansam.cli", "serve", "--port", str(port), "--images", str(image_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/api/models", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"leansam serve did not start:\n{proc.stdout.read()}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc.poll() is None:
        proc.kill()
