"""Top-level convenience functions."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import load_model
from .models.sam import Sam


def build_model(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    allow_download: bool = True,
    progress: bool = True,
) -> Sam:
    """Builds a registered model in eval mode.

    Args:
        name: registry name (see :func:`leansam.list_models`), or the folder / ``.safetensors`` file
            of a pruned model (``leansam prune``); None: the bundled default model
            (``leansam.DEFAULT_MODEL``, weights inside the package, no download).
        checkpoint: a checkpoint file in the official format (or .safetensors). When None and
            ``pretrained``, the official checkpoint is taken from the cache
            (``$LEANSAM_HOME``, default ``~/.cache/leansam``), downloaded if absent, and sha256-checked.
        pretrained: False builds the architecture with random weights.
        device: where to put the model.
        trust_pickle: allow checkpoints that are pickled Python objects (runs code from the file).
        allow_download: False raises instead of downloading a missing official checkpoint.
        progress: show a download progress bar.
    """
    from .prune.arch import resolve_spec

    name, checkpoint = resolve_spec(name, checkpoint)
    if name is None:
        from .registry import default_model_name

        name = default_model_name()
    model, _ = load_model(
        name,
        checkpoint,
        pretrained=pretrained,
        trust_pickle=trust_pickle,
        allow_download=allow_download,
        progress=progress,
    )
    return model.to(device).eval()
