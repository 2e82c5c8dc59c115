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
import torch.nn.functional as F
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


# --- EfficientViT-SAM and SAM 2 -------------------------------------------------------------------
# Both also use torchvision.transforms' ToTensor / Normalize (and Compose, resp. a TorchScript-ed
# tensor Resize). The classes below follow torchvision's semantics for the inputs these packages
# give them; they are module-level so that torch.jit.script can read their source.


class _ToTensor:
    """torchvision ``ToTensor`` on an H x W x C ndarray / PIL image: C x H x W, uint8 -> float / 255."""

    def __call__(self, pic: np.ndarray | Image.Image) -> torch.Tensor:
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        img = torch.from_numpy(arr.transpose((2, 0, 1)).copy()).contiguous()
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img


class _Normalize(torch.nn.Module):
    """torchvision ``Normalize`` on a C x H x W (or B x C x H x W) float tensor."""

    def __init__(self, mean: list[float], std: list[float], inplace: bool = False) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std


class _Resize(torch.nn.Module):
    """torchvision ``Resize((h, w))`` on a float tensor, default (bilinear, antialias=True) only."""

    def __init__(self, size: tuple[int, int] | list[int], interpolation=None, max_size=None, antialias=True):
        super().__init__()
        if isinstance(size, int) or len(size) != 2 or interpolation is not None or not antialias:
            raise NotImplementedError("the stub implements Resize((h, w)) with bilinear antialias only")
        self.size = [int(size[0]), int(size[1])]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        squeeze = img.dim() == 3
        x = img.unsqueeze(0) if squeeze else img
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x.squeeze(0) if squeeze else x


class _Compose:
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


def _install_torchvision_transforms_stub() -> None:
    """Adds ToTensor / Normalize / Resize / Compose to the torchvision stub (when it is the stub)."""
    install_torchvision_stub()
    transforms = sys.modules["torchvision.transforms"]
    for name, obj in (
        ("ToTensor", _ToTensor),
        ("Normalize", _Normalize),
        ("Resize", _Resize),
        ("Compose", _Compose),
    ):
        if not hasattr(transforms, name):
            setattr(transforms, name, obj)


def efficientvit_sam():
    """The official EfficientViT-SAM code (PyPI ``efficientsam`` 1.0.0 = mit-han-lab/efficientvit; test-only).

    Installed from ``requirements-oracles.txt`` with ``--no-deps`` (it declares torchvision).
    """
    _install_torchvision_transforms_stub()
    try:
        import efficientsam
        import efficientsam.models.efficientvit.sam
        import efficientsam.models.utils
        import efficientsam.sam_model_zoo
    except ImportError as e:
        pytest.fail(
            f"the parity oracle `efficientsam` is not importable ({e}): SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation -r requirements-oracles.txt (make setup does it)"
        )
    return efficientsam


def _label_8(fg: np.ndarray) -> np.ndarray:
    """8-connected components of one H x W bool mask: int64 labels (0 = background), by union-find
    over the horizontal runs of each row (a run joins the runs of the row above that touch it,
    diagonals included)."""
    h, w = fg.shape
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: list[tuple[int, int, int]] = []  # (row, start, end exclusive)
    prev: list[int] = []  # run ids of the previous row
    for r in range(h):
        padded = np.concatenate(([False], fg[r], [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        cur: list[int] = []
        j = 0
        for s, e in zip(edges[::2].tolist(), edges[1::2].tolist()):
            rid = len(runs)
            runs.append((r, s, e))
            parent.append(rid)
            cur.append(rid)
            while j < len(prev) and runs[prev[j]][2] < s:  # above-run ends before column s - 1
                j += 1
            k = j
            while k < len(prev) and runs[prev[k]][1] <= e:  # above-run starts by column e
                a, b = find(rid), find(prev[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
        prev = cur
    labels = np.zeros((h, w), dtype=np.int64)
    for rid, (r, s, e) in enumerate(runs):
        labels[r, s:e] = find(rid) + 1
    return labels


def connected_components_8(mask: torch.Tensor) -> list[torch.Tensor]:
    """The contract of SAM 2's CUDA ``_C.get_connected_componnets`` for N x 1 x H x W uint8 masks.

    8-connectivity; returns [labels, counts], both int32 N x 1 x H x W: labels > 0 on foreground
    pixels (one value per component), counts = the area of the pixel's component (0 on background).
    Written independently of leansam (which calls OpenCV).
    """
    fg = mask.detach().cpu().numpy().astype(bool)
    labels = np.zeros(fg.shape, dtype=np.int64)
    counts = np.zeros(fg.shape, dtype=np.int64)
    for i in range(fg.shape[0]):
        lab = _label_8(fg[i, 0])
        area = np.bincount(lab.ravel())
        area[0] = 0
        labels[i, 0], counts[i, 0] = lab, area[lab]
    return [torch.from_numpy(a.astype(np.int32)).to(mask.device) for a in (labels, counts)]


def _install_sam2_cc_stub() -> None:
    """SAM 2's optional CUDA extension ``sam2._C`` (only its connected-components kernel)."""
    if "sam2._C" in sys.modules:
        return
    ext = types.ModuleType("sam2._C")
    ext.get_connected_componnets = connected_components_8  # sic: the upstream name
    sys.modules["sam2._C"] = ext


def sam2():
    """The official SAM 2 package (PyPI ``sam2`` 1.1.0 = facebookresearch/sam2 @2b90b9f; test-only).

    Its CUDA extension (only used for mask hole filling) is replaced by :func:`connected_components_8`.
    Installed from ``requirements-oracles.txt`` (``SAM2_BUILD_CUDA=0``, ``--no-deps --no-build-isolation``);
    its pure-Python needs hydra-core and iopath are in the ``test`` extra.
    """
    _install_torchvision_transforms_stub()
    try:
        import sam2
        import sam2.build_sam
        import sam2.sam2_image_predictor
    except ImportError as e:
        pytest.fail(
            f"the parity oracle `sam2` is not importable ({e}): pip install -e '.[test]' (hydra-core, iopath), "
            "then SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation -r requirements-oracles.txt (make setup does it)"
        )
    _install_sam2_cc_stub()
    return sam2


class SharedEncoder(torch.nn.Module):
    """Runs ``encoder`` once per distinct input; later calls with (nearly) the same input reuse it.

    Put in both leansam's and the official model, it makes them see one image embedding, so that
    a test compares what comes after the encoder (encoder parity is tested on its own) and pays
    for one encoder run instead of two.
    """

    img_size = 1024  # read by the official predictor

    def __init__(self, encoder: torch.nn.Module, cache: list) -> None:
        super().__init__()
        self.encoder = encoder
        self.cache = cache  # [(input, output, [max input difference of each reuse])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for key, out, diffs in self.cache:
            if key.shape == x.shape:
                d = (key - x).abs().max().item()
                if d <= 1e-3:
                    diffs.append(d)
                    return out
        out = self.encoder(x)
        self.cache.append((x.clone(), out, []))
        return out


def share_encoder(
    mine: torch.nn.Module, official: torch.nn.Module, seed: tuple[torch.Tensor, torch.Tensor] | None = None
) -> list:
    """Wraps both models' image encoders in one :class:`SharedEncoder` cache around ``mine``'s
    encoder; returns the cache ([(input, output, [max input difference of each reuse])]).

    ``seed``: an (input, output) pair of ``mine``'s encoder computed earlier (e.g. by a session
    fixture on the same weights); the cache starts with it, so that input is not encoded again.
    """
    cache: list = [] if seed is None else [(seed[0], seed[1], [])]
    encoder = mine.image_encoder
    mine.image_encoder = SharedEncoder(encoder, cache)
    official.image_encoder = SharedEncoder(encoder, cache)
    return cache
