"""Appearance of the synthetic generator: colours, textures, backgrounds, shadows, camera effects."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .config import SynthConfig
from .shapes import _make_blob, _rasterize, _Shape, _soft_alpha


def _colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(0, 255, 3)
    if rng.random() < 0.3:  # desaturate towards grey
        c = c * 0.4 + c.mean() * 0.6
    return c.astype(np.float32)


def _near(rng: np.random.Generator, c: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(c + rng.normal(0, spread, 3), 0, 255).astype(np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with feature size ~``cell`` px (bicubic upsampling of a random grid)."""
    cell = max(cell, 1.5)
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(up[:h, :w], 0.0, 1.0)


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    return math.cos(angle) * x + math.sin(angle) * y


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float32, copy=False)
    return cv2.merge([t * float(c2[k] - c1[k]) + float(c1[k]) for k in range(3)])


def _fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Fractal value noise in [0, 1]: octaves of cell, cell/2, ... with halving amplitudes."""
    out, amp, total = np.zeros((h, w), np.float32), 1.0, 0.0
    while cell >= 1.5 and amp > 0.05:
        out += amp * _value_noise(rng, h, w, cell)
        total, amp, cell = total + amp, amp * 0.55, cell / 2
    return out / max(total, 1e-6) if total else _value_noise(rng, h, w, 2.0)


def _pink_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise with a 1/f^beta amplitude spectrum (beta in [0.8, 1.6], natural-image statistics), in [0, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(rng.standard_normal((h, w))) / f ** rng.uniform(0.8, 1.6)
    spec[0, 0] = 0.0
    t = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    lo, hi = np.percentile(t, (1, 99))
    return np.clip((t - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)


# numpy broadcasting over a trailing axis of size 3 is slow; these cv2-based helpers are 3-8x faster.


def _rep3(a: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 -> ``(H, W, 3)`` with the same value in each channel."""
    return cv2.merge([a, a, a])


def _lerp(dst: np.ndarray, src: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``dst + (src - dst) * a`` for ``(H, W, 3)`` images and an ``(H, W)`` weight in [0, 1]."""
    return cv2.blendLinear(dst, src, 1.0 - a, a)


def _pattern(
    rng: np.random.Generator, h: int, w: int, c1: np.ndarray, c2: np.ndarray, scale: float, kind: str
) -> np.ndarray:
    """An ``(h, w, 3)`` float32 fill of the given ``kind`` blending colours c1 -> c2."""
    ang = rng.uniform(0, math.pi)
    if kind == "flat":
        return cv2.merge([np.full((h, w), float(c), np.float32) for c in c1])
    if kind == "linear":
        u = _coords(h, w, ang)
        u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        return _mix(c1, c2, u)
    if kind == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x = np.arange(w, dtype=np.float32)[None, :] - cx
        y = np.arange(h, dtype=np.float32)[:, None] - cy
        d = np.sqrt(x * x + y * y)
        return _mix(c1, c2, np.clip(d / max(float(d.max()), 1.0), 0, 1))
    if kind == "stripes":
        period = max(3.0, scale * rng.uniform(0.1, 0.4))
        u = _coords(h, w, ang) * (2 * math.pi / period)
        t = 0.5 + 0.5 * np.sin(u)
        if rng.random() < 0.6:  # hard stripes
            t = (t > rng.uniform(0.3, 0.7)).astype(np.float32)
        return _mix(c1, c2, t)
    if kind == "checker":
        cell = max(3.0, scale * rng.uniform(0.08, 0.3))
        u = _coords(h, w, ang) / cell
        v = _coords(h, w, ang + math.pi / 2) / cell
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        return _mix(c1, c2, t)
    if kind == "fractal":
        return _mix(c1, c2, _fractal_noise(rng, h, w, max(4.0, scale * rng.uniform(0.2, 0.6))))
    if kind == "pink":
        return _mix(c1, c2, _pink_noise(rng, h, w))
    # noise
    t = _value_noise(rng, h, w, max(2.0, scale * rng.uniform(0.05, 0.3)))
    if rng.random() < 0.5:
        t = 0.6 * t + 0.4 * _value_noise(rng, h, w, 2.0)
    return _mix(c1, c2, t)


def _object_fill(
    rng: np.random.Generator,
    h: int,
    w: int,
    cfg: SynthConfig,
    scale: float,
    thin: bool,
    colour: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An ``(h, w, 3)`` float32 object fill and its base colour (``colour`` replaces the drawn one)."""
    c1 = _colour(rng)
    if colour is not None:
        c1 = colour
    if thin or rng.random() >= cfg.textured_fill_prob:
        kind = ("flat", "linear", "radial")[int(rng.integers(3))]
        c2 = _near(rng, c1, 35.0)
    else:
        kind = ("stripes", "checker", "noise", "noise")[int(rng.integers(4))]
        c2 = _colour(rng) if rng.random() < 0.35 else _near(rng, c1, 60.0)
        if cfg.fractal_prob > 0 and rng.random() < cfg.fractal_prob:
            kind = ("fractal", "pink")[int(rng.integers(2))]
    fill = _pattern(rng, h, w, c1, c2, scale, kind)
    shade = _coords(h, w, rng.uniform(0, 2 * math.pi))
    shade = (shade - shade.min()) / max(float(shade.max() - shade.min()), 1.0)
    lo, hi = rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.15)
    return cv2.multiply(fill, _rep3(lo + (hi - lo) * shade)), c1


def _background(rng: np.random.Generator, h: int, w: int, cfg: SynthConfig) -> np.ndarray:
    """Cluttered background: smooth gradient + colour blotches, fine grain, an optional hard-edged
    "stuff" region, soft texture patches and faint scribbles (none of which are objects)."""
    side = max(h, w)
    # smooth part at 1/4 resolution, upsampled
    lh, lw = h // 4 + 2, w // 4 + 2
    low = _pattern(
        rng, lh, lw, _colour(rng), _colour(rng), side / 4, ("linear", "radial")[int(rng.integers(2))]
    )
    t = _value_noise(rng, lh, lw, side / 4 / rng.uniform(2, 6))
    low += (_colour(rng) - low) * (rng.uniform(0.3, 0.7) * t)[..., None]
    bg = np.ascontiguousarray(cv2.resize(low, (lw * 4, lh * 4), interpolation=cv2.INTER_LINEAR)[:h, :w])
    # fine grain (luminance)
    grain = _value_noise(rng, h, w, rng.uniform(2, 12))
    bg = cv2.multiply(bg, _rep3(1.0 + rng.uniform(0.03, 0.2) * (grain - 0.5)))
    if rng.random() < 0.5:  # "stuff": a textured region with a straight hard boundary (table edge, wall...)
        ang = rng.uniform(0, 2 * math.pi)
        u = _coords(h, w, ang)
        cut = rng.uniform(float(u.min()), float(u.max()))
        a = np.clip(u - cut + 0.5, 0, 1)
        kind = ("stripes", "checker", "noise", "linear")[int(rng.integers(4))]
        c = _colour(rng)
        region = _pattern(rng, h, w, c, _near(rng, c, 30.0), side * 0.5, kind)
        bg = _lerp(bg, region, a)
    for _ in range(int(rng.integers(cfg.min_distractors, cfg.max_distractors + 1))):
        if rng.random() < 0.6:  # soft-edged texture patch: no crisp boundary, so not an object
            r = side * rng.uniform(0.05, 0.25)
            shape = _make_blob(rng, math.pi * r * r)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sigma = r * rng.uniform(0.15, 0.4)
            strength = rng.uniform(0.2, 0.55)
            c = _colour(rng)
            c2 = _near(rng, c, 50.0)
            kind = ("stripes", "checker", "noise", "noise", "flat")[int(rng.integers(5))]
            pad = int(3 * sigma)
        else:  # faint scribble
            pts = np.cumsum(rng.normal(0, side * 0.04, (int(rng.integers(3, 10)), 2)), axis=0)
            shape = _Shape("thin", "scribble", [("line", pts - pts.mean(0), 255, int(rng.integers(1, 3)))])
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sigma, strength, c, kind, pad = 0.0, rng.uniform(0.1, 0.3), _colour(rng), "flat", 2
            c2 = c
        bx0, by0, bx1, by1 = shape.bounds()
        x0, y0 = max(0, int(cx + bx0) - pad), max(0, int(cy + by0) - pad)
        x1, y1 = min(w, int(cx + bx1) + pad + 1), min(h, int(cy + by1) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        if sigma > 0:
            a = _soft_alpha(shape, x0 - cx, y0 - cy, y1 - y0, x1 - x0, sigma) * strength
        else:
            a = _rasterize(shape, x0 - cx, y0 - cy, y1 - y0, x1 - x0).astype(np.float32) * (strength / 255.0)
        fill = _pattern(rng, y1 - y0, x1 - x0, c, c2, side * 0.1, kind)
        bg[y0:y1, x0:x1] = _lerp(bg[y0:y1, x0:x1], fill, a)
    if cfg.fractal_prob > 0 and rng.random() < cfg.fractal_prob:  # natural-image texture over it all
        t = _pink_noise(rng, h, w) if rng.random() < 0.5 else _fractal_noise(rng, h, w, side / 4)
        bg = _lerp(
            bg, _mix(_colour(rng), _colour(rng), t), np.full((h, w), rng.uniform(0.3, 0.8), np.float32)
        )
    return bg


def _excess(c: np.ndarray) -> float:
    """How far a colour lies outside [0, 255] (L1)."""
    return float(np.clip(-c, 0, None).sum() + np.clip(c - 255, 0, None).sum())


def _shadow(
    rng: np.random.Generator, canvas: np.ndarray, shape: _Shape, cx: float, cy: float, scale: float
) -> None:
    """Darken the canvas under a blurred, offset copy of the shape (a soft drop shadow)."""
    h, w = canvas.shape[:2]
    sigma = max(1.0, scale * rng.uniform(0.03, 0.08))
    off = scale * rng.uniform(0.03, 0.1) * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])
    sx, sy = cx + off[0], cy + off[1]
    bx0, by0, bx1, by1 = shape.bounds()
    pad = int(3 * sigma) + 2
    x0, y0 = max(0, math.floor(sx + bx0) - pad), max(0, math.floor(sy + by0) - pad)
    x1, y1 = min(w, math.ceil(sx + bx1) + pad), min(h, math.ceil(sy + by1) + pad)
    strength = rng.uniform(0.25, 0.5)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    a = _soft_alpha(shape, x0 - sx, y0 - sy, y1 - y0, x1 - x0, sigma)
    canvas[y0:y1, x0:x1] = cv2.multiply(canvas[y0:y1, x0:x1], _rep3(1.0 - strength * a))


def _finish_image(rng: np.random.Generator, canvas: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    h, w = canvas.shape[:2]
    do_blur = rng.random() < cfg.blur_prob
    sigma_b = rng.uniform(0.4, 0.8)
    if do_blur:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma_b)
    std = rng.uniform(0.0, cfg.noise_std)
    if std > 0:
        # uniform luminance noise with standard deviation ``std`` (uniform draws are ~5x cheaper than normal)
        noise = rng.random((h, w), dtype=np.float32)
        noise -= 0.5
        noise *= std * math.sqrt(12.0)
        noise += 0.5  # rounding offset for the uint8 conversion below
        canvas = cv2.add(canvas, _rep3(noise))
    else:
        canvas += 0.5
    if cfg.lighting_prob > 0 and rng.random() < cfg.lighting_prob:
        canvas = cv2.multiply(canvas, _rep3(_illumination(rng, h, w)))
    np.clip(canvas, 0, 255, out=canvas)
    image = canvas.astype(np.uint8)
    if cfg.jpeg_prob > 0 and rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(30, 91))
        ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]) if ok else image
    return image


def _illumination(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth multiplicative light field in about [0.45, 1.35]: a gradient, blotches and a vignette."""
    u = _coords(h, w, rng.uniform(0, 2 * math.pi))
    u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    field = rng.uniform(0.55, 0.9) + rng.uniform(0.1, 0.45) * u
    field += rng.uniform(0.0, 0.25) * (_value_noise(rng, h, w, max(h, w) / rng.uniform(1.5, 4)) - 0.5)
    y = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / (w / 2)
    field *= 1.0 - rng.uniform(0.0, 0.35) * np.clip((x * x + y * y) / 2, 0, 1)
    return field.astype(np.float32)
