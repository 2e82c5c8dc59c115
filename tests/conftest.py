"""Fixtures shared by several test modules."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

import leansam
from tests import oracles
from tests import parity as P


@pytest.fixture(autouse=True)
def _seeded_rngs():
    """Every test starts from the same global RNG state, so its random inputs do not depend on which
    tests ran before it (a run of the suite is reproducible, alone or in any order)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mobile_sam_ckpt(tmp_path_factory):
    """MobileSAM stand-in checkpoint (official key layout, deterministic weights from shared/parity)."""
    return P.write_stand_in_checkpoint("mobile_sam", tmp_path_factory.mktemp("ck") / "mobile_sam.pt")


@pytest.fixture(scope="session")
def mobile_sam_image_file(tmp_path_factory):
    """The MobileSAM parity fixture's 480 x 640 scene as a PNG file."""
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(P.load_case("mobile_sam")["image"]).save(path)
    return path


@pytest.fixture(scope="session")
def sam_vit_b_ckpt(tmp_path_factory):
    """SAM ViT-B stand-in checkpoint under the official file name."""
    return P.write_stand_in_checkpoint("sam_vit_b", tmp_path_factory.mktemp("ck") / "sam_vit_b_01ec64.pth")


@pytest.fixture(scope="session")
def sam_vit_b_encoded(sam_vit_b_ckpt) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of leansam's ViT-B encoder on the sam_vit_b fixture image, as ``SamPredictor``
    computes them. Modules that compare what comes after the encoder seed their encoder cache with it
    (``oracles.share_encoder(..., seed=)``): ViT-B encodes that image once per session."""
    model = leansam.build_model("sam_vit_b", checkpoint=sam_vit_b_ckpt)
    cache: list = []
    model.image_encoder = oracles.SharedEncoder(model.image_encoder, cache)
    leansam.SamPredictor(model).set_image(P.load_case("sam_vit_b")["image"])
    ((x, out, _),) = cache
    return x, out
