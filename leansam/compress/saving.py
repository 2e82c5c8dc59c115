"""Saving and loading PyTorch-quantized models: a folder with ``model.pt`` and ``quantization.json``.

    save_quantized(model, "tiny_int8")
    model = load_quantized("tiny_int8")          # a leansam.Sam; SamPredictor(model) works as before

A tracking model (:class:`leansam.video.VideoModel`, quantized by
:func:`leansam.video.quantize.quantize_video_`) is saved whole: its image encoder int8, its memory
modules fp32; ``"tracking": true`` in the manifest makes ``load_quantized`` rebuild it.

``model.pt`` is the whole model's state dict (int8 weights, their scales and the input quantizers
of the int8 layers; fp32 for everything else), saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``. ``quantization.json`` names the registry model (and, for a pruned
model, its architecture: :mod:`leansam.prune.arch`), the preparation
steps (BatchNorm folding), every int8 layer and fused activation, the config and the calibration
images, and the sha256 of ``model.pt``. Loading rebuilds the registry architecture, replays the
preparation, swaps in empty int8 layers and loads the state dict strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..checkpoints import CheckpointError, sha256_file
from ..io import torch_save
from ..outputs import OutputDir
from .fusion import _set_module
from .int8 import FloatWithActivation, FusedActivation, Int8Conv2d, Int8Linear, activation_kind
from .ptq import prepare_float

__all__ = ["FORMAT", "is_quantized_dir", "load_quantized", "read_manifest", "save_quantized"]

FORMAT = "leansam-quantized-pytorch"
FORMAT_VERSION = 1
MANIFEST = "quantization.json"
WEIGHTS = "model.pt"


def save_quantized(model: nn.Module, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Writes a model quantized by :func:`leansam.compress.quantize_` to ``out_dir`` through
    :class:`leansam.outputs.OutputDir` (staged, committed at the end; ``overwrite`` replaces files
    of the same names that leansam did not write)."""
    tracking = _is_tracking(model)
    quantized = model.sam if tracking else model  # the image model whose encoder is int8
    report = getattr(quantized, "_leansam_quant", None)
    if report is None:
        raise ValueError("the model is not quantized (run leansam.compress.quantize_ first)")
    name = str(getattr(quantized, "name", "") or "")
    if not name:
        raise ValueError("only registry models can be saved (model.name is empty)")
    out = OutputDir(
        out_dir, overwrite=overwrite, owned_patterns=(WEIGHTS, MANIFEST), command="leansam quantize"
    )
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        with open(out.path(WEIGHTS), "wb") as f:
            torch_save(state, f)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "leansam_version": __version__,
            "torch_version": torch.__version__,
            "model": name,
            "tracking": tracking,
            "architecture": getattr(model, "leansam_arch", None),
            "weights": WEIGHTS,
            "weights_sha256": sha256_file(out.path(WEIGHTS)),
            "layers": {r["name"]: {"kind": r["kind"], "post_op": r["post_op"]} for r in report["layers"]},
            "fused_activations": report["fused"],
            "handoffs": report.get("handoffs", {}),
            "prepare": report["prepare"],
            "report": report,
        }
        out.path(MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        out.discard()
        raise
    out.commit()
    return Path(out_dir)


def _is_tracking(model: nn.Module) -> bool:
    """True for a :class:`leansam.video.VideoModel` (its image model's encoder is the int8 part)."""
    from ..video.model import VideoModel

    return isinstance(model, VideoModel)


def is_quantized_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`save_quantized`."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The validated ``quantization.json`` of a quantized-model folder (CheckpointError otherwise)."""
    f = Path(path) / MANIFEST
    try:
        manifest = json.loads(f.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a quantized model folder (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {f}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a leansam quantized-model manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{f} has format version {manifest.get('format_version')!r}; this leansam reads {FORMAT_VERSION}"
        )
    for key, typ in (("model", str), ("layers", dict), ("fused_activations", dict), ("prepare", dict)):
        if not isinstance(manifest.get(key), typ):
            raise CheckpointError(f"{f}: field {key!r} is missing or not a {typ.__name__}")
    return manifest


def load_quantized(path: str | Path, verify: bool = True) -> nn.Module:
    """Rebuilds a model saved by :func:`save_quantized` on the CPU: a :class:`leansam.Sam`, or a
    :class:`leansam.video.VideoModel` when a tracking model was saved (manifest ``"tracking"``).

    Raises :class:`leansam.CheckpointError` for a missing, corrupt or mismatching folder.
    """
    from ..registry import get_model_info

    path = Path(path)
    manifest = read_manifest(path)
    weights = path / str(manifest.get("weights", WEIGHTS))
    if not weights.is_file():
        raise CheckpointError(f"quantized model folder {path} has no {weights.name}")
    if verify and manifest.get("weights_sha256") and sha256_file(weights) != manifest["weights_sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 in {MANIFEST}: corrupt or changed file")
    info = get_model_info(manifest["model"])
    if manifest.get("tracking"):  # a tracking model: int8 encoder, fp32 memory modules
        from ..video.build import build_video_model

        model = build_video_model(info.name)
        target = model.sam
    elif manifest.get("architecture") is not None:  # a pruned model (leansam prune)
        from ..prune.arch import build_from_arch

        model = target = build_from_arch(manifest["architecture"])
        model.name = info.name
    else:
        model = target = info.build()
    try:
        _rebuild_int8(target, manifest)
    except (AttributeError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit the {info.name} architecture: {e}") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {weights}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights} is not a state dict")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # wrong shapes
        raise CheckpointError(f"{weights} does not fit the quantized {info.name}: {str(e)[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{weights} does not fit the quantized {info.name}: missing {sorted(result.missing_keys)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    target._leansam_quant = manifest.get("report", {})
    return model.eval()


def _rebuild_int8(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Replays the manifest's preparation, int8 layers, fused activations and hand-offs on ``model``
    (an fp32 :class:`leansam.Sam`), so that the saved state dict fits it."""
    prepare_float(model, manifest["prepare"])
    wrappers: dict[str, FusedActivation] = {}
    for act_name in sorted(set(manifest["fused_activations"].values())):
        wrappers[act_name] = FusedActivation(model.get_submodule(act_name))
        _set_module(model, act_name, wrappers[act_name])
    for name, spec in manifest["layers"].items():
        layer = model.get_submodule(name)
        post = spec.get("post_op", "none")
        q = Int8Conv2d.like(layer, post) if spec.get("kind") == "conv" else Int8Linear.like(layer, post)
        if name in manifest["fused_activations"]:
            q.bind_activation(wrappers[manifest["fused_activations"][name]])
        _set_module(model, name, q)
    for p, q in manifest.get("handoffs", {}).items():
        model.get_submodule(p).link_output(model.get_submodule(q))
    for name, act_name in manifest["fused_activations"].items():
        if name not in manifest["layers"]:  # an fp32 layer with its activation fused in place
            fused = FloatWithActivation(model.get_submodule(name), activation_kind(wrappers[act_name].act))
            fused.bind_activation(wrappers[act_name])
            _set_module(model, name, fused)
