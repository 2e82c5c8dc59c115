"""Build a tracking model and load an official checkpoint into it whole and strictly.

The image part is the registry model (its family filter renames the image-mode keys); the memory
modules keep their official top-level names. Every key of the file must land in the model and every
model key must come from the file, with the same shape.
"""

from __future__ import annotations

import os

import torch

from ..checkpoints import CheckpointError, read_state_dict, resolve_checkpoint
from ..registry import get_model_info
from .config import VIDEO_CONFIGS, tracking_models
from .model import VideoModel

_SHOW = 12


class NotTrackableError(ValueError):
    """The model has no video memory; the message names the models that can track."""


def build_video_model(name: str) -> VideoModel:
    """The tracking architecture of registry model ``name`` (freshly initialised, eval mode)."""
    if name not in VIDEO_CONFIGS:
        get_model_info(name)  # unknown names: the registry's error with close matches
        raise NotTrackableError(
            f"model {name!r} has no video memory and cannot track; models that can: {', '.join(tracking_models())}"
        )
    return VideoModel(get_model_info(name).build(), VIDEO_CONFIGS[name]).eval()


def _keys(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f", ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_video_state_dict(
    model: VideoModel, name: str, state: dict[str, torch.Tensor], path: str | os.PathLike = "<state_dict>"
) -> None:
    """Loads an official state_dict (official keys) into ``model`` strictly; :class:`CheckpointError` otherwise."""
    image_keys, memory_keys = get_model_info(name).filter_state_dict(dict(state))
    full = {"sam." + k: v for k, v in image_keys.items()}
    full.update({k: state[k] for k in memory_keys})
    own = model.state_dict()
    missing = [k for k in own if k not in full]
    unexpected = [k for k in full if k not in own]
    wrong = [
        f"{k} (file {tuple(full[k].shape)}, model {tuple(v.shape)})"
        for k, v in own.items()
        if k in full and full[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        lines = [f"checkpoint {path} does not fit the tracking model {name!r}:"]
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)):
            if keys:
                lines.append(f"  {what} ({len(keys)}): {_keys(keys)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in full.items()}, strict=True)


def load_video_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    progress: bool = True,
) -> VideoModel:
    """``name``'s tracking model with its official checkpoint (cached / downloaded) or ``checkpoint``
    (a file in the official format, or a folder written by :func:`leansam.compress.save_quantized`)."""
    if checkpoint is not None and os.path.isdir(checkpoint):
        return _load_quantized(name, checkpoint)
    model = build_video_model(name)
    info = get_model_info(name)
    if checkpoint is None:
        if info.weights is None:
            raise CheckpointError(f"model {name!r} has no registered weights; pass a checkpoint")
        checkpoint, _ = resolve_checkpoint(info, allow_download=allow_download, progress=progress)
    load_video_state_dict(model, name, read_state_dict(checkpoint, info), checkpoint)
    return model.eval()


def _load_quantized(name: str, folder: str | os.PathLike) -> VideoModel:
    """The int8 tracking model saved in ``folder``; it must be ``name``'s."""
    from ..compress.saving import is_quantized_dir, load_quantized

    if not is_quantized_dir(folder):
        raise CheckpointError(
            f"{folder} is a folder but not a quantized model (no quantization.json); pass a checkpoint file"
        )
    model = load_quantized(folder)
    if not isinstance(model, VideoModel):
        raise CheckpointError(
            f"{folder} holds an image model; quantize the tracking model with `leansam quantize --video`"
        )
    if model.sam.name != name:
        raise CheckpointError(f"{folder} holds {model.sam.name}, not {name}")
    return model
