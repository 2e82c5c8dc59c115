"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
from PIL import Image

from tests import parity as P


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
