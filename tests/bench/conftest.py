"""The tiny test models in the registry for the benchmark tests."""

from __future__ import annotations

import pytest

from tests.eval import tiny


@pytest.fixture(scope="module")
def tiny_models():
    with pytest.MonkeyPatch.context() as mp:
        tiny.register(mp)
        yield tiny
