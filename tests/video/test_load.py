"""Every memory-capable registry model loads an official-layout checkpoint whole and strictly.

Stand-in weights (``shared/parity/synthetic_weights.py``: each float tensor a function of its key
name and shape) in the official ``{"model": state_dict}`` layout. Where do the key lists come from:

* ``sam2.1_hiera_tiny``, ``efficienttam_ti``: the fixture manifests (``shared/parity/<model>``).
* ``efficienttam_ti_1`` / ``_ti_2`` / ``_ti_512x512``: the ``efficienttam_ti`` manifest. Their configs
  (yformer/EfficientTAM @abcd061) differ from ``efficienttam_ti.yaml`` only in the class of the memory
  cross-attention or in ``image_size`` / RoPE ``feat_sizes``, none of which has parameters (the ViT's
  position embedding is stored at its 224-pixel pre-training grid at any input size).
* ``efficienttam_s*``: the ``efficienttam_ti`` manifest with the trunk widened as in
  ``efficienttam_s.yaml`` (``embed_dim`` 192 -> 384, so MLP 768 -> 1536 and the neck's input 192 -> 384;
  ``num_heads`` has no parameters).
* every SAM 2 / SAM 2.1 size: the ``state_dict`` of the model built by the official builder from its
  yaml config (PyPI ``sam2`` 1.1.0, run live through ``tests.oracles``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leansam.checkpoints import CheckpointError
from leansam.registry import get_model_info
from leansam.video import NotTrackableError, build_video_model, load_video_model, tracking_models
from tests import parity as P

SAM2_NAMES = [f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("tiny", "small", "base_plus", "large")]
ETAM_NAMES = [f"efficienttam_{s}{x}" for s in ("ti", "s") for x in ("", "_512x512", "_1", "_2")]


def test_the_tracking_models_are_every_sam2_and_efficienttam_video_release() -> None:
    assert tracking_models() == sorted(SAM2_NAMES + ETAM_NAMES)


def _widen_to_s(key: str, shape: list[int]) -> list[int]:
    if key.startswith("image_encoder.trunk.") or key.startswith("image_encoder.neck.convs.0.conv_1x1"):
        return [{192: 384, 768: 1536}.get(d, d) for d in shape]
    return shape


def efficienttam_state(name: str) -> dict[str, torch.Tensor]:
    tensor_for = P._synthetic_module().tensor_for
    keys = P.manifest("efficienttam_ti")["keys"]
    if name.startswith("efficienttam_s"):
        keys = [[k, _widen_to_s(k, s), d] for k, s, d in keys]
    assert all(d == "torch.float32" for _, _, d in keys)
    return {k: torch.from_numpy(np.ascontiguousarray(tensor_for(k, s))) for k, s, _ in keys}


def sam2_state(name: str, tmp: Path) -> dict[str, torch.Tensor]:
    if name == "sam2.1_hiera_tiny":
        return P.stand_in_state_dict(name)[0]
    from tests.models.test_sam2_oracle import build_official

    return build_official(name, tmp / "official.pt").state_dict()


@pytest.mark.parametrize(
    "name",
    [
        n if ("tiny" in n or n.startswith("efficienttam_ti")) else pytest.param(n, marks=pytest.mark.slow)
        for n in SAM2_NAMES + ETAM_NAMES
    ],
)
def test_strict_load_of_the_whole_official_checkpoint(name: str, tmp_path: Path) -> None:
    state = efficienttam_state(name) if name.startswith("efficienttam") else sam2_state(name, tmp_path)
    state = {k: torch.as_tensor(v) for k, v in state.items()}
    path = tmp_path / f"{name}.pt"
    torch.save({"model": state}, path)
    model = load_video_model(name, checkpoint=path)
    own = model.state_dict()
    # Whole: as many numbers in the model as in the file, each file tensor in its place.
    assert sum(v.numel() for v in own.values()) == sum(v.numel() for v in state.values())
    image, memory = get_model_info(name).filter_state_dict(dict(state))
    assert all(torch.equal(own["sam." + k], v) for k, v in image.items())
    # The memory modules keep their official names.
    assert any(k.startswith("memory_attention.") for k in memory)
    assert all(torch.equal(own[k], state[k]) for k in memory)


def test_a_checkpoint_without_a_memory_key_or_with_an_extra_key_is_refused(tmp_path: Path) -> None:
    state = efficienttam_state("efficienttam_ti")
    for broken, word in (
        ({k: v for k, v in state.items() if k != "memory_encoder.out_proj.bias"}, "missing"),
        ({**state, "memory_attention.extra": torch.zeros(1)}, "unexpected"),
        ({**state, "maskmem_tpos_enc": torch.zeros(6, 1, 1, 64)}, "wrong shapes"),
    ):
        torch.save({"model": broken}, tmp_path / "broken.pt")
        with pytest.raises(CheckpointError, match=word):
            load_video_model("efficienttam_ti", checkpoint=tmp_path / "broken.pt")


def test_a_model_without_memory_cannot_track() -> None:
    with pytest.raises(NotTrackableError, match=r"efficienttam_ti, .*sam2\.1_hiera_tiny"):
        build_video_model("mobile_sam")
