"""Import the official reference implementations (test-only) without torchvision.

torchvision has no build for this torch; the official packages import it only
for PIL resizing and box NMS. These stubs provide exactly those functions with
torchvision's semantics, written independently of leansam (so a bug in leansam
cannot hide in the oracle).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image


def _resize(img: Image.Image, size, interpolation=None, max_size=None, antialias=None) -> Image.Image:
    # torchvision.transforms.functional.resize on a PIL image with size (h, w): PIL bilinear.
    h, w = size
    return img.resize((w, h), Image.BILINEAR)


def _to_pil_image(pic, mode=None) -> Image.Image:
    return Image.fromarray(np.asarray(pic), mode=mode)


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, plain loop (torchvision.ops.nms semantics: suppress IoU > threshold)."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    b = boxes.double()
    area = _box_area(b)
    keep: list[int] = []
    removed = set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j in removed or j == i or j in keep:
                continue
            xx0 = torch.maximum(b[i, 0], b[j, 0])
            yy0 = torch.maximum(b[i, 1], b[j, 1])
            xx1 = torch.minimum(b[i, 2], b[j, 2])
            yy1 = torch.minimum(b[i, 3], b[j, 3])
            inter = (xx1 - xx0).clamp(min=0) * (yy1 - yy0).clamp(min=0)
            iou = inter / (area[i] + area[j] - inter)
            if iou > iou_threshold:
                removed.add(j)
    return torch.tensor(keep, dtype=torch.int64)


def _batched_nms(boxes, scores, idxs, iou_threshold):
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def install_torchvision_stub() -> None:
    """Registers a minimal ``torchvision`` in sys.modules if the real one cannot be imported."""
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = _resize
    functional.to_pil_image = _to_pil_image
    transforms.functional = functional
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _batched_nms
    boxes.box_area = _box_area
    boxes.nms = _nms
    ops.boxes = boxes
    ops.batched_nms = _batched_nms
    ops.box_area = _box_area
    ops.nms = _nms
    tv.transforms = transforms
    tv.ops = ops
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
        }
    )


def install_timm_stub() -> None:
    """A minimal ``timm`` for MobileSAM's TinyViT: DropPath, to_2tuple, trunc_normal_, register_model.

    Only eval-mode behaviour matters for parity: DropPath is the identity there.
    """
    if "timm" in sys.modules:
        return

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    models.layers, models.registry, timm.models = layers, registry, models
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )


def mobile_sam():
    """The official MobileSAM package (PyPI ``mobilesam-mirror``, module ``mobile_sam``; test-only)."""
    install_torchvision_stub()
    install_timm_stub()
    try:
        import mobile_sam
    except ImportError:
        pytest.fail("the parity oracle `mobilesam-mirror` is not installed: pip install -e '.[test]'")
    return mobile_sam


def segment_anything():
    """The official ``segment_anything`` package (test-only dependency)."""
    install_torchvision_stub()
    try:
        import segment_anything
    except ImportError:
        pytest.fail("the parity oracle `segment-anything` is not installed: pip install -e '.[test]'")
    return segment_anything
