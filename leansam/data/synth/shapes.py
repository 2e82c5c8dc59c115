"""Shapes of the synthetic generator: local drawing ops, their makers, and rasterisation.

A shape is a list of drawing ops in local pixel coordinates centred near (0, 0):
``("fill", pts, value, 0)`` fills a polygon with 255 (solid) or 0 (hole); ``("line", pts, 255,
thickness)`` draws an open polyline. Ops are applied in order, so holes cut earlier fills.
A shape with ``parts`` is one object painted in several fills: its ops cover the whole object, and
each part (a shape in the same coordinates) is painted over it with a fill of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

_SUB = 16  # cv2 subpixel shift=4 -> 1/16 px


@dataclass
class _Shape:
    kind: str
    variant: str
    ops: list[tuple[str, np.ndarray, int, int]]
    parts: list[_Shape] = field(default_factory=list)

    def bounds(self) -> tuple[float, float, float, float]:
        x0 = y0 = math.inf
        x1 = y1 = -math.inf
        for _, p, _, t in self.ops:
            r = t / 2.0
            x0, y0 = min(x0, p[:, 0].min() - r), min(y0, p[:, 1].min() - r)
            x1, y1 = max(x1, p[:, 0].max() + r), max(y1, p[:, 1].max() + r)
        return x0, y0, x1, y1


def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ellipse_pts(a: float, b: float, n: int | None = None) -> np.ndarray:
    if n is None:
        n = int(np.clip(2.0 * math.pi * max(a, b) / 2.0, 16, 256))
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=1)


def _radial_pts(rng: np.random.Generator, n_harm: int, amp: float, n: int = 128) -> np.ndarray:
    """Smooth star-shaped closed curve r(t) = 1 + sum a_k cos(k t + phi_k), min radius >= 0.3."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 2 + n_harm):
        r += rng.uniform(0.0, amp) / k**0.7 * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    lo = r.min()
    if lo < 0.3:  # squash amplitudes so the curve stays star-shaped with a solid core
        r = 1.0 + (r - 1.0) * (0.7 / (1.0 - lo))
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _finish(pts: np.ndarray, rng: np.random.Generator, target: float, squash: float = 0.5) -> np.ndarray:
    """Random anisotropic squash + rotation, then scale so the polygon area is ``target``."""
    pts = pts * np.array([1.0, rng.uniform(squash, 1.0)])
    pts = _rot(pts, rng.uniform(0, 2 * math.pi))
    return pts * math.sqrt(target / max(_poly_area(pts), 1e-9))


def _make_ellipse(rng: np.random.Generator, area: float) -> _Shape:
    r = math.exp(rng.uniform(math.log(0.3), 0.0))
    a = math.sqrt(area / (math.pi * r))
    pts = _rot(_ellipse_pts(a, a * r), rng.uniform(0, 2 * math.pi))
    return _Shape("ellipse", "ellipse" if r < 0.9 else "circle", [("fill", pts, 255, 0)])


def _make_polygon(rng: np.random.Generator, area: float) -> _Shape:
    variant = ("convex", "rect", "concave", "star")[int(rng.choice(4, p=[0.35, 0.2, 0.3, 0.15]))]
    if variant == "convex":
        n = int(rng.integers(3, 9))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = np.ones(n)
    elif variant == "rect":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        r = np.ones(4)
    elif variant == "concave":
        n = int(rng.integers(5, 13))
        t = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * math.pi / n
        r = rng.uniform(0.3, 1.0, n)
    else:
        n = int(rng.integers(4, 9))
        t = np.arange(2 * n) * math.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.3, 0.6))
    pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    return _Shape("polygon", variant, [("fill", _finish(pts, rng, area, 0.35), 255, 0)])


def _make_blob(rng: np.random.Generator, area: float) -> _Shape:
    lobed = rng.random() < 0.4
    pts = _radial_pts(rng, int(rng.integers(3, 7)), 0.8 if lobed else 0.4)
    return _Shape("blob", "lobed" if lobed else "smooth", [("fill", _finish(pts, rng, area), 255, 0)])


def _arclen(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def _bezier(ctrl: np.ndarray, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = ctrl
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _make_thin(rng: np.random.Generator, area: float, max_len: float) -> _Shape:
    thick = int(rng.choice([2, 2, 3, 3, 4, 5, 6]))
    length = float(np.clip(area / thick, 12.0, max_len))
    variant = ("curve", "wiggle", "arc", "branch")[int(rng.choice(4, p=[0.35, 0.25, 0.15, 0.25]))]
    if variant == "curve":
        ctrl = np.array([[0, 0], [1 / 3, 0], [2 / 3, 0], [1, 0]], float)
        ctrl[1:3] += rng.uniform(-0.6, 0.6, (2, 2))
        lines = [_bezier(ctrl)]
    elif variant == "wiggle":
        n = 40
        heading = np.cumsum(rng.normal(0.0, 0.35, n))
        heading = np.convolve(heading, np.ones(5) / 5, mode="same")
        lines = [
            np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1), 0)])
        ]
    elif variant == "arc":
        span = rng.uniform(0.6, 1.6) * math.pi
        t = np.linspace(0, span, 48)
        lines = [np.stack([np.cos(t), rng.uniform(0.5, 1.0) * np.sin(t)], 1)]
    else:
        ctrl = np.array([[0, 0], [1 / 3, 0], [2 / 3, 0], [1, 0]], float)
        ctrl[1:3] += rng.uniform(-0.3, 0.3, (2, 2))
        main = _bezier(ctrl)
        lines = [main]
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(8, len(main) - 8))
            d = main[i + 1] - main[i - 1]
            ang = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
            blen = rng.uniform(0.15, 0.4)
            end = main[i] + blen * np.array([math.cos(ang), math.sin(ang)])
            mid = (main[i] + end) / 2 + rng.normal(0, 0.04, 2)
            lines.append(np.stack([main[i], mid, end]))
    total = sum(_arclen(p) for p in lines)
    center = np.concatenate(lines).mean(axis=0)
    ang = rng.uniform(0, 2 * math.pi)
    ops = [("line", _rot(p - center, ang) * (length / total), 255, thick) for p in lines]
    return _Shape("thin", variant, ops)


def _make_holed(rng: np.random.Generator, area: float, max_len: float) -> _Shape:
    variant = ("annulus", "frame", "holed_blob", "hoop")[int(rng.choice(4, p=[0.3, 0.2, 0.3, 0.2]))]
    ang = rng.uniform(0, 2 * math.pi)
    if variant == "annulus":
        f = rng.uniform(0.3, 0.8)
        r = rng.uniform(0.5, 1.0)
        a = math.sqrt(area / (math.pi * r * (1 - f * f)))
        off = rng.uniform(-0.5, 0.5, 2) * (1 - f) * np.array([a, a * r])
        outer, inner = _ellipse_pts(a, a * r), _ellipse_pts(a * f, a * r * f) + off
        ops = [("fill", _rot(outer, ang), 255, 0), ("fill", _rot(inner, ang), 0, 0)]
    elif variant == "frame":
        w, h = 1.0, rng.uniform(0.4, 1.0)
        m = rng.uniform(0.1, 0.3) * h
        unit = w * h - (w - 2 * m) * (h - 2 * m)
        s = math.sqrt(area / unit)
        outer = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        inner = outer * np.array([(w - 2 * m) / w, (h - 2 * m) / h])
        ops = [("fill", _rot(outer * s, ang), 255, 0), ("fill", _rot(inner * s, ang), 0, 0)]
    elif variant == "holed_blob":
        outer = _radial_pts(rng, int(rng.integers(2, 5)), 0.3)
        rmin = float(np.linalg.norm(outer, axis=1).min())
        nh = int(rng.integers(1, 4))
        hr = rng.uniform(0.12, 0.28) * rmin * (1.6 if nh == 1 else 1.0)
        base = rng.uniform(0, 2 * math.pi)
        holes = []
        for k in range(nh):
            d = 0.0 if nh == 1 else (rmin - hr) * 0.55
            c = d * np.array([math.cos(base + 2 * math.pi * k / nh), math.sin(base + 2 * math.pi * k / nh)])
            holes.append(_ellipse_pts(hr, hr * rng.uniform(0.6, 1.0), 24) + c)
        unit = _poly_area(outer) - sum(_poly_area(h) for h in holes)
        s = math.sqrt(area / unit)
        ops = [("fill", _rot(outer * s, ang), 255, 0)] + [("fill", _rot(h * s, ang), 0, 0) for h in holes]
    else:
        width = float(rng.integers(3, 7))
        r = rng.uniform(0.6, 1.0)
        a = float(np.clip(area / (2 * math.pi * width), 3 * width / r, max(max_len / 2, 3 * width / r)))
        inner = _ellipse_pts(a - width, a * r - width)
        ops = [("fill", _rot(_ellipse_pts(a, a * r), ang), 255, 0), ("fill", _rot(inner, ang), 0, 0)]
    return _Shape("holed", variant, ops)


#: Characters drawn as letter-like shapes (Hershey fonts, thick strokes; several have holes).
_LETTERS = "ABCDEFGHKLMNOPRSTUVWXYZ2345689&#%@"
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _make_letter(rng: np.random.Generator, area: float) -> _Shape:
    """A glyph's outline polygons (holes kept) from a thick Hershey rendering, scaled to ``area``."""
    ch = _LETTERS[int(rng.integers(len(_LETTERS)))]
    font, thick = _FONTS[int(rng.integers(len(_FONTS)))], int(rng.integers(6, 14))
    (tw, th), base = cv2.getTextSize(ch, font, 4.0, thick)
    canvas = np.zeros((th + base + 2 * thick + 8, tw + 2 * thick + 8), np.uint8)
    cv2.putText(canvas, ch, (thick + 4, th + thick + 4), font, 4.0, 255, thick, cv2.LINE_8)
    contours, hier = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    fills, holes = [], []
    for c, hrow in zip(contours, hier[0]):
        if len(c) >= 3:
            (holes if hrow[3] >= 0 else fills).append(c[:, 0].astype(float))
    ink = float(np.count_nonzero(canvas))
    centre = np.array(canvas.shape[::-1], float) / 2
    ang, squash = rng.uniform(-0.6, 0.6), rng.uniform(0.7, 1.0)
    k = math.sqrt(area / max(ink * squash, 1.0))
    tf = lambda p: _rot((p - centre) * np.array([1.0, squash]) * k, ang)  # noqa: E731
    ops = [("fill", tf(p), 255, 0) for p in fills] + [("fill", tf(p), 0, 0) for p in holes]
    return _Shape("letter", ch, ops)


def _make_parts(rng: np.random.Generator, area: float) -> _Shape:
    """A body with 1-3 differently painted parts (a window, a band, an attached head): one object.

    A click on a part is ambiguous (the part or the whole object); the annotation is the whole.
    """
    body_kind = ("ellipse", "rect", "blob")[int(rng.integers(3))]
    if body_kind == "ellipse":
        body = _make_ellipse(rng, area * 0.8)
    elif body_kind == "blob":
        body = _make_blob(rng, area * 0.8)
    else:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
        body = _Shape("polygon", "rect", [("fill", _finish(pts, rng, area * 0.8, 0.4), 255, 0)])
    x0, y0, x1, y1 = body.bounds()
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        style = int(rng.integers(3))
        if style == 0:  # window inside the body
            r = rng.uniform(0.15, 0.35) * min(rx, ry)
            c = np.array([cx, cy]) + rng.uniform(-0.4, 0.4, 2) * np.array([rx, ry])
            pts = _ellipse_pts(r, r * rng.uniform(0.5, 1.0), 32) + c
        elif style == 1:  # band across the body
            t = rng.uniform(-0.5, 0.5) * ry
            half = rng.uniform(0.08, 0.2) * ry
            pts = np.array(
                [[x0, cy + t - half], [x1, cy + t - half], [x1, cy + t + half], [x0, cy + t + half]]
            )
        else:  # head attached on the boundary
            a = rng.uniform(0, 2 * math.pi)
            r = rng.uniform(0.25, 0.45) * min(rx, ry)
            c = np.array([cx + rx * math.cos(a), cy + ry * math.sin(a)]) * 0.95
            pts = _ellipse_pts(r, r * rng.uniform(0.6, 1.0), 32) + c
        parts.append(_Shape("part", ("window", "band", "head")[style], [("fill", pts, 255, 0)]))
    # A band is clipped to the object when painted; windows and heads are part of its silhouette.
    ops = body.ops + [op for p in parts if p.variant != "band" for op in p.ops]
    return _Shape("parts", body_kind, ops, parts)


def _make_shape(rng: np.random.Generator, kind: str, area: float, max_len: float) -> _Shape:
    if kind in ("thin", "holed"):
        return (_make_thin if kind == "thin" else _make_holed)(rng, area, max_len)
    makers = {
        "ellipse": _make_ellipse,
        "polygon": _make_polygon,
        "blob": _make_blob,
        "letter": _make_letter,
        "parts": _make_parts,
    }
    return makers[kind](rng, area)


def _rasterize(shape: _Shape, x0: float, y0: float, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage (uint8 0..255) of a placed shape on the ``h x w`` window at (x0, y0)."""
    alpha = np.zeros((h, w), np.uint8)
    off = np.array([x0, y0], float)
    for op, pts, val, thick in shape.ops:
        p = np.round((pts - off) * _SUB).astype(np.int32)
        if op == "fill":
            cv2.fillPoly(alpha, [p], val, lineType=cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(alpha, [p], False, val, thickness=thick, lineType=cv2.LINE_AA, shift=4)
    return alpha


def _soft_alpha(shape: _Shape, x0: float, y0: float, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred coverage (float32 0..1) of a placed shape on an ``h x w`` window.

    Large blurs are computed at reduced resolution (factor ~sigma/2) and
    upsampled, which is visually identical for a soft edge and much cheaper.
    """
    k = max(1, int(sigma / 2))
    if k == 1:
        a = _rasterize(shape, x0, y0, h, w).astype(np.float32) / 255.0
        return cv2.GaussianBlur(a, (0, 0), sigma)
    small = _Shape(shape.kind, shape.variant, [(op, p / k, v, t) for op, p, v, t in shape.ops])
    sh, sw = h // k + 2, w // k + 2
    a = _rasterize(small, x0 / k, y0 / k, sh, sw).astype(np.float32) / 255.0
    a = cv2.GaussianBlur(a, (0, 0), sigma / k)
    return cv2.resize(a, (sw * k, sh * k), interpolation=cv2.INTER_LINEAR)[:h, :w]
