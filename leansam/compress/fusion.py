"""Fusion of activations into the int8 layers before them, and the hand-off of uint8 outputs.

Part of the PyTorch post-training quantization (:mod:`leansam.compress.ptq`): which layer's output
goes only into one activation (so the activation can run inside the int8 kernel), applying that plan,
and checking that the fused model still computes what the unfused one did.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .int8 import (
    CONV_POST_OPS,
    LINEAR_POST_OPS,
    FloatWithActivation,
    FusedActivation,
    activation_kind,
)

if TYPE_CHECKING:
    from .ptq import QuantReport, _LayerStats


def _fusion_plan(
    consumers: dict[str, dict[str, int]],
    stats: dict[str, _LayerStats],
    layers: dict[str, nn.Module],
    acts: dict[str, nn.Module],
    quantized: Any,
) -> dict[str, str]:
    """{layer name: activation name} for layers whose every output went straight into the same
    activation module, when the layer can run that activation (int8 linears: no Hardswish).
    ``quantized(name)`` says whether the layer becomes int8 (else it stays fp32)."""
    plan: dict[str, str] = {}
    refused: set[str] = set()
    for act, srcs in consumers.items():
        for src, count in srcs.items():
            if not src or src not in layers or count != stats[src].calls:
                continue
            supported = (
                LINEAR_POST_OPS if isinstance(layers[src], nn.Linear) and quantized(src) else CONV_POST_OPS
            )
            if src in plan or activation_kind(acts[act]) not in supported:
                refused.add(src)  # two consumers, or a post-op the kernel lacks
            plan[src] = act
    return {k: v for k, v in plan.items() if k not in refused}


def _chain_plan(
    stats: dict[str, _LayerStats],
    layers: dict[str, nn.Module],
    plan: dict[str, str],
    acts: dict[str, nn.Module],
) -> dict[str, str]:
    """{producer: consumer} int8 layer pairs where every input of the consumer was the producer's
    output (directly, or through the activation fused into the producer) and every output of the
    producer went to the consumer; the producer then hands over uint8. A convolution with an
    in-place GELU cannot (its activation runs after the kernel)."""
    chains: dict[str, str] = {}
    taken: set[str] = set()
    for q in layers:
        src = stats[q].sources
        if len(src) != 1:
            continue
        tag, count = next(iter(src.items()))
        act, _, p = tag.rpartition("|")
        if not p or p not in layers or count != stats[q].calls or stats[p].calls != count:
            continue
        if (act and plan.get(p) != act) or (not act and p in plan):
            continue
        if (
            isinstance(layers[p], nn.Conv2d)
            and p in plan
            and activation_kind(acts[plan[p]]) in ("gelu", "gelu_tanh")
        ):
            continue  # conv + GELU: the GELU runs in place after the kernel (see Int8Conv2d)
        if p in chains or p in taken:
            taken.add(p)
            continue
        chains[p] = q
    return {p: q for p, q in chains.items() if p not in taken}


class _TwinHandOff(nn.Module):
    """fp32 stand-in of a uint8 hand-off for the structural check: the producer returns float64
    (the values are exact), the consumer turns it back to float32. Any other user of the
    producer's output would see float64 and change the result's dtype or values (or fail)."""

    def __init__(self, layer: nn.Module, role: str) -> None:
        super().__init__()
        self.layer, self.role = layer, role

    def bind_activation(self, consumer: FusedActivation | None) -> None:
        self.layer.bind_activation(consumer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.role == "consumer":
            return self.layer(x.float() if x.dtype == torch.float64 else x)
        y = self.layer(x)
        mark = getattr(y, "_leansam_fused_act", None)
        y = y.double()
        if mark is not None:
            y._leansam_fused_act = mark
        return y


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _apply_fusion(model: nn.Module, plan: dict[str, str], make_layer) -> None:
    """Replaces each activation of ``plan`` by a :class:`FusedActivation` and each layer by
    ``make_layer(name, post_op)``, bound to that activation."""
    wrappers: dict[str, FusedActivation] = {}
    for act_name in sorted(set(plan.values())):
        act = model.get_submodule(act_name)
        wrappers[act_name] = FusedActivation(act)
        _set_module(model, act_name, wrappers[act_name])
    for layer_name, act_name in plan.items():
        kind = activation_kind(wrappers[act_name].act)
        new = make_layer(layer_name, kind)
        new.bind_activation(wrappers[act_name])
        _set_module(model, layer_name, new)


def _check_fusion(
    model: nn.Module, plan: dict[str, str], x: torch.Tensor, chains: dict[str, str] | None = None
) -> str:
    """'ok' when the fp32 model with the fusions (activations in place) and, with ``chains``,
    the hand-offs (:class:`_TwinHandOff`) gives bit-identical embeddings on ``x``; a description
    of the difference otherwise."""
    twin = copy.deepcopy(model)
    _apply_fusion(twin, plan, lambda n, k: FloatWithActivation(twin.get_submodule(n), k))
    for p, q in (chains or {}).items():
        _set_module(twin, p, _TwinHandOff(twin.get_submodule(p), "producer"))
        _set_module(twin, q, _TwinHandOff(twin.get_submodule(q), "consumer"))
    try:
        with torch.no_grad():
            a = model.encode_image(x)
            b = twin.encode_image(x)
    except RuntimeError as e:
        return f"failed ({str(e).splitlines()[0][:120]})"
    pairs = [(a.embed, b.embed), *list(zip(a.high_res or [], b.high_res or []))]
    if all(p.dtype == q.dtype and torch.equal(p, q) for p, q in pairs):
        return "ok"
    diff = float((a.embed.double() - b.embed.double()).abs().max())
    return f"failed (max abs difference {diff:.3g}, dtype {b.embed.dtype} in fp32)"


def _decide_fusions(
    model: nn.Module,
    stats: dict[str, _LayerStats],
    consumers: dict[str, dict[str, int]],
    layers: dict[str, nn.Module],
    others: dict[str, nn.Module],
    acts: dict[str, nn.Module],
    x: torch.Tensor,
    report: QuantReport,
) -> tuple[dict[str, str], dict[str, str]]:
    """(activation fusions {layer: activation}, uint8 hand-offs {producer: consumer}) that passed
    the fp32 checks on ``x``; the outcome of the checks is written into ``report``."""
    plan = _fusion_plan(consumers, stats, {**layers, **others}, acts, lambda n: n in layers)
    report.fusion_check = _check_fusion(model, plan, x) if plan else "nothing to fuse"
    if report.fusion_check != "ok":
        report.fusion_check += ": no activation fused"
        plan = {}
    chains = _chain_plan(stats, layers, plan, acts)
    if not chains:
        return plan, {}
    report.handoff_check = _check_fusion(model, plan, x, chains)
    if report.handoff_check == "ok":
        return plan, chains
    # find the offending pairs one at a time, then re-check the survivors together
    good = {p: q for p, q in chains.items() if _check_fusion(model, plan, x, {p: q}) == "ok"}
    bad = sorted(set(chains) - set(good))
    if good and _check_fusion(model, plan, x, good) != "ok":
        bad, good = sorted(chains), {}
    shown = ", ".join(bad[:3]) + ("..." if len(bad) > 3 else "")
    report.handoff_check = (
        f"refused for {len(bad)} of {len(chains)} pairs (their output has other users: {shown})"
    )
    return plan, good
