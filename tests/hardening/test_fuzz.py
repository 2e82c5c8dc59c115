"""Property-based fuzzing of every parser of untrusted input: each generated input gives a valid result
or leansam's error type (one ``error:`` line on the command line), never anything else.

Parsers: image files (random bytes and mutated PNG / JPEG / GIF / BMP / TIFF / WebP), checkpoint
containers (mutated ``torch.save`` zips, plain zips, safetensors), COCO annotations, detections and
boxes files (random JSON trees and mutated valid files; whatever validates must also decode), prompt
strings. ``LEANSAM_FUZZ_EXAMPLES`` sets the examples per parser (default 30); ``make fuzz`` runs
10,000 each and records the counts in docs/results/fuzz.json (see conftest).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as save_safetensors

from leansam.checkpoints import CheckpointError, read_state_dict
from leansam.commands.common import parse_box, parse_point
from leansam.data.coco import coco_from_data, decode_mask, encode_mask
from leansam.eval.inputs import load_detections
from leansam.everything.samplers import load_boxes
from leansam.io import InputError, load_image

EXAMPLES = int(os.environ.get("LEANSAM_FUZZ_EXAMPLES", "30"))
#: (parser, outcome) -> count; conftest writes it out when LEANSAM_FUZZ_RESULTS is set.
STATS: Counter = Counter()
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _record(parser: str, outcome: str) -> None:
    STATS[(parser, outcome)] += 1


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with bytes replaced, a slice removed or duplicated, and/or truncated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        op = draw(st.sampled_from(("set", "cut", "dup", "int")))
        i = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
        elif i + 4 <= len(data):  # a length or size field set to an extreme
            data[i : i + 4] = struct.pack("<I", draw(st.sampled_from((0, 1, 0x7FFFFFFF, 0xFFFFFFFF))))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = []
    for fmt, mode in (
        ("PNG", "RGB"),
        ("PNG", "I;16"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGBA"),
        ("WEBP", "RGB"),
    ):
        buf = io.BytesIO()
        img = Image.fromarray(arr)
        img = img.convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
        img.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


IMAGE_SEEDS = _image_seeds()


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated(IMAGE_SEEDS)))
def test_image_files(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.img"
    path.write_bytes(data)
    try:
        img = load_image(path, max_pixels=1 << 20)
    except InputError:
        _record("image", "error")
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0
    _record("image", "ok")


def _checkpoint_seeds() -> list[bytes]:
    sd = {
        "a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.ones(2, dtype=torch.int64),
    }
    buf = io.BytesIO()
    torch.save(sd, buf)
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.pt", buf.getvalue())
    return [buf.getvalue(), plain.getvalue(), save_safetensors(sd), save_safetensors({"x": torch.zeros(3)})]


CKPT_SEEDS = _checkpoint_seeds()


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=256), mutated(CKPT_SEEDS)),
    suffix=st.sampled_from((".pt", ".safetensors")),
)
def test_checkpoint_containers(tmp_path_factory, data, suffix):
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        sd = read_state_dict(path)
    except (CheckpointError, InputError):
        _record("checkpoint", "error")
        return
    assert sd and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
    _record("checkpoint", "ok")


# --- JSON files -----------------------------------------------------------------------------------
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5), st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=30,
)
H, W = 6, 8


def _valid_coco() -> dict:
    mask = np.zeros((H, W), bool)
    mask[1:4, 2:6] = True
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": encode_mask(mask),
                "area": 12,
                "bbox": [2, 1, 4, 3],
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            {
                "id": 3,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": [H, W], "counts": [10, 5, 33]},
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


@st.composite
def json_mutation(draw, seed: object) -> object:
    """``seed`` with a few nodes replaced by arbitrary JSON values (or deleted)."""
    doc = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 4))):
        node, path = doc, []
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        if isinstance(parent, dict) and draw(st.integers(0, 4)) == 0:
            del parent[key]
        else:
            parent[key] = draw(JSON)
    return doc


@FUZZ
@given(doc=st.one_of(JSON, json_mutation(_valid_coco())))
def test_coco_annotations(doc):
    try:
        ds = coco_from_data(doc, "fuzz.json", image_root=".")
    except ValueError:  # InputError is a ValueError
        _record("coco", "error")
        return
    for a in ds.annotations:  # what validates must decode
        img = ds.images[a.image_id]
        assert decode_mask(a.segmentation, img.height, img.width).shape == (img.height, img.width)
    _record("coco", "ok")


def _dataset():
    return coco_from_data(_valid_coco(), "ann.json", image_root=".")


DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "score": 0.5},
    {"image_id": 1, "bbox": [0, 0, 8, 6], "score": 1},
]


@FUZZ
@given(doc=st.one_of(JSON, json_mutation(DETECTIONS), json_mutation({"annotations": DETECTIONS})))
def test_detections(tmp_path_factory, doc):
    path = tmp_path_factory.getbasetemp() / "dets.json"
    path.write_text(json.dumps(doc))
    try:
        dets = load_detections(path, _dataset())
    except InputError:
        _record("detections", "error")
        return
    assert all(np.isfinite(d.bbox).all() and np.isfinite(d.score) for v in dets.values() for d in v)
    _record("detections", "ok")


BOXES = [{"bbox": [1, 1, 3, 3], "score": 0.5, "image_id": 1}, {"bbox": [0, 0, 8, 6]}]


@FUZZ
@given(doc=st.one_of(JSON, json_mutation(BOXES)), raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_boxes_files(tmp_path_factory, doc, raw):
    path = tmp_path_factory.getbasetemp() / "boxes.json"
    path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
    try:
        boxes = load_boxes(path, (H, W))
    except ValueError:
        _record("boxes", "error")
        return
    assert boxes.shape[1] == 4 and torch.isfinite(boxes).all() and len(boxes) >= 1
    _record("boxes", "ok")


PROMPT = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(str),
            st.integers(-5, 5).map(str),
            st.text(max_size=4),
        ),
        max_size=5,
    ).map(",".join),
)


@FUZZ
@given(text=PROMPT)
def test_prompt_strings(text):
    for parse, n in ((parse_point, 3), (parse_box, 4)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            _record("prompt", "error")
            continue
        assert len(value) == n and all(np.isfinite(v) for v in value)
        _record("prompt", "ok")


@pytest.mark.parametrize("text", ["1e400,2", "nan,1", "1,2,3,4,5", "0,0,0,0", "5,5,1,1", ",", ""])
def test_prompt_examples(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_point(text) if text.count(",") < 3 else parse_box(text)
