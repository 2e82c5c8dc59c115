"""Many prompts on ONE image: the two-way transformer's image tokens in factored form.

Every prompt starts from the same image tokens X (N x C: the image embedding plus the dense
no-mask embedding) and only drifts away from them through a few low-rank updates: an
image-to-token attention adds, to each image token, a mix of the prompt's T token values, and a
LayerNorm rescales each token and each channel. So after any number of decoder layers the image
tokens of prompt b are exactly::

    keys[b, n] = a[b, n] * (D * X[n]) + sum over blocks of  Z[b, n] @ F[b]

``D`` (C) is the product of the LayerNorm weights applied so far, ``a`` (B x N) a per-token scale,
and each block a low-rank term: an image-to-token attention contributes ``Z`` = its attention
weights (N x h*T) and ``F`` = its out-projected token values (h*T x C); each LayerNorm adds a
constant block (its weight, with coefficient -mean/std, and its bias, with coefficient 1).

Why: the reference decoder projects, normalises and upscales B copies of N x C image tokens. Here
every linear map of the keys splits into one prompt-independent N x C x out product per image
(kept in :class:`SharedImage`) plus per-prompt products whose inner dimension is h*T (~56)
instead of C (256), and the LayerNorm statistics come from the same pieces
(``E[x^2] = a^2 |DX|^2 + 2 a Z.(F DX) + Z (F F^T) Z^T``). It is the same arithmetic reassociated
(equal up to float rounding), used only when no gradient is recorded. docs/performance.md has the
operation counts and timings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import nn

from ..transformer import Attention
from .attention import softmax_short_rows

_T = TypeVar("_T")


class SharedImage:
    """The prompt-independent side of the factored decoder for one image.

    Args:
        image: 1 x C x h x w image embedding.
        dense: 1 x C x h x w dense prompt embedding, the same for every prompt (no mask input;
            usually one vector broadcast over the grid).
        pe: 1 x C x h x w dense positional encoding.

    Projections of the image tokens are computed on first use and kept (``memo``), so a caller that
    decodes the same image in several calls (blocks of prompts, the mask generator's point batches)
    pays for them once. It lives in the per-image :class:`~leansam.models.fast.ImageCache` that the
    predictor creates in ``set_image``; the decoder's weights must not change while it is in use.
    ``matches`` tells whether this object still describes the given inputs.
    """

    def __init__(self, image: torch.Tensor, dense: torch.Tensor, pe: torch.Tensor) -> None:
        self.image, self.dense, self.pe_raw = image, dense, pe
        self.x = (image + dense).flatten(2)[0].T.contiguous()  # N x C, token-major
        self.pe = pe.flatten(2)[0].T.contiguous()
        self._memo: dict[tuple, Any] = {}

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def matches(self, image: torch.Tensor, dense: torch.Tensor, pe: torch.Tensor) -> bool:
        """Same inputs (by value)."""
        return (
            _same(image, self.image)
            and _same(dense, self.dense)
            and (pe is self.pe_raw or _same(pe, self.pe_raw))
        )

    def memo(self, key: tuple, fn: Callable[[], _T]) -> _T:
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = fn()
        return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values. A tensor broadcast over its last two dims (stride 0, like the dense
    no-mask embedding) is compared through one element of each, not element by element."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dim() >= 2 and a.stride()[-2:] == (0, 0) and b.stride()[-2:] == (0, 0):
        return torch.equal(a[..., :1, :1], b[..., :1, :1])
    return torch.equal(a, b)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """N x (h*d) -> h x N x d, contiguous."""
    n, c = x.shape
    return x.view(n, h, c // h).transpose(0, 1).contiguous()


@dataclass(frozen=True)
class _Segment:
    """Columns ``start:stop`` of the coefficients Z (and rows of F) added by one image-to-token attention.

    Its rows are ``s * (W_o[:, head] @ v[head, t] + b_o / h)``: ``v`` B x h x T x d are the token
    values before the out-projection and ``s`` (C, None = ones) the product of the LayerNorm
    weights applied since stage ``born``. This structure gives the rows' dot products with the image
    tokens from one shared N x (h*d) product instead of a per-prompt N x C one. Rows outside every
    segment are constant rows (LayerNorm weights and biases), the same for every prompt.
    """

    start: int
    stop: int
    attn: Attention
    v: torch.Tensor
    s: torch.Tensor | None
    born: int


class FactoredKeys:
    """The image tokens of B prompts on one image, ``a * (D X) + Z @ F`` (see the module docstring).

    Z (B x N x R) and F (B x R x C) hold every low-rank term side by side, so each operation is one
    matrix product over all of them. Built by :meth:`start`; the decoder layers call :meth:`attend`
    (tokens attend to the image), :meth:`add_attention` (the image attends to the tokens) and
    :meth:`layer_norm`; the mask upscaling calls :meth:`linear` (a per-token linear map, the first
    transposed convolution). Index with ``keys[rows]`` to keep a subset of the prompts.
    """

    def __init__(
        self,
        shared: SharedImage,
        batch: int,
        a: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        f: torch.Tensor | None = None,
        segments: tuple[_Segment, ...] = (),
        d: torch.Tensor | None = None,
        stage: int = 0,
    ) -> None:
        self.shared, self.batch = shared, batch
        self.a = a  # B x N, None = all ones (no LayerNorm yet)
        self.z, self.f = z, f  # B x N x R, B x R x C; None while R = 0
        self.segments = segments
        self.d = d  # C, None = all ones
        self.stage = stage  # LayerNorms applied so far: with the module ids, the key of shared products

    @classmethod
    def start(cls, shared: SharedImage, batch: int) -> FactoredKeys:
        """B prompts that have not changed the image tokens yet."""
        return cls(shared, batch)

    def __len__(self) -> int:
        return self.batch

    @staticmethod
    def cat(parts: list[FactoredKeys]) -> FactoredKeys:
        """Prompts of several :class:`FactoredKeys` of the same image and decoder stage, in order."""
        if len(parts) == 1:
            return parts[0]
        p0 = parts[0]
        cat = lambda ts: torch.cat(ts) if ts[0] is not None else None  # noqa: E731
        segments = tuple(
            replace(g, v=torch.cat([p.segments[i].v for p in parts])) for i, g in enumerate(p0.segments)
        )
        return FactoredKeys(
            p0.shared,
            sum(p.batch for p in parts),
            cat([p.a for p in parts]),
            cat([p.z for p in parts]),
            cat([p.f for p in parts]),
            segments,
            p0.d,
            p0.stage,
        )

    def __getitem__(self, rows: torch.Tensor | slice) -> FactoredKeys:
        batch = int(torch.arange(self.batch)[rows].numel())
        take = lambda t: t[rows] if t is not None else None  # noqa: E731
        segments = tuple(replace(g, v=g.v[rows]) for g in self.segments)
        return FactoredKeys(
            self.shared, batch, take(self.a), take(self.z), take(self.f), segments, self.d, self.stage
        )

    # --- shared (per image) products -------------------------------------------------------------
    def _dx(self) -> torch.Tensor:
        """D * X, N x C."""
        if self.d is None:
            return self.shared.x
        return self.shared.memo(("dx", self.stage), lambda: self.shared.x * self.d)

    def _proj(self, lin: nn.Linear, h: int, what: str) -> torch.Tensor:
        """h x N x d heads of ``(D X) W^T`` (``x``), ``PE W^T + b`` (``pe``) or ``(X + PE) W^T + b`` (``xpe``)."""
        s = self.shared
        if what == "pe":
            return s.memo(("pe", id(lin)), lambda: _heads(torch.addmm(lin.bias, s.pe, lin.weight.T), h))
        if what == "xpe":  # only before the first LayerNorm (D = 1)
            return s.memo(
                ("xpe", id(lin)), lambda: _heads(torch.addmm(lin.bias, s.x + s.pe, lin.weight.T), h)
            )
        return s.memo(("x", id(lin), self.stage), lambda: _heads(self._dx() @ lin.weight.T, h))

    def _times_a(self, x: torch.Tensor, batch_dim: int, token_dim: int) -> torch.Tensor:
        """``x * a`` into a new contiguous tensor; ``x`` (any strides) has the prompts on ``batch_dim``
        and the image tokens on ``token_dim``. Writing contiguously here turns the layout change that
        the next matrix product needs into part of a pass that has to happen anyway."""
        out = x.new_empty(x.shape)
        if self.a is None:
            return out.copy_(x)
        shape = [1] * x.dim()
        shape[batch_dim], shape[token_dim] = self.batch, self.shared.n
        return torch.mul(x, self.a.view(shape), out=out)

    def _f_heads(self, lin: nn.Linear, h: int) -> torch.Tensor:
        """F W^T split into heads: B x R x h x d."""
        return (self.f @ lin.weight.T).view(self.batch, -1, h, lin.out_features // h)

    # --- decoder operations ----------------------------------------------------------------------
    def attend(self, attn: Attention, q: torch.Tensor) -> torch.Tensor:
        """Tokens attend to the image: ``attn(q, keys + pe, keys)``. q B x T x C -> B x T x C."""
        b, t, _ = q.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        n = self.shared.n
        qh = (attn.q_proj(q) * d**-0.5).view(b, t, h, d)
        qm = qh.permute(2, 0, 1, 3).reshape(h, b * t, d)
        if self.a is None:  # before any LayerNorm there is no low-rank term either: stay head-major
            p = torch.bmm(qm, self._proj(attn.k_proj, h, "xpe").transpose(1, 2)).softmax(dim=-1)
            mixed = torch.bmm(p, self._proj(attn.v_proj, h, "x")).view(h, b, t, d).permute(1, 2, 0, 3)
            return attn.out_proj((mixed + attn.v_proj.bias.view(h, d)).reshape(b, t, h * d))
        # Scores B x h x T x N: a * (q . (D X) W_k) + q . (PE W_k + b_k) + (q . F W_k) Z^T.
        sx = torch.bmm(qm, self._proj(attn.k_proj, h, "x").transpose(1, 2)).view(h, b, t, n)
        s = self._times_a(sx.permute(1, 0, 2, 3), 0, 3)
        sp = torch.bmm(qm, self._proj(attn.k_proj, h, "pe").transpose(1, 2))
        s.add_(sp.view(h, b, t, n).permute(1, 0, 2, 3))
        if self.z is not None:
            qf = torch.einsum("bthd,bkhd->bhtk", qh, self._f_heads(attn.k_proj, h))
            s.view(b, h * t, n).baddbmm_(qf.reshape(b, h * t, -1), self.z.transpose(1, 2))
        p = s.softmax(dim=-1)
        # Values: sum_n p_n (a_n (D X_n) W_v + Z_n F W_v) + b_v.
        pa = self._times_a(p.permute(1, 0, 2, 3), 1, 3)  # h x B x T x N
        mixed = torch.bmm(pa.view(h, b * t, n), self._proj(attn.v_proj, h, "x")).view(h, b, t, d)
        mixed = mixed.permute(1, 2, 0, 3) + attn.v_proj.bias.view(h, d)  # B x T x h x d
        if self.z is not None:
            pz = torch.bmm(p.view(b, h * t, n), self.z).view(b, h, t, -1)
            mixed = mixed + torch.einsum("bhtk,bkhd->bthd", pz, self._f_heads(attn.v_proj, h))
        return attn.out_proj(mixed.reshape(b, t, h * d))

    def add_attention(self, attn: Attention, k: torch.Tensor, v: torch.Tensor) -> FactoredKeys:
        """The image attends to the tokens: keys + ``attn(keys + pe, k, v)``. k, v: B x T x C."""
        b, t, c = k.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        n = self.shared.n
        kt = (attn.k_proj(k) * d**-0.5).view(b, t, h, d)
        ktm = kt.permute(2, 3, 0, 1).reshape(h, d, b * t)
        # Scores B x N x h x T.
        if self.a is None:
            r = torch.bmm(self._proj(attn.q_proj, h, "xpe"), ktm).view(h, n, b, t)
            s = self._times_a(r.permute(2, 1, 0, 3), 0, 1)
        else:
            r = torch.bmm(self._proj(attn.q_proj, h, "x"), ktm).view(h, n, b, t)
            s = self._times_a(r.permute(2, 1, 0, 3), 0, 1)
            s.add_(torch.bmm(self._proj(attn.q_proj, h, "pe"), ktm).view(h, n, b, t).permute(2, 1, 0, 3))
        if self.z is not None:
            m = torch.einsum("bkhd,bthd->bkht", self._f_heads(attn.q_proj, h), kt)
            s.view(b, n, h * t).baddbmm_(self.z, m.reshape(b, -1, h * t))
        p = softmax_short_rows(s, inplace=True).view(b, n, h * t)
        vt = attn.v_proj(v).view(b, t, h, d)
        w_out = attn.out_proj.weight.view(c, h, d)
        # Each head's attention rows sum to 1, so b_o / h on every row adds the output bias once.
        rows = torch.einsum("bthd,chd->bhtc", vt, w_out).reshape(b, h * t, c) + attn.out_proj.bias / h
        r0 = 0 if self.z is None else self.z.shape[-1]
        seg = _Segment(r0, r0 + h * t, attn, vt.permute(0, 2, 1, 3), None, self.stage)
        z = p if self.z is None else torch.cat([self.z, p], dim=-1)
        f = rows if self.f is None else torch.cat([self.f, rows], dim=1)
        a = self.a if self.a is not None else self.shared.x.new_ones(b, n)
        return FactoredKeys(self.shared, b, a, z, f, (*self.segments, seg), self.d, self.stage)

    def _segment_image_products(self, g: _Segment) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared products of a segment's rows with the image: ``(D s X) W_o`` (h x N x d), ``(D s X) b_o / h`` (N)."""
        attn = g.attn
        h = attn.num_heads

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            ds = self._dx() * g.s if g.s is not None else self._dx()
            return _heads(ds @ attn.out_proj.weight, h), ds @ (attn.out_proj.bias / h)

        return self.shared.memo(("xo", id(attn), g.born, self.stage), compute)

    def _cross(self) -> torch.Tensor:
        """sum_r Z[b, n, r] * (F[b, r] . D X[n]): B x N."""
        dx = self._dx()
        b, n = self.batch, self.shared.n
        cross = torch.zeros(b, n, dtype=dx.dtype, device=dx.device)
        covered = torch.zeros(self.z.shape[-1], dtype=torch.bool)
        for g in self.segments:
            covered[g.start : g.stop] = True
            h, t, d = g.v.shape[1:]
            xo, xbo = self._segment_image_products(g)
            r = torch.bmm(xo, g.v.permute(1, 3, 0, 2).reshape(h, d, b * t)).view(h, n, b, t)
            z = self.z[..., g.start : g.stop]
            cross += (z.view(b, n, h, t) * r.permute(2, 1, 0, 3)).sum((-1, -2))
            cross += z.sum(-1) * xbo
        const = (~covered).nonzero()[:, 0]
        if len(const):  # constant rows: the same for every prompt
            cross += (self.z[..., const] * (dx @ self.f[0, const].T)).sum(-1)
        return cross

    def layer_norm(self, ln: nn.LayerNorm) -> FactoredKeys:
        """``ln(keys)`` over the channels of every image token."""
        b, n, c = self.batch, self.shared.n, self.shared.x.shape[1]
        dx = self._dx()
        mx = self.shared.memo(("mx", self.stage), lambda: dx.mean(-1))
        nx = self.shared.memo(("nx", self.stage), lambda: dx.square().sum(-1))
        a = self.a if self.a is not None else self.shared.x.new_ones(b, n)
        mu = a * mx
        ex2 = a * a * nx
        if self.z is not None:
            z, f = self.z, self.f
            mu += torch.bmm(z, f.mean(-1, keepdim=True))[..., 0]
            ex2 += 2 * a * self._cross()
            zg = torch.bmm(z, torch.bmm(f, f.transpose(1, 2)))  # Z (F F^T)
            ex2 += (zg * z).sum(-1)
        rstd = torch.rsqrt((ex2 / c - mu * mu).clamp_(min=0) + ln.eps)
        gamma = ln.weight if ln.weight is not None else torch.ones_like(mx[:1].expand(c))
        # (x - mu) / std * gamma + beta: every term scaled by rstd (per token) and gamma (per channel),
        # plus the constant rows gamma (coefficient -mu * rstd) and beta (coefficient 1).
        consts = [gamma] + ([ln.bias] if ln.bias is not None else [])
        r = 0 if self.z is None else self.z.shape[-1]
        z = mu.new_empty(b, n, r + len(consts))
        if self.z is not None:
            torch.mul(self.z, rstd[..., None], out=z[..., :r])
        torch.mul(mu, rstd, out=z[..., r]).neg_()
        if ln.bias is not None:
            z[..., r + 1] = 1
        new_rows = torch.stack(consts)[None].expand(b, -1, -1)
        f = new_rows if self.f is None else torch.cat([self.f * gamma, new_rows], dim=1)
        segments = tuple(replace(g, s=g.s * gamma if g.s is not None else gamma) for g in self.segments)
        d = self.d * gamma if self.d is not None else gamma
        return FactoredKeys(self.shared, b, a * rstd, z, f, segments, d, self.stage + 1)

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None, key: object) -> torch.Tensor:
        """``keys @ weight + bias`` for weight C x out: B x N x out. ``key`` names the weight in the cache."""
        xw = self.shared.memo(("lin", key, self.stage), lambda: self._dx() @ weight)
        b, n, out_dim = self.batch, self.shared.n, xw.shape[1]
        if self.z is None:
            out = self._times_a(xw[None].expand(b, -1, -1), 0, 1)
            return out if bias is None else out.add_(bias)
        start = bias.expand(b, n, out_dim) if bias is not None else xw.new_zeros(b, n, out_dim)
        out = torch.baddbmm(start, self.z, self.f @ weight)
        return out.addcmul_(self.a[..., None], xw)


class FactoredBatch:
    """Consecutive blocks of prompts decoded separately, seen as one batch without copying them.

    The decoder runs the factored transformer a few prompts at a time (their coefficients then stay
    in cache); indexing picks prompts out of the blocks they live in: ``batch[i : i + 1]`` (the
    upscaling, one prompt at a time) touches one block, ``batch[rows]`` concatenates only the rows
    asked for (the mask generator keeps the prompts that pass its score filter).
    """

    def __init__(self, parts: list[FactoredKeys]) -> None:
        self.parts = parts
        self.starts = [0]
        for p in parts:
            self.starts.append(self.starts[-1] + len(p))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, rows: torch.Tensor | slice) -> FactoredKeys:
        idx = torch.arange(len(self))[rows].reshape(-1)
        if len(idx) == 0:
            return self.parts[0][idx]
        order = torch.argsort(idx, stable=True)
        ordered = idx[order]
        pieces = []
        for part, s0, s1 in zip(self.parts, self.starts, self.starts[1:]):
            sel = ordered[(ordered >= s0) & (ordered < s1)] - s0
            if len(sel):
                contiguous = int(sel[-1] - sel[0]) + 1 == len(sel)
                pieces.append(part[int(sel[0]) : int(sel[-1]) + 1] if contiguous else part[sel])
        out = FactoredKeys.cat(pieces)
        if bool((order == torch.arange(len(order))).all()):
            return out
        return out[torch.argsort(order)]
