"""Image loading: every common pixel format handled, bad files refused with one clear message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leansam.io import InputError, load_image
from leansam.outputs import OutputDir


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    img = np.zeros((30, 40, 3), np.uint8)
    img[..., 0] = np.arange(40)[None] * 6
    img[..., 1] = np.arange(30)[:, None] * 8
    img[..., 2] = rng.integers(0, 255, (30, 40))
    return img


def test_rgb_png_round_trip(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    assert np.array_equal(out, rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb):
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (30, 40, 3)
    assert np.array_equal(out[..., 0], rgb[..., 0]) and np.array_equal(out[..., 1], out[..., 2])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image(tmp_path / "d.png")
    expected = np.round(arr / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected)
    assert out.max() > 200  # a naive convert("L") would clip everything above 255 to white


def test_rgba_composited_over_white(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full((30, 40), 255, np.uint8)])
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    assert (out[:10] == 255).all()
    assert np.array_equal(out[10:], rgb[10:])


def test_palette_image(tmp_path, rgb):
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 40


def test_cmyk_jpeg(tmp_path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (30, 40, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 20


def test_exif_rotation_is_applied(tmp_path, rgb):
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (40, 30, 3)  # displayed orientation
    # Compare the smooth gradient channels (JPEG wrecks the random one).
    right = np.abs(out[..., :2].astype(int) - np.rot90(rgb, k=-1)[..., :2].astype(int)).mean()
    wrong = np.abs(out[..., :2].astype(int) - np.rot90(rgb, k=1)[..., :2].astype(int)).mean()
    assert right < 15 and wrong > 5 * right


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_not_an_image(tmp_path):
    (tmp_path / "x.jpg").write_text("hello, I am text")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "x.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, rgb, fmt):
    big = np.tile(rgb, (8, 8, 1))
    p = tmp_path / f"t.{fmt.lower()}"
    Image.fromarray(big).save(p, format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated|corrupt|cannot read"):
        load_image(p)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    Image.new("L", (5000, 5000)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="above the limit"):
        load_image(tmp_path / "big.png", max_pixels=1_000_000)


def test_zero_size_image(tmp_path):
    # A PNG header declaring width 0: PIL refuses it at open or load; either way it is InputError.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (tmp_path / "z.png").write_bytes(png)
    with pytest.raises(InputError):
        load_image(tmp_path / "z.png")


def test_output_dir_is_all_or_nothing(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("user file")
    with pytest.raises(RuntimeError), OutputDir(dest) as out:
        out.path("mask_000.png").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]  # untouched
    assert not [p for p in dest.iterdir() if p.name.startswith(".leansam-stage")]  # no temp left behind
    with OutputDir(dest) as out:
        for name in ("mask_000.png", "mask_009.png", "masks.json"):
            out.path(name).write_text("first run")
    with OutputDir(dest) as out:  # a run writing fewer masks removes leansam's stale mask_009.png
        out.path("mask_000.png").write_text("new")
        out.path("masks.json").write_text("{}")
    names = sorted(p.name for p in dest.iterdir())
    assert names == [".leansam-outputs.json", "mask_000.png", "masks.json", "mine.txt"]
    assert (dest / "mine.txt").read_text() == "user file"
