"""Self-describing pruned models: weights plus the architecture they need, in one safetensors file.

A pruned model is saved as a folder ``DIR/`` with

* ``model.safetensors``: the whole model's state_dict (leansam keys, the registry base model's
  layout with narrower image-encoder tensors); its safetensors metadata holds
  ``leansam.format = "leansam-pruned"`` and ``leansam.architecture``, a JSON object
  ``{"base": REGISTRY_NAME, "encoder": {"kind": "vit" | "tiny_fpn", "config": {...}}}``:
  the base model's prompt encoder, mask decoder and pre-processing with the image encoder
  built from that config (:class:`~leansam.models.vit.ViTConfig` /
  :class:`~leansam.models.tiny_fpn.TinyFPNConfig` fields);
* ``prune.json``: how it was made (ratio, importance, widths, recovery), for people.

``leansam.build_model(DIR)``, ``--model DIR`` and ``--checkpoint DIR`` (or the ``.safetensors``
file itself) all rebuild it; :func:`describe` gives the architecture of a built pruned model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "leansam-pruned"
WEIGHTS = "model.safetensors"
REPORT = "prune.json"
#: The files of a pruned model's folder (see leansam.outputs.OutputDir).
OWNED = (WEIGHTS, REPORT)
_FORMAT_KEY = "leansam.format"
_ARCH_KEY = "leansam.architecture"
ENCODER_KINDS = ("vit", "tiny_fpn")


def weights_file(path: str | Path) -> Path:
    """The safetensors file of a pruned-model folder (or ``path`` itself when it is a file)."""
    p = Path(path)
    return p / WEIGHTS if p.is_dir() else p


def read_arch(path: str | Path) -> dict[str, Any] | None:
    """The architecture recorded in a pruned model (folder or .safetensors file); None when ``path``
    is not one (any other checkpoint, a missing file)."""
    f = weights_file(path)
    if not f.is_file() or f.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(f), "pt") as st:
            meta = st.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    if meta.get(_FORMAT_KEY) != FORMAT:
        return None
    try:
        arch = json.loads(meta[_ARCH_KEY])
    except (KeyError, json.JSONDecodeError):
        arch = None
    return check_arch(arch, str(f))


def check_arch(arch: Any, where: str = "architecture") -> dict[str, Any]:
    """Validates an architecture object (see module docstring); raises CheckpointError."""
    from ..checkpoints import CheckpointError

    enc = arch.get("encoder") if isinstance(arch, dict) else None
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("base"), str)
        and isinstance(enc, dict)
        and enc.get("kind") in ENCODER_KINDS
        and isinstance(enc.get("config"), dict)
    ):
        raise CheckpointError(
            f"{where}: the pruned-model architecture must be {{'base': NAME, 'encoder': "
            f"{{'kind': one of {ENCODER_KINDS}, 'config': {{...}}}}}}"
        )
    return arch


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def encoder_from_config(kind: str, config: dict[str, Any]) -> nn.Module:
    """The image encoder of ``kind`` with the given config fields (JSON lists become tuples)."""
    from ..checkpoints import CheckpointError

    cfg = {k: _tuples(v) for k, v in config.items()}
    try:
        if kind == "vit":
            from ..models.vit import ViTConfig, ViTImageEncoder

            return ViTImageEncoder(ViTConfig(**cfg))
        from ..models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder

        return TinyFPNEncoder(TinyFPNConfig(**cfg))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"bad {kind} encoder config {config}: {e}") from None


def encoder_config(encoder: nn.Module) -> tuple[str, dict[str, Any]]:
    """(kind, JSON-able config) of a prunable encoder (ValueError for any other encoder)."""
    from ..models.tiny_fpn import TinyFPNEncoder
    from ..models.vit import ViTImageEncoder

    if type(encoder) is ViTImageEncoder:
        cfg = dataclasses.asdict(encoder.cfg)
        cfg.pop("extra", None)
        return "vit", cfg
    if type(encoder) is TinyFPNEncoder:
        return "tiny_fpn", dataclasses.asdict(encoder.config)
    raise ValueError(f"no pruned-architecture description for a {type(encoder).__name__} encoder")


def build_from_arch(arch: dict[str, Any]):
    """A fresh :class:`~leansam.models.sam.Sam`: the base model with the described image encoder."""
    from ..registry import get_model_info

    arch = check_arch(arch)
    model = get_model_info(arch["base"]).build()
    model.image_encoder = encoder_from_config(arch["encoder"]["kind"], arch["encoder"]["config"])
    model.leansam_arch = arch
    return model.eval()


def describe(model: nn.Module) -> dict[str, Any] | None:
    """The architecture of a pruned model (None for a registry architecture)."""
    return getattr(model, "leansam_arch", None)


def set_arch(model: nn.Module, base: str) -> dict[str, Any]:
    """Records the architecture of ``model`` (base registry name + its current encoder) on it."""
    kind, cfg = encoder_config(model.image_encoder)
    arch = {"base": base, "encoder": {"kind": kind, "config": cfg}}
    model.leansam_arch = arch
    return arch


def save_pruned(
    model: nn.Module, out_dir: str | Path, report: dict[str, Any], overwrite: bool = False
) -> Path:
    """Writes ``model`` (with :func:`set_arch` done) and ``report`` to ``out_dir`` through
    :class:`leansam.outputs.OutputDir` (``overwrite``: replace files of the same names that leansam
    did not write)."""
    from safetensors.torch import save

    from ..io import OutputDir, write_json

    arch = describe(model)
    if arch is None:
        raise ValueError("the model carries no pruned architecture (call set_arch first)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {_FORMAT_KEY: FORMAT, _ARCH_KEY: json.dumps(arch)}
    with OutputDir(out_dir, overwrite, OWNED, command="leansam prune") as out:
        # Serialised here and written by Python, so that a failed write raises OSError.
        out.path(WEIGHTS).write_bytes(save(state, metadata=meta))
        write_json(out.path(REPORT), {"architecture": arch, **report})
    return Path(out_dir)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of a pruned model (folder or file)."""
    from safetensors.torch import load_file

    return load_file(str(weights_file(path)))


def resolve_spec(name: str | None, checkpoint: str | Path | None) -> tuple[str | None, str | Path | None]:
    """(registry name, checkpoint) for a model given as a pruned-model path in ``name`` or ``checkpoint``.

    ``name`` may be a pruned model's folder or file (then ``checkpoint`` must be None); a pruned
    ``checkpoint`` with no ``name`` names its base model. Anything else passes through unchanged.
    """
    from ..checkpoints import CheckpointError

    if name is not None and ("/" in name or name.endswith(".safetensors") or Path(name).exists()):
        if not Path(name).exists():
            raise CheckpointError(f"model path not found: {name}")
        arch = read_arch(name)
        if arch is None:
            raise CheckpointError(
                f"{name} is not a pruned leansam model (no {WEIGHTS} with leansam.architecture metadata); "
                "give a registry name with --checkpoint for other weights"
            )
        if checkpoint is not None:
            raise CheckpointError(f"{name} holds its own weights: do not also give a checkpoint")
        return arch["base"], name
    if name is None and checkpoint is not None:
        arch = read_arch(checkpoint)
        if arch is not None:
            return arch["base"], checkpoint
    return name, checkpoint
