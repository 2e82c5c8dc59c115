"""Stand-in models and their ONNX exports, built once per test session.

Weights: the parity fixtures' deterministic stand-in checkpoints where a fixture folder exists
(``tests/parity.py``), the bundled weights for leansam_tiny and leansam_nano, else a seeded random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import leansam
from leansam.export import OnnxExportConfig, export_onnx
from tests import parity as P


def has_stand_in(name: str) -> bool:
    return (P.parity_dir() / name / "manifest.json").exists()


def build_stand_in(name: str, tmp: Path) -> leansam.Sam:
    """``name`` with the weights described in the module docstring, in eval mode."""
    if has_stand_in(name):
        path = P.write_stand_in_checkpoint(name, tmp / f"{name}.ckpt")
        model = leansam.build_model(name, checkpoint=path)
        path.unlink()
        return model
    if name in ("leansam_tiny", "leansam_nano"):
        return leansam.build_model(name)
    torch.manual_seed(0)
    return leansam.build_model(name, pretrained=False)


class Exports:
    """Session cache: ``models[name]`` (torch) and ``folder(name, upscale)`` (exported ONNX files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, leansam.Sam] = {}
        self.folders: dict[tuple[str, object], Path] = {}

    def model(self, name: str) -> leansam.Sam:
        if name not in self.models:
            self.models[name] = build_stand_in(name, self.root)
        return self.models[name]

    def folder(self, name: str, upscale: bool = False) -> Path:
        key = (name, upscale)
        if key not in self.folders:
            out = self.root / f"{name}{'-up' if upscale else ''}"
            export_onnx(self.model(name), out, config=OnnxExportConfig(upscale=upscale))
            self.folders[key] = out
        return self.folders[key]

    def decoder(self, name: str) -> Path:
        """``decoder.onnx`` alone (export with ``encoder=False``)."""
        key = (name, "decoder")
        if key not in self.folders:
            out = export_onnx(
                self.model(name), self.root / f"{name}-dec", config=OnnxExportConfig(encoder=False)
            )
            assert out.encoder is None
            self.folders[key] = out.decoder
        return self.folders[key]

    def drop(self, name: str) -> None:
        """Frees a big model once its tests are done (slow tests run every size)."""
        self.models.pop(name, None)


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def scene() -> np.ndarray:
    """The parity fixtures' 480 x 640 synthetic RGB scene."""
    return P.load_case("mobile_sam")["image"]


def random_boxes(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """n x 4 XYXY boxes in pixels of an image of ``size`` (H, W), 5-60 % of each side."""
    h, w = size
    rng = np.random.default_rng(seed)
    wh = rng.uniform(0.05, 0.6, (n, 2)) * [w, h]
    xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - wh)
    return torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
