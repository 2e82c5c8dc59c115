"""Shared pieces of the compression tests: small calibration images and a quantized default model."""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import leansam
from leansam.compress.int8 import int8_kernels_available
from leansam.data.synth import generate
from leansam.train.data import TINY_SYNTH

#: Calibration images for the tests: the bundled model's data distribution, a seed (7) that
#: neither its training set (0) nor its held-out set (1000) uses.
CALIB_SEED = 7

needs_int8 = pytest.mark.skipif(
    not int8_kernels_available(), reason="this PyTorch build has no oneDNN int8 kernels (x86 only)"
)


def encoder_convs(name: str = "leansam_nano", in_graph: bool = False) -> int:
    """Convolutions of a model's image encoder: what int8 quantization of the encoder covers. The
    exported encoder graph (``in_graph``) also holds the decoder's skip-feature projections."""
    model = leansam.build_model(name, pretrained=False)
    n = sum(isinstance(m, nn.Conv2d) for m in model.image_encoder.modules())
    return n + (2 if in_graph and model.mask_decoder.use_high_res_features else 0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Runs a test module with one torch thread (restored after; autouse where imported): on a
    shared 2-core machine two threads oversubscribe the cores and these small models run up to
    10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_images(root: Path, n: int = 4, seed: int = CALIB_SEED) -> Path:
    """Writes ``n`` small synthetic JPEGs; returns the folder holding them."""
    generate(n, root, seed=seed, config=TINY_SYNTH)
    return root / "images"


def load_images(folder: Path) -> list[np.ndarray]:
    from leansam.io import load_image

    return [load_image(p) for p in sorted(folder.glob("*.jpg"))]


@functools.cache
def tiny_fp32() -> leansam.Sam:
    """The bundled default model in fp32 (cached; do not modify it)."""
    return leansam.build_model("leansam_nano")


def embed(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image(model.preprocess(image)).embed


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


#: The oneDNN int8 kernels the int8 layers must call, and the float kernels they must not.
INT8_KERNELS = ("onednn::qconv2d_pointwise", "onednn::qlinear_pointwise")
FLOAT_KERNELS = ("aten::convolution", "aten::addmm", "aten::mm", "aten::bmm", "aten::linear")


class _KernelCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def kernel_calls(fn: Callable[[], object]) -> collections.Counter[str]:
    """How often each dispatcher op (``namespace::name``) ran while ``fn()`` ran."""
    with torch.no_grad(), _KernelCounter() as counter:
        fn()
    return counter.calls
