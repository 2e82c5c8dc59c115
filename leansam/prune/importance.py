"""Channel importance for structural pruning, and the calibration data it is computed on.

Criteria (each channel's score is summed over every tensor slice of its coupled group):

``magnitude``
    squared weights (no data).
``taylor``
    first-order Taylor estimate |w * dL/dw| of the task loss: box prompts from the calibration
    set's ground-truth masks, 20 x focal + dice of the single-mask output (needs masks: a
    ``synth:N[:SEED]`` set or an annotated folder).
``disturbed-taylor`` (SlimSAM)
    |w * dL/dw| of the embedding-distillation loss against the unpruned model's embedding plus
    Gaussian noise (``noise`` x the embedding's std): without the noise the loss and its gradient
    are zero while the model still equals its teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..io import InputError
from ..models.sam import Sam
from .vit import Scorer

IMPORTANCES = ("taylor", "disturbed-taylor", "magnitude")


@dataclass
class Calibration:
    """Encoder inputs (B x 3 x S x S each, the model's pre-processing) and, when known, the masks
    (N x L x L in the padded prompt frame at L = the frame side / 4)."""

    inputs: list[torch.Tensor]
    masks: list[torch.Tensor] | None


def load_calibration_data(spec: str, model: Sam, count: int) -> Calibration:
    """``synth:N[:SEED[:PRESET]]`` (images with masks), an annotated data folder, or a folder of images."""
    from pathlib import Path

    from ..train.data import SA1BSource, open_source, prepare

    if not spec.startswith("synth:") and Path(spec).is_dir() and not _annotated(Path(spec)):
        from ..compress.calib import load_calibration

        images = load_calibration(spec, count).images
        return Calibration([model.preprocess(img) for img in images], None)
    source = open_source(spec)
    if isinstance(source, SA1BSource) and len(source) == 0:
        raise InputError(f"no images in {spec}")
    res = model.transform.prompt_frame // 4
    preps = [prepare(source[i], model.transform, res) for i in range(min(count, len(source)))]
    return Calibration([p.x[None] for p in preps], [p.masks for p in preps])


def _annotated(p) -> bool:
    return (p / "annotations.json").is_file() or any(p.glob("*.json"))


def scorer(importance: str) -> Scorer:
    """``score(param, axis)``: per-index importance along ``axis`` from the param (and its ``.grad``)."""

    def reduce(t: torch.Tensor, axis: int) -> torch.Tensor:
        return t.transpose(0, axis).reshape(t.shape[axis], -1).sum(1).float().cpu()

    def score(p: torch.Tensor, axis: int) -> torch.Tensor:
        if importance == "magnitude":
            return reduce(p.detach() ** 2, axis)
        if p.grad is None:
            return torch.zeros(p.shape[axis])
        return reduce((p.detach() * p.grad).abs(), axis)

    return score


def accumulate_grads(
    model: Sam,
    teacher: Sam,
    calib: Calibration | None,
    importance: str,
    noise: float = 0.2,
    seed: int = 0,
) -> None:
    """Fills ``.grad`` of the image encoder's parameters for a gradient criterion (sum over images)."""
    if importance == "magnitude":
        return
    if importance == "taylor" and calib.masks is None:
        raise InputError(
            "--importance taylor needs ground-truth masks: calibrate on synth:N or an annotated folder, "
            "or use disturbed-taylor / magnitude"
        )
    gen = torch.Generator().manual_seed(seed)
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train(False)
    for i, x in enumerate(calib.inputs):
        if importance == "disturbed-taylor":
            with torch.no_grad():
                target = teacher.encode_image(x).embed
            target = target + noise * target.std() * torch.randn(target.shape, generator=gen).to(target)
            loss = F.mse_loss(model.encode_image(x).embed, target)
        else:
            loss = _task_loss(model, x, calib.masks[i])
        loss.backward()


def _task_loss(model: Sam, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    from ..train.losses import dice_loss, focal_loss
    from ..train.prompts import boxes_from_masks
    from ..train.train import decode_all

    feats = model.encode_image(x)
    if len(masks) == 0:
        return feats.embed.sum() * 0.0
    frame = model.transform.prompt_frame
    boxes = boxes_from_masks(masks, frame).to(x.device)
    low, _, _ = decode_all(model, feats, None, None, boxes, None)
    logits = F.interpolate(low[:, :1], masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    target = masks.to(logits)
    return (20 * focal_loss(logits, target) + dice_loss(logits, target)).mean()
