"""Training data: readers for synthetic, COCO-format and SA-1B-layout sets, and batching.

Every source is an indexable sequence of :class:`Sample` (one image with its instance masks).
Indexing is a pure function of the index, so the order in which a run visits samples is
decided by :func:`sample_indices` alone (seed, step, rank), which makes resuming exact.

Sources:

* :class:`SynthSource` renders ``leansam.data.synth`` images in memory (no files).
* :class:`CocoSource` reads a COCO instances JSON (RLE or polygons) and its images.
* :class:`SA1BSource` reads the SA-1B layout: ``<dir>/sa_N.jpg`` next to ``<dir>/sa_N.json``
  with ``{"image": {...}, "annotations": [{"segmentation": RLE, ...}, ...]}``.

:func:`open_source` picks one from a spec string: ``synth:N[:SEED]``, a ``.json`` COCO file,
or a directory (SA-1B layout, or a COCO set with ``annotations.json``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.coco import decode_mask, load_coco
from ..data.synth import SynthConfig, render_sample
from ..io import InputError, load_image
from ..transforms import ImageTransform, preprocess

#: The easy evaluation set's generator setting: small images with few, mostly medium/large, high-contrast
#: objects and little clutter (an easier cut of ``leansam.data.synth``; see docs/training.md).
TINY_SYNTH = SynthConfig(
    min_side=256,
    max_side=320,
    max_aspect=1.5,
    min_objects=2,
    max_objects=6,
    size_mix=(0.15, 0.45, 0.4),
    kind_weights=(0.25, 0.3, 0.3, 0.05, 0.1),
    small_min_area=100,
    min_area=64,
    min_distractors=0,
    max_distractors=2,
    textured_fill_prob=0.3,
    shadow_prob=0.15,
    contrast_prob=1.0,
    blur_prob=0.1,
)

#: Data of the default model's training: more objects, texture, clutter and shape variety than
#: ``TINY_SYNTH`` (occlusion, thin and holed shapes), images 256-384 px.
MEDIUM_SYNTH = dataclasses.replace(
    TINY_SYNTH,
    max_side=384, max_aspect=1.6, max_objects=10, size_mix=(0.25, 0.45, 0.3),
    kind_weights=(0.2, 0.25, 0.25, 0.12, 0.18), small_min_area=64, min_area=32, max_distractors=4,
    textured_fill_prob=0.5, shadow_prob=0.25, contrast_prob=0.9, blur_prob=0.2,
)  # fmt: skip

#: The default model's main training data and its held-out set: ``MEDIUM_SYNTH`` plus letters and
#: objects with parts, dead-leaves layouts, fractal and 1/f textures, uneven lighting, JPEG
#: artefacts and touching objects of one colour.
RICH_SYNTH = dataclasses.replace(
    MEDIUM_SYNTH,
    kind_weights=(0.18, 0.22, 0.2, 0.1, 0.12, 0.09, 0.09),
    dead_leaves_prob=0.25,
    fractal_prob=0.3,
    lighting_prob=0.3,
    jpeg_prob=0.3,
    shared_colour_prob=0.15,
)

#: An out-of-style test set, never trained on: more and larger images and objects, mostly dead
#: leaves, letters, part-objects, holed and thin shapes, fractal / 1/f textures, lower contrast.
OOD_SYNTH = dataclasses.replace(
    RICH_SYNTH,
    min_side=320,
    max_side=512,
    min_objects=6,
    max_objects=16,
    kind_weights=(0.05, 0.1, 0.1, 0.15, 0.2, 0.2, 0.2),
    min_distractors=2,
    max_distractors=8,
    textured_fill_prob=0.8,
    contrast_prob=0.6,
    dead_leaves_prob=0.6,
    fractal_prob=0.8,
    lighting_prob=0.6,
    jpeg_prob=0.5,
    shared_colour_prob=0.3,
)

#: Named generator settings for ``synth:N:SEED:PRESET`` data specs.
SYNTH_PRESETS: dict[str, SynthConfig] = {
    "tiny": TINY_SYNTH,
    "medium": MEDIUM_SYNTH,
    "rich": RICH_SYNTH,
    "ood": OOD_SYNTH,
    "full": SynthConfig(),
}


@dataclass
class Sample:
    """One image and its instances.

    image: H x W x 3 uint8 RGB. masks: N x H x W bool (N may be 0). key: a stable name.
    category_ids: N ints (0 when unknown).
    """

    image: np.ndarray
    masks: np.ndarray
    key: str
    category_ids: list[int] = field(default_factory=list)


class SynthSource(Sequence):
    """``n`` images rendered by :func:`leansam.data.synth.render_sample` for ``seed`` (in memory)."""

    def __init__(self, n: int, seed: int = 0, config: SynthConfig | None = None) -> None:
        if n <= 0:
            raise ValueError("SynthSource needs n > 0")
        self.n, self.seed, self.config = n, seed, config or TINY_SYNTH

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = render_sample(i, self.seed, self.config)
        h, w = s.image.shape[:2]
        masks = np.stack(s.masks) if s.masks else np.zeros((0, h, w), bool)
        return Sample(s.image, masks, f"synth-{self.seed}-{i}", list(s.category_ids))


class CocoSource(Sequence):
    """A COCO instances file (images with at least one non-crowd annotation)."""

    def __init__(self, path: str | Path, image_root: str | Path | None = None) -> None:
        try:
            self.ds = load_coco(path, image_root)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read COCO set {path}: {e}") from e
        self.ids = [i for i in self.ds.image_ids() if any(not a.iscrowd for a in self.ds.annotations_for(i))]
        if not self.ids:
            raise InputError(f"COCO set {path} has no image with a (non-crowd) annotation")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        iid = self.ids[i]
        img = self.ds.images[iid]
        anns = [a for a in self.ds.annotations_for(iid) if not a.iscrowd]
        image = load_image(self.ds.image_path(iid))
        masks = np.stack([self.ds.mask(a) for a in anns])
        if image.shape[:2] != (img.height, img.width):
            raise InputError(
                f"image {self.ds.image_path(iid)} is {image.shape[:2]}, its entry says {img.height}x{img.width}"
            )
        return Sample(image, masks, f"coco-{iid}", [a.category_id for a in anns])


class SA1BSource(Sequence):
    """SA-1B layout: every ``*.json`` in ``root`` with an image of the same stem (``.jpg``/``.png``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.items: list[tuple[Path, Path]] = []
        for js in sorted(self.root.glob("*.json")):
            for ext in (".jpg", ".jpeg", ".png"):
                if (img := js.with_suffix(ext)).is_file():
                    self.items.append((img, js))
                    break
        if not self.items:
            raise InputError(f"{root}: no SA-1B style image + JSON pairs (sa_N.jpg + sa_N.json) found")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        img_path, js = self.items[i]
        try:
            rec = json.loads(js.read_text(encoding="utf-8"))
            anns = rec["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{js}: not an SA-1B annotation file ({e})") from e
        image = load_image(img_path)
        h, w = image.shape[:2]
        masks = [decode_mask(a["segmentation"], h, w) for a in anns]
        arr = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return Sample(image, arr, f"sa1b-{img_path.stem}", [0] * len(masks))


def open_source(spec: str, synth_config: SynthConfig | None = None) -> Sequence:
    """A data source from a spec: ``synth:N[:SEED[:PRESET]]``, a COCO ``.json``, or a directory.

    PRESET names a generator setting of :data:`SYNTH_PRESETS` (default: ``synth_config``, else
    ``tiny``).
    """
    if spec.startswith("synth:"):
        parts = spec.split(":")
        try:
            n = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (IndexError, ValueError):
            raise InputError(f"synthetic data spec must be synth:N[:SEED[:PRESET]], not {spec!r}") from None
        if n <= 0 or len(parts) > 4:
            raise InputError(f"synthetic data spec must be synth:N[:SEED[:PRESET]] with N > 0, not {spec!r}")
        if len(parts) == 4:
            if parts[3] not in SYNTH_PRESETS:
                raise InputError(
                    f"unknown synthetic preset {parts[3]!r}; choose from {sorted(SYNTH_PRESETS)}"
                )
            synth_config = SYNTH_PRESETS[parts[3]]
        return SynthSource(n, seed, synth_config)
    p = Path(spec)
    if p.is_file():
        return CocoSource(p)
    if p.is_dir():
        if (p / "annotations.json").is_file():
            return CocoSource(p / "annotations.json")
        return SA1BSource(p)
    raise InputError(f"data {spec!r} is neither synth:N[:SEED], a COCO .json file nor a directory")


class Prefetcher:
    """Reads the samples of the next step in a background thread while the current step runs.

    ``get(indices)`` returns ``[source[i] for i in indices]`` (from the prefetch when it asked for
    exactly these); ``prefetch(indices)`` starts reading the next ones. Rendering and decoding
    (OpenCV, numpy, PIL) release the GIL, so they overlap with the step's torch work.
    """

    def __init__(self, source: Sequence) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.source = source
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leansam-prefetch")
        self._pending: tuple[list[int], object] | None = None

    def prefetch(self, indices: list[int]) -> None:
        self._pending = (list(indices), self._pool.submit(lambda: [self.source[i] for i in indices]))

    def get(self, indices: list[int]) -> list:
        if self._pending is not None and self._pending[0] == list(indices):
            samples = self._pending[1].result()
            self._pending = None
            return samples
        return [self.source[i] for i in indices]


class _Steps(torch.utils.data.Dataset):
    def __init__(self, make_batch: Callable[[int], list], start: int, stop: int) -> None:
        self.make_batch, self.start, self.stop = make_batch, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, j: int) -> tuple[int, list]:
        return self.start + j, self.make_batch(self.start + j)


def _as_is(item: object) -> object:
    return item


class StepLoader:
    """Step ``s``'s batch, ``make_batch(s)``, computed ahead in ``workers`` processes.

    ``get(step)`` serves steps in order from the first one asked for up to ``stop``; asking for
    any other step starts the workers over from it. Workers are forked, so ``make_batch`` needs no
    pickling, and each runs torch on one thread.
    """

    def __init__(self, make_batch: Callable[[int], list], stop: int, workers: int) -> None:
        self.make_batch, self.stop, self.workers = make_batch, stop, workers
        self._it: Iterator | None = None
        self._next = -1

    def get(self, step: int) -> list:
        if self._it is None or step != self._next:
            data = _Steps(self.make_batch, step, self.stop)
            self._it = iter(
                torch.utils.data.DataLoader(
                    data,
                    batch_size=None,
                    num_workers=self.workers,
                    collate_fn=_as_is,
                    prefetch_factor=2,
                    multiprocessing_context="fork",
                )
            )
        got, batch = next(self._it)
        if got != step:
            raise RuntimeError(f"step loader served step {got} for step {step}")
        self._next = step + 1
        return batch


def sample_indices(n: int, seed: int, step: int, batch: int, rank: int = 0, world: int = 1) -> list[int]:
    """Indices of the samples rank ``rank`` uses at ``step``: epoch-wise permutations of ``range(n)``.

    Position ``k = (step * world + rank) * batch + j`` of the infinite stream is element
    ``k % n`` of the permutation of epoch ``k // n`` (``default_rng([seed, epoch])``), so the
    order depends on nothing but these arguments (exact resume, disjoint ranks).
    """
    out = []
    for j in range(batch):
        k = (step * world + rank) * batch + j
        epoch, pos = divmod(k, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perm[pos]))
    return out


@dataclass
class Prepared:
    """One sample in the model's frame.

    x: 3 x S x S encoder input. masks: N x L x L float {0, 1} in the padded prompt frame at
    the loss resolution L. frame: (h, w) of the image inside the prompt frame. key: sample key.
    """

    x: torch.Tensor
    masks: torch.Tensor
    frame: tuple[int, int]
    key: str


def image_cells(frame: tuple[int, int], loss_res: int, side: int) -> tuple[int, int]:
    """(rows, cols) of the ``loss_res`` x ``loss_res`` loss grid that an image of ``frame`` (h, w)
    pixels in the prompt frame of ``side`` covers; the rest of the grid is padding."""
    return round(frame[0] * loss_res / side), round(frame[1] * loss_res / side)


def prepare(
    sample: Sample, transform: ImageTransform, loss_res: int, flip: bool = False, min_area: int = 1
) -> Prepared:
    """Preprocesses the image and maps masks to the padded prompt frame at ``loss_res``.

    ``loss_res`` is the side of the square the prompt frame is resampled to for the loss
    (e.g. 256 for the 256 frame, or the decoder's low-res size). Instances whose mask is
    smaller than ``min_area`` pixels at that resolution are dropped.
    """
    image, masks = sample.image, sample.masks
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
        masks = np.ascontiguousarray(masks[:, :, ::-1])
    x = preprocess(image, transform)[0]
    h, w = image.shape[:2]
    fh, fw = transform.frame_size((h, w))
    lh, lw = image_cells((fh, fw), loss_res, transform.prompt_frame)
    if len(masks):
        m = torch.from_numpy(masks).float()[:, None]
        m = F.interpolate(m, (lh, lw), mode="area")[:, 0]
        m = (m >= 0.5).float()
        m = F.pad(m, (0, loss_res - lw, 0, loss_res - lh))
        keep = m.flatten(1).sum(1) >= min_area
        m = m[keep]
    else:
        m = torch.zeros((0, loss_res, loss_res))
    return Prepared(x, m, (fh, fw), sample.key)
