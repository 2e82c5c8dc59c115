"""Data readers and the deterministic sample order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from leansam.data.coco import encode_mask
from leansam.data.synth import SynthConfig, generate
from leansam.io import InputError
from leansam.train.data import CocoSource, SA1BSource, SynthSource, open_source, prepare, sample_indices
from leansam.transforms import ImageTransform

SMALL = SynthConfig(
    min_side=64, max_side=96, min_objects=2, max_objects=4, min_distractors=0, max_distractors=1
)


def test_sample_indices_epochs_and_ranks() -> None:
    n = 10
    seen = [i for s in range(5) for i in sample_indices(n, 3, s, 2)]
    assert sorted(seen) == list(range(n))  # one epoch = a permutation
    assert sample_indices(n, 3, 7, 2) == sample_indices(n, 3, 7, 2)
    r0 = [i for s in range(5) for i in sample_indices(20, 0, s, 2, rank=0, world=2)]
    r1 = [i for s in range(5) for i in sample_indices(20, 0, s, 2, rank=1, world=2)]
    assert not set(r0) & set(r1) and len(set(r0 + r1)) == 20


def test_synth_and_coco_sources_agree(tmp_path) -> None:
    generate(3, tmp_path / "set", seed=4, config=SMALL)
    coco = open_source(str(tmp_path / "set"))
    assert isinstance(coco, CocoSource)
    synth = SynthSource(3, 4, SMALL)
    a, b = synth[1], coco[1]
    assert a.masks.shape == b.masks.shape
    assert (a.masks == b.masks).all()


def test_sa1b_layout(tmp_path) -> None:
    img = np.zeros((40, 50, 3), np.uint8)
    m = np.zeros((40, 50), bool)
    m[5:20, 10:30] = True
    Image.fromarray(img).save(tmp_path / "sa_1.jpg")
    ann = {
        "image": {"image_id": 1, "width": 50, "height": 40, "file_name": "sa_1.jpg"},
        "annotations": [
            {"id": 7, "segmentation": encode_mask(m), "bbox": [10, 5, 20, 15], "area": int(m.sum())}
        ],
    }
    (tmp_path / "sa_1.json").write_text(json.dumps(ann))
    src = open_source(str(tmp_path))
    assert isinstance(src, SA1BSource) and len(src) == 1
    s = src[0]
    assert s.masks.shape == (1, 40, 50) and (s.masks[0] == m).all()


def test_bad_specs(tmp_path) -> None:
    with pytest.raises(InputError):
        open_source("synth:x")
    with pytest.raises(InputError):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(InputError):
        SA1BSource(tmp_path)


def test_prepare_maps_masks_to_the_frame() -> None:
    s = SynthSource(1, 0, SMALL)[0]
    t = ImageTransform(encoder_size=64, prompt_frame=128)
    p = prepare(s, t, 32)
    assert p.x.shape == (3, 64, 64)
    assert p.masks.shape[1:] == (32, 32)
    fh, fw = p.frame
    lh, lw = round(fh * 32 / 128), round(fw * 32 / 128)
    assert p.masks[:, lh:].sum() == 0 and p.masks[:, :, lw:].sum() == 0  # padding stays empty
    flipped = prepare(s, t, 32, flip=True)
    assert flipped.masks.sum() == p.masks.sum()


def test_prefetcher_gives_the_same_samples_as_direct_reads() -> None:
    from leansam.train.data import Prefetcher, SynthSource, sample_indices

    src = SynthSource(12, 3)
    reader = Prefetcher(src)
    for step in range(3):
        idx = sample_indices(len(src), 0, step, 2)
        got = reader.get(idx)
        reader.prefetch(sample_indices(len(src), 0, step + 1, 2))
        for s, i in zip(got, idx):
            assert s.key == src[i].key and np.array_equal(s.image, src[i].image)
    # a prefetch for other indices is not used for a request it does not match
    reader.prefetch([0, 1])
    assert [s.key for s in reader.get([5, 6])] == [src[5].key, src[6].key]
