"""``deepen``: TinyFPN depth growth computes the same function and leaves the new blocks trainable."""

from __future__ import annotations

import pytest
import torch

from leansam.models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder, deepen


def _encoder(config: TinyFPNConfig | None = None) -> TinyFPNEncoder:
    torch.manual_seed(0)
    enc = TinyFPNEncoder(config)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return enc


def _outputs(enc: TinyFPNEncoder, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        embed, skips = enc(x)
    return [embed, *skips]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_deepened_encoder_computes_the_same_function(mode: str) -> None:
    enc = _encoder()
    grown = deepen(enc, (1, 3, 4, 2))
    assert [len(s) for s in grown.stages] == [1, 3, 4, 2]
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in enc.parameters())
    getattr(enc, mode)()
    getattr(grown, mode)()
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(_outputs(enc, x), _outputs(grown, x)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_new_blocks_receive_gradient() -> None:
    grown = deepen(_encoder(), (1, 2, 3, 1)).train()
    embed, skips = grown(torch.randn(2, 3, 64, 64))
    (embed.square().mean() + sum(s.square().mean() for s in skips)).backward()
    new_bn = grown.stages[2][2].conv2[1]
    assert new_bn.weight.grad is not None and new_bn.weight.grad.abs().sum() > 0


def test_deepen_keeps_pruned_inner_widths() -> None:
    mids = ((16,), (32, 40), (64, 100), (128,))
    grown = deepen(_encoder(TinyFPNConfig(mids=mids)), (1, 2, 3, 1))
    assert grown.config.mids == ((16,), (32, 40), (64, 100, 128), (128,))
    x = torch.randn(1, 3, 64, 64)
    assert [t.shape for t in _outputs(grown.eval(), x)] == [t.shape for t in _outputs(_encoder().eval(), x)]


def test_deepen_refuses_fewer_blocks() -> None:
    with pytest.raises(ValueError, match="must not be below"):
        deepen(_encoder(), (1, 1, 2, 1))
