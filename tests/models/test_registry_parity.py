"""Every registry model that has a parity fixture: strict load, parameter count, predictor parity.

The fixtures (``shared/parity/<name>``, see its README) hold the official checkpoint's key
manifest and what the official code computed on deterministic stand-in weights. For each
registry name with a fixture folder:

* the official key layout is the architecture's, and the parameter count is the registry's;
* the regenerated official-format file loads through the public API and every tensor the
  model holds is the file's (the family's checkpoint filter applied, set-aside keys reported);
* ``SamPredictor.predict`` on the fixture's image and prompt sets reproduces the official
  low-res logits, IoU predictions and masks within tolerances measured per check
  (``tests/tolerances.py``).

Family files keep only what is specific to a family. Heavy models run in the slow lane.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import leansam
from leansam.checkpoints import expected_shapes
from leansam.registry import get_model_info, list_models
from tests import parity as P
from tests import tolerances as T

SLOW = {"efficientvit_sam_xl0", "slimsam_50", "sam_vit_l", "sam_vit_h"}
#: Predictor parity is slow for these too: test_sam_vit.py checks sam_vit_b's encoder against the
#: fixture and its predictor against the official one live on the fixture's image.
SLOW_PREDICTOR = SLOW | {"sam_vit_b"}


def _param(name: str, slow: set[str] = SLOW):
    return pytest.param(name, marks=pytest.mark.slow) if name in slow else name


def _fixture_names() -> list[str]:
    return [n for n in list_models() if (P.parity_dir() / n / "manifest.json").is_file()]


@functools.cache
def _digest(name: str) -> str:
    return hashlib.sha256((P.parity_dir() / name / "case.npz").read_bytes()).hexdigest()


def _case_names() -> list[str]:
    """Names with a case of their own: a case byte-identical to an earlier name's is not re-run
    (tinysam's is mobile_sam's; test_tiny_vit.py checks TinySAM on weights of its own)."""
    names: list[str] = []
    for n in _fixture_names():
        if (P.parity_dir() / n / "case.npz").is_file() and all(_digest(n) != _digest(m) for m in names):
            names.append(n)
    return names


NAMES = [_param(n) for n in _fixture_names()]
CASE_NAMES = [_param(n, SLOW_PREDICTOR) for n in _case_names()]


def _official_file(name: str, folder) -> object:
    """The stand-in checkpoint under the official file name (the fixture's format, e.g. .pth)."""
    return P.write_stand_in_checkpoint(
        name, folder / P.manifest(name)["official"]["checkpoint_file"].split()[0]
    )


@dataclass
class Loaded:
    """A registry model built through the public API from its regenerated official-format file."""

    name: str
    path: Path
    model: leansam.Sam
    _predictor: leansam.SamPredictor | None = None

    def predictor(self) -> leansam.SamPredictor:
        """A predictor holding the fixture's image (the encoder runs once per name)."""
        if self._predictor is None:
            self._predictor = leansam.SamPredictor(self.model)
            self._predictor.set_image(P.load_case(self.name)["image"])
        return self._predictor


def _file_state(name: str, path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    wrapper = P.manifest(name)["wrapper"]
    return state[wrapper] if wrapper else state


@pytest.mark.parametrize("name", NAMES)
def test_official_key_layout_and_parameter_count(name: str) -> None:
    info = get_model_info(name)
    with torch.device("meta"):
        model = info.build()
    assert sum(p.numel() for p in model.parameters()) == info.n_params
    manifest = {k: torch.empty(s, device="meta") for k, s, _ in P.manifest(name)["keys"]}
    mapped, set_aside = info.filter_state_dict(manifest)
    # after the family's filter, every official key the model uses has the architecture's shape
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected_shapes(info)
    assert len(mapped) + len(set_aside) == len(manifest)  # no official key dropped silently


@pytest.fixture(scope="module")
def loaded(request, tmp_path_factory) -> Loaded:
    """Built once per name (an indirect parameter: the strict-load and predictor tests share it)."""
    name = request.param
    path = _official_file(name, tmp_path_factory.mktemp("ckpt"))
    return Loaded(name, path, leansam.build_model(name, checkpoint=path))


@pytest.mark.parametrize("loaded", NAMES, indirect=True)
def test_strict_load_loads_every_tensor(loaded: Loaded) -> None:
    name, model = loaded.name, loaded.model
    raw = _file_state(name, loaded.path)
    # the regenerated file holds the fixture's weights (meta.json's checksum of the float tensors)
    total = sum(float(v.double().abs().sum()) for v in raw.values() if v.is_floating_point())
    assert total == pytest.approx(P.meta(name)["state_abs_sum"], rel=1e-12)
    state, _ = get_model_info(name).filter_state_dict(raw)
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state), name


@pytest.mark.parametrize("loaded", CASE_NAMES, indirect=True)
@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
def test_predictor_matches_fixture(loaded: Loaded, prompt_set: str) -> None:
    name, case = loaded.name, P.load_case(loaded.name)
    masks, iou, low = loaded.predictor().predict(**P.case_prompts(case, prompt_set), multimask_output=True)
    clamp = get_model_info(name).transform.low_res_clamp
    assert clamp is None or float(np.abs(low).max()) <= clamp  # SAM 2's predictor clamps the logits
    ref = (P.case_masks(case, prompt_set), case[f"{prompt_set}_iou"], case[f"{prompt_set}_low_res_logits"])
    T.check_prediction(f"fixture/{name}/{prompt_set}", (masks, iou, low), ref)
