"""leansam.VideoPredictor replays every recorded official video case within the README's tolerances.

Tolerances (``shared/parity/video/README.md``): video logits within 5e-3 + 1e-3 x |reference| at
every pixel, masks (logits > 0) differing on at most 0.1% of the pixels, object scores within 1e-3,
same frame order, object ids and conditioning flags. Each case runs the image encoder on every frame
and the memory attention on every tracked frame, so only two cases run in the default suite.
"""

from __future__ import annotations

import pytest

from leansam.video import VideoPredictor
from tests import parity as P
from tests.video import cases as C

DEFAULT = ("efficienttam_ti/a_box_click",)


def test_the_case_list_is_the_fixture_folder() -> None:
    found = sorted(f"{p.parent.name}/{p.stem}" for p in (P.parity_dir() / "video").glob("*/*.npz"))
    assert found == sorted(C.CASES)


@pytest.mark.parametrize(
    "case", [c if c in DEFAULT else pytest.param(c, marks=pytest.mark.slow) for c in C.CASES]
)
def test_replay_matches_the_official_predictor(case: str) -> None:
    z, spec = C.load(case)
    pred = VideoPredictor(C.model_for(spec), **spec["constructor"]["then_set_attributes"])
    outs = C.replay(pred, z, spec)
    assert sum(o.step is not None for o in outs) == C.propagated_frames(z, spec)
    assert sum(o.step is None for o in outs) == sum(
        c["op"] != "propagate_in_video" for c in spec["calls"][1:]
    )
    assert C.mismatches(outs, z) == []
