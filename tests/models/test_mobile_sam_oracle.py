"""MobileSAM and TinySAM against the official MobileSAM code run live (PyPI ``mobilesam-mirror``), fp32.

TinySAM's official model is MobileSAM's architecture under the same key names, so the shared
fixtures give both the same stand-in weights and byte-identical cases. TinySAM is therefore
checked here on weights of its own: every float tensor is drawn with the fixtures' recipe
(``synthetic_weights.tensor_for``) from the key name salted with ``tinysam/``, written as
``tinysam_42.3.pth`` and loaded through the ``tinysam`` registry entry on one side and the
official MobileSAM builder on the other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import leansam
from leansam.registry import get_model_info
from tests import oracles
from tests import parity as P
from tests import tolerances as T

NAMES = ("mobile_sam", "tinysam")
IMAGE_CASE = "mobile_sam"  # image, prompts and encoder input of the MobileSAM fixture


def write_tinysam_weights(path) -> None:
    """TinySAM's official key layout with values that differ from MobileSAM's stand-in weights."""
    state, wrapper = P.stand_in_state_dict("tinysam")
    assert wrapper is None
    synthetic = P._synthetic_module()
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = torch.from_numpy(
                np.ascontiguousarray(synthetic.tensor_for(f"tinysam/{key}", value.shape))
            )
    torch.save(state, path)


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp("ck") / get_model_info(name).weights.file_name
    if name == "tinysam":
        write_tinysam_weights(path)
    else:
        P.write_stand_in_checkpoint(name, path)
    ms = oracles.mobile_sam()
    official = ms.sam_model_registry["vit_t"](checkpoint=str(path))
    official.eval()  # the official builder calls eval() before loading; TinyViT caches biases in eval()
    return name, leansam.build_model(name, checkpoint=path), official, ms


def test_tinysam_weights_differ_from_mobile_sams(pair):
    name, mine, _, _ = pair
    mobile = P.stand_in_state_dict("mobile_sam")[0]
    differ = [not torch.equal(v, mobile[k]) for k, v in mine.state_dict().items() if v.is_floating_point()]
    assert all(differ) if name == "tinysam" else not any(differ)


def test_encoder_matches_official_fp32(pair):
    name, mine, official, _ = pair
    x = P.encoder_input(P.load_case(IMAGE_CASE))
    with torch.no_grad():
        T.check_floats(f"live/{name}/embedding", mine.image_encoder(x), official.image_encoder(x).numpy())


@pytest.fixture(scope="module")
def predictors(pair):
    name, mine, official, ms = pair
    image = P.load_case(IMAGE_CASE)["image"]
    p1, p2 = leansam.SamPredictor(mine), ms.SamPredictor(official)
    p1.set_image(image)
    p2.set_image(image)
    return name, p1, p2


@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
@pytest.mark.parametrize("multimask", [True, False])
def test_predictor_matches_official_fp32(predictors, prompt_set, multimask):
    name, p1, p2 = predictors
    kwargs = P.case_prompts(P.load_case(IMAGE_CASE), prompt_set)
    mine = p1.predict(**kwargs, multimask_output=multimask)
    ref = p2.predict(**kwargs, multimask_output=multimask)
    T.check_prediction(f"live/{name}/{prompt_set}/{'multi' if multimask else 'single'}", mine, ref)
