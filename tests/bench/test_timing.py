"""StageTimer: wall time per stage, summed over modules and methods."""

from __future__ import annotations

import time

import torch

from leansam.bench.timing import StageTimer


def test_stage_timer_sums_modules_and_methods():
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.01)
            return x

        def helper(self):
            time.sleep(0.02)
            return 7

    m = Slow()
    timer = StageTimer()
    timer.module("fwd", m)
    timer.method("help", m, "helper")
    m(torch.zeros(1))
    m(torch.zeros(1))
    assert m.helper() == 7
    split = timer.take()
    assert set(split) == {"fwd", "help"}
    assert 0.02 <= split["fwd"] < 1 and 0.02 <= split["help"] < 1
    assert timer.take() == {}
