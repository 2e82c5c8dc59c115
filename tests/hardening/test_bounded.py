"""Bounded decoding: zip members, PNG chunks, images and size-like options are checked against a limit
the user can raise before anything large is allocated."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from leansam import limits
from leansam.io import InputError, _rgb_array, load_image
from leansam.transforms import ImageTransform, preprocess

from .conftest import EXAMPLE, REPO, assert_error, cli

TINY = REPO / "leansam" / "assets" / "leansam_tiny.pt"


def _segment(image, tmp_path, *extra):
    return ["segment", image, "--point", "5,5", "--out", tmp_path / "o", *extra]


def _zip_with_declared_size(path, declared: int) -> None:
    """A deflated zip member of 1 MiB of zeros whose headers declare ``declared`` bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("weights.pt", bytes(1 << 20))
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)  # local header: uncompressed size
    struct.pack_into("<I", data, central + 24, declared)  # central directory: uncompressed size
    path.write_bytes(bytes(data))


def test_zip_member_declaring_3_gib_is_refused_from_its_header(tmp_path, capsys):
    bomb = tmp_path / "bomb.pt"
    _zip_with_declared_size(bomb, 3 << 30)
    code, _, err = cli(_segment(EXAMPLE, tmp_path, "--checkpoint", bomb), capsys)
    line = assert_error(code, err, "zip member weights.pt (3.0 GiB from")
    assert "LEANSAM_MAX_INFLATE_RATIO" in line and not (tmp_path / "o").exists()


def test_real_deflate_bomb_is_refused(tmp_path, capsys):
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.pth", bytes(64 << 20))  # 64 MiB of zeros, ~64 KiB on disk
    code, _, err = cli(_segment(EXAMPLE, tmp_path, "--checkpoint", bomb), capsys)
    assert_error(code, err, "a zip bomb?")


def test_zip_sizes_follow_the_memory_limit(tmp_path, capsys, monkeypatch):
    wrapped = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(wrapped, "w", zipfile.ZIP_STORED) as z:
        z.write(TINY, "leansam_tiny.pt")  # a plain zip around a checkpoint (as EfficientSAM ships)
    code, _, err = cli(_segment(EXAMPLE, tmp_path, "--checkpoint", wrapped), capsys)
    assert code == 0, err
    monkeypatch.setenv("LEANSAM_MAX_MEMORY", "64K")
    code, _, err = cli(_segment(EXAMPLE, tmp_path / "b", "--checkpoint", wrapped), capsys)
    assert_error(code, err, "its zip members (declared sizes) needs about")
    assert "LEANSAM_MAX_MEMORY=1G" in err


def test_png_text_chunk_past_pillows_limit_is_an_error_line(tmp_path, capsys):
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), zip=True)
    path = tmp_path / "chunk.png"
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    code, _, err = cli(_segment(path, tmp_path), capsys)
    assert_error(code, err, "Decompressed")
    with pytest.raises(InputError):
        load_image(path)


def test_pillows_bomb_check_follows_max_pixels(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # Pillow alone would refuse 20000 pixels
    img = load_image(path, max_pixels=20000)
    assert img.shape == (100, 200, 3) and (img[0, 0] == (10, 20, 30)).all()
    assert Image.MAX_IMAGE_PIXELS == 5000  # restored
    with pytest.raises(InputError, match="above the limit of 19999"):
        load_image(path, max_pixels=19999)
    with pytest.raises(InputError, match="above the limit of 9000"):  # Pillow's own 2x check, our words
        load_image(path, max_pixels=9000)


def test_max_pixels_is_the_only_limit_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    code, _, err = cli(_segment(EXAMPLE, tmp_path, "--max-pixels", "200000000"), capsys)
    assert code == 0, err
    code, _, err = cli(_segment(EXAMPLE, tmp_path / "b", "--max-pixels", "1000"), capsys)
    assert_error(code, err, "above the limit of 1000")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--crop-n-layers", "40"], "needs more than 1 PiB"),
        (
            ["--points-per-side", "100000"],
            "points_per_side=100000, crop_n_layers=0, points_per_batch=64 needs about",
        ),
        (["--points-per-batch", "100000000"], "points_per_batch=100000000 needs about"),
        (["--strategy", "hierarchical", "--points-per-side", "60000"], "needs about"),
    ],
)
def test_size_like_options_refused_before_allocating(tmp_path, capsys, options, message):
    code, _, err = cli(["everything", EXAMPLE, *options, "--out", tmp_path / "o"], capsys)
    assert_error(code, err, message)
    assert not (tmp_path / "o").exists()


def test_size_limit_can_be_raised_and_lowered(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEANSAM_MAX_MEMORY", "100M")
    code, _, err = cli(["everything", EXAMPLE, "--points-per-side", "4", "--out", tmp_path / "o"], capsys)
    line = assert_error(code, err, "above the memory limit of 100.0 MiB (LEANSAM_MAX_MEMORY)")
    assert "LEANSAM_MAX_MEMORY=1G" in line
    monkeypatch.setenv("LEANSAM_MAX_MEMORY", "1G")
    code, _, err = cli(["everything", EXAMPLE, "--points-per-side", "4", "--out", tmp_path / "o"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("value", ["abc", "-5", "0", "12Q"])
def test_bad_limit_values_are_one_error_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("LEANSAM_MAX_MEMORY", value)
    code, _, err = cli(["everything", EXAMPLE, "--out", tmp_path / "o"], capsys)
    assert_error(code, err, f"LEANSAM_MAX_MEMORY={value!r} is not a positive integer")


def test_limit_values_with_suffixes(monkeypatch):
    for text, expected in (("16G", 16 << 30), ("512MiB", None), ("3k", 3 << 10), ("1000", 1000)):
        monkeypatch.setenv("LEANSAM_MAX_JSON_BYTES", text)
        if expected is None:
            with pytest.raises(InputError):
                limits.value(limits.JSON_BYTES)
        else:
            assert limits.value(limits.JSON_BYTES) == expected


def test_json_size_limit(tmp_path, capsys, monkeypatch):
    boxes = tmp_path / "boxes.json"
    boxes.write_text('[{"bbox": [1, 2, 30, 40]}]' + " " * 2000)
    monkeypatch.setenv("LEANSAM_MAX_JSON_BYTES", "1000")
    args = ["everything", EXAMPLE, "--strategy", "boxes", "--boxes", boxes, "--out", tmp_path / "o"]
    code, _, err = cli(args, capsys)
    assert_error(code, err, "boxes file")
    assert "LEANSAM_MAX_JSON_BYTES" in err


@pytest.mark.parametrize("interpolation", ["bilinear", "bilinear_antialias"])
@pytest.mark.parametrize("scale", [1.0, 1 / 255])
def test_large_images_resize_one_channel_at_a_time(monkeypatch, interpolation, scale):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 517, 3), dtype=np.uint8)
    t = ImageTransform(encoder_size=256, interpolation=interpolation, input_scale=scale)
    whole = preprocess(image, t)
    monkeypatch.setattr("leansam.transforms.LARGE_IMAGE_PIXELS", 0)
    banded = preprocess(image, t)
    assert banded.shape == whole.shape
    torch.testing.assert_close(banded, whole, rtol=0, atol=2e-6)


def test_rgb_conversion_in_bands_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (1030, 777, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    out = load_image(tmp_path / "a.png")
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, array)
    with Image.open(tmp_path / "a.png") as img:
        np.testing.assert_array_equal(_rgb_array(img.convert("RGB"), band_pixels=5000), array)  # 6-row bands


@pytest.mark.slow
def test_a_108_megapixel_jpeg_segments_with_max_pixels(tmp_path, capsys):
    """Pillow alone refuses this image as a decompression bomb; --max-pixels is the only limit."""
    from benchmarks.segment_memory import write_image

    image = tmp_path / "big.jpg"
    h, w = write_image(image, 108.0)
    assert h * w > Image.MAX_IMAGE_PIXELS
    box = f"{w // 4},{h // 4},{3 * w // 4},{3 * h // 4}"
    args = ["segment", image, "--box", box, "--out", tmp_path / "o", "--max-pixels", "200000000"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "o" / "mask_000.png").size == (w, h)
    code, _, err = cli([*args[:-1], "100000000"], capsys)
    assert_error(code, err, "above the limit of 100000000")


def test_overlay_in_bands_equals_one_full_size_blend():
    import cv2

    from leansam.visualize import draw_overlay, palette

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (400, 30_000, 3), dtype=np.uint8)  # 34-row bands: 12 of them
    y, x = np.mgrid[:400, :30_000]
    masks = [x < 12_000, (y > 200) & (x > 5_000), x > 25_000]  # overlapping blocks
    expected = image.astype(np.float32)
    for m, c in zip(masks, palette(3)):
        expected[m] = expected[m] * 0.5 + c.astype(np.float32) * 0.5
    expected = expected.round().clip(0, 255).astype(np.uint8)
    got = draw_overlay(image, masks, alpha=0.5)
    # Outlines are drawn on top (75 px thick here): compare everywhere else.
    outline = np.zeros(image.shape[:2], np.uint8)
    for m in masks:
        padded = np.pad(m, 1).astype(np.uint8)
        border = (padded != cv2.erode(padded, np.ones((3, 3), np.uint8)))[1:-1, 1:-1]
        outline |= border.astype(np.uint8)
    outline = cv2.dilate(outline, np.ones((155, 155), np.uint8)).astype(bool)
    assert (~outline).sum() > 100_000
    np.testing.assert_array_equal(got[~outline], expected[~outline])
