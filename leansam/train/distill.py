"""Distillation of a teacher SAM into a student: ``leansam distill --mode MODE``.

Modes (see docs/training.md for what each paper did and what is simplified here):

``encoder`` (MobileSAM)
    MSE between student and teacher image embeddings (plus, for decoders that read the encoder's
    skip features, SAM 2 style, the MSE of those). Only the student encoder trains.
    Teacher embeddings are cached on disk in fp16, keyed by the teacher (name + checkpoint
    hash) and the sha256 of the exact encoder input bytes, so later epochs skip the teacher.
``full`` (TinySAM)
    Embedding MSE + L1 on the decoder's output tokens + L1 on all mask logits, with online
    hard prompt sampling: ``candidate_factor`` x ``prompts_per_image`` candidate prompts are
    decoded by both models without gradients and the ``prompts_per_image`` on which student
    and teacher disagree most (mean |logit difference|) are trained on.
``prompt-in-the-loop`` (EdgeSAM)
    Box / click prompts are decoded by both; the student is trained to reproduce the teacher's
    binarised masks (20 x focal + dice); then a click is drawn from the region where they
    disagree (label = the teacher's mask there) and the next round runs with it; the losses
    of all ``rounds`` are summed (plus the embedding MSE).
``sami`` (EfficientSAM)
    Masked-image pretraining: 75% of the student's grid cells are blanked in the input, a
    linear projection maps the student features to the teacher's width and a small
    cross-attention decoder (queries = mask token + position at masked cells, keys/values =
    visible cells) reconstructs the teacher's embedding there; MSE over all cells. The
    cross-attention decoder is discarded; ``model.pt`` holds the student only.

Students: a registry name (its architecture; e.g. ``leansam_tiny``, ``mobile_sam``), or an
encoder config ``resnet:PRESET`` / ``resnet:{json}``, ``tiny_vit:{json}``, ``repvit:{json}``,
``tiny_fpn:{json}`` (:mod:`leansam.models.resnet`, :class:`~leansam.models.tiny_vit.TinyViTConfig`,
:class:`~leansam.models.repvit.RepViTConfig`, :class:`~leansam.models.tiny_fpn.TinyFPNConfig`) assembled with copies of the teacher's prompt
encoder and mask decoder and the teacher's pre-processing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import sha256_file
from ..io import InputError
from ..models.resnet import PRESETS, ResNetConfig, ResNetEncoder
from ..models.sam import ImageFeatures, Sam
from ..validate import dataclass_from_dict, parse_json
from .data import Prepared, open_source, prepare, sample_indices
from .losses import dice_loss, focal_loss
from .prompts import correction_points
from .runner import RunConfig, fit, save_atomic, setup, step_seed
from .train import decode_all, initial_prompts, load_spec, set_trainable

MODES = ("encoder", "full", "prompt-in-the-loop", "sami")


@dataclasses.dataclass
class DistillConfig(RunConfig):
    """``leansam distill`` options (plus :class:`RunConfig`'s).

    Attributes:
        teacher: ``NAME`` (official weights) or ``NAME:CKPT``.
        student: architecture spec (module docstring).
        student_init: checkpoint to start the student from (e.g. the output of an earlier mode).
        mode: one of :data:`MODES`.
        data: training images (``synth:N[:SEED]``, COCO ``.json``, directory).
        cache_dir: teacher-embedding cache (default ``<out>/../teacher_cache``); "" disables it.
        copy_decoder: initialise the student's prompt encoder / mask decoder from the teacher's.
        train_decoder: also train the student's mask decoder (``full`` / ``prompt-in-the-loop``).
        decoder_lr_scale: the decoder's learning rate as a fraction of ``lr`` (it starts as the
            teacher's copy and only needs gentle tuning).
        prompts_per_image: prompts trained per image and step (decoder modes).
        box_fraction: share of box prompts among them (the rest are single clicks).
        candidate_factor: ``full``: candidates decoded per trained prompt (hard prompt sampling).
        rounds: ``prompt-in-the-loop``: prompt rounds per step.
        loss_res: resolution of mask losses (prompt frame resampled to it).
        embed_weight / token_weight / mask_weight: loss weights.
        mask_ratio: ``sami``: fraction of grid cells masked.
        sami_dim / sami_depth: width and depth of the SAMI cross-attention decoder.
        flip: random horizontal flips.
    """

    teacher: str = "leansam_tiny_teacher"
    student: str = "leansam_nano"
    student_init: str = ""
    mode: str = "encoder"
    data: str = "synth:4000:0"
    cache_dir: str | None = None
    copy_decoder: bool = True
    train_decoder: bool = True
    decoder_lr_scale: float = 0.1
    prompts_per_image: int = 8
    box_fraction: float = 0.5
    candidate_factor: int = 2
    rounds: int = 2
    loss_res: int = 256
    embed_weight: float = 1.0
    token_weight: float = 1.0
    mask_weight: float = 1.0
    mask_ratio: float = 0.75
    sami_dim: int = 128
    sami_depth: int = 1
    flip: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.prompts_per_image <= 0 or self.candidate_factor < 1 or self.rounds < 1 or self.loss_res <= 0:
            raise ValueError("prompts_per_image, candidate_factor, rounds and loss_res must be >= 1")
        if not 0 <= self.box_fraction <= 1:
            raise ValueError("box_fraction must be in [0, 1]")
        if not 0 < self.mask_ratio < 1:
            raise ValueError("mask_ratio must be in (0, 1)")
        if self.decoder_lr_scale <= 0:
            raise ValueError("decoder_lr_scale must be > 0")
        if min(self.embed_weight, self.token_weight, self.mask_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.sami_dim <= 0 or self.sami_depth <= 0:
            raise ValueError("sami_dim and sami_depth must be positive")


# --- models -----------------------------------------------------------------------------------
def embed_shape(model: Sam) -> tuple[int, int, int]:
    """(C, h, w) of the image embedding of ``model`` (from its decoder and prompt encoder)."""
    h, w = model.prompt_encoder.image_embedding_size
    return model.mask_decoder.transformer_dim, h, w


def build_student(spec: str, teacher: Sam, copy_decoder: bool = True) -> Sam:
    """A student from ``spec`` (see module docstring), with the teacher's decoder copied if asked."""
    family, sep, arg = spec.partition(":")
    c, h, _ = embed_shape(teacher)
    stride = teacher.transform.encoder_size // h
    if sep and family in ("resnet", "tiny_vit", "repvit", "tiny_fpn"):
        if family == "tiny_fpn":
            from ..models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder

            encoder: nn.Module = TinyFPNEncoder(_config(TinyFPNConfig, arg, spec, out_chans=c, grid=h))
            encoder.init_pos_embed(teacher.prompt_encoder.get_dense_pe())
        elif family == "resnet":
            if arg in PRESETS:
                rc = dataclasses.replace(PRESETS[arg], out_chans=c, out_stride=stride)
            else:
                rc = _config(ResNetConfig, arg, spec, out_chans=c, out_stride=stride)
            encoder = ResNetEncoder(rc)
        elif family == "tiny_vit":
            from ..models.tiny_vit import TinyViT, TinyViTConfig

            encoder = TinyViT(_config(TinyViTConfig, arg, spec, out_chans=c))
        else:
            from ..models.repvit import RepViTConfig, RepViTImageEncoder

            encoder = RepViTImageEncoder(_config(RepViTConfig, arg, spec, out_channels=c))
        if teacher.mask_decoder.use_high_res_features and family != "tiny_fpn":
            raise InputError(
                f"the teacher's decoder upscales with the encoder's skip features, which a {family} student "
                "does not give; use a tiny_fpn:{...} student or a registry model"
            )
        student = Sam(
            encoder,
            copy.deepcopy(teacher.prompt_encoder),
            copy.deepcopy(teacher.mask_decoder),
            teacher.transform,
            teacher.prompt_style,
            name=spec,
        )
    else:
        try:
            student = load_spec(spec)
        except KeyError as e:
            raise InputError(str(e)) from e
        if copy_decoder:
            try:
                student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict())
                student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict())
            except RuntimeError as e:
                raise InputError(f"student {spec!r} and the teacher have different decoders: {e}") from None
    if embed_shape(student) != embed_shape(teacher):
        raise InputError(
            f"student embedding {embed_shape(student)} differs from the teacher's {embed_shape(teacher)}"
        )
    if student.transform.prompt_frame != teacher.transform.prompt_frame:
        raise InputError("student and teacher must share the prompt frame")
    return student


def _config(cls: type, text: str, spec: str, **fixed: Any) -> Any:
    """The ``cls`` dataclass a ``--student FAMILY:{json}`` gives, checked key by key; ``fixed``
    are set from the teacher."""
    source = f"--student {spec.partition(':')[0]}"
    return dataclass_from_dict(cls, parse_json(text, source), source, fixed=fixed)


# --- teacher embedding cache --------------------------------------------------------------------
def teacher_weights_id(spec: str) -> str:
    """An id that changes whenever the weights ``spec`` loads change: the spec plus the sha256 of
    its checkpoint file(s), or of the registry's pinned file for a bare registry name."""
    if Path(spec).exists():
        files = (
            sorted(p for p in Path(spec).rglob("*") if p.is_file()) if Path(spec).is_dir() else [Path(spec)]
        )
        return spec + ":" + ",".join(sha256_file(f) for f in files)
    name, _, ckpt = spec.partition(":")
    if ckpt:
        return name + ":" + sha256_file(ckpt)
    from ..registry import get_model_info

    try:
        weights = get_model_info(name).weights
    except KeyError:  # UnknownModelError
        weights = None
    return name + ":" + ((weights.sha256 if weights else None) or "official")


class TeacherCache:
    """Teacher embeddings on disk (fp16), keyed by teacher id and the encoder input's sha256."""

    def __init__(self, teacher: Sam, teacher_spec: str, root: str | None) -> None:
        self.teacher = teacher
        self.tid = hashlib.sha256(teacher_weights_id(teacher_spec).encode()).hexdigest()[:16]
        self.dir = Path(root) / self.tid if root else None
        self.hits = self.misses = 0

    def key(self, x: torch.Tensor) -> str:
        """sha256 of the encoder input bytes (fp32, C-contiguous) and shape."""
        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()

    @torch.no_grad()
    def embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S teacher inputs -> B x C x h x w teacher embeddings (fp32)."""
        out: list[torch.Tensor | None] = [None] * len(x)
        todo = []
        for i in range(len(x)):
            path = self.dir / f"{self.key(x[i])}.pt" if self.dir else None
            if path is not None and path.is_file():
                out[i] = torch.load(path, weights_only=True).float().to(x.device)
                self.hits += 1
            else:
                todo.append((i, path))
        if todo:
            self.misses += len(todo)
            self.teacher.eval()
            emb = self.teacher.encode_image(x[[i for i, _ in todo]]).embed.float()
            for (i, path), e in zip(todo, emb):
                out[i] = e
                if path is not None:
                    save_atomic(e.half().cpu().clone(), path)
        return torch.stack(out)  # type: ignore[arg-type]


# --- SAMI head ---------------------------------------------------------------------------------
class SamiHead(nn.Module):
    """EfficientSAM's masked-feature reconstruction head (discarded after pretraining).

    A linear projection maps student features (C_s) to ``dim``; masked cells are queries
    (learned mask token + position), visible cells keys/values (+ position); ``depth``
    cross-attention + MLP layers; a linear layer maps every cell to the teacher width C_t.
    When C_s == dim == C_t both linear maps start as the identity, so the student's own
    embedding is pulled towards the teacher's at visible cells.
    """

    def __init__(
        self, c_student: int, c_teacher: int, grid: tuple[int, int], dim: int = 128, depth: int = 1
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(c_student, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.randn(grid[0] * grid[1], dim) * 0.02)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, 4, batch_first=True) for _ in range(depth))
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            for _ in range(depth)
        )
        self.out = nn.Linear(dim, c_teacher)
        if c_student == dim == c_teacher:  # start as the identity: visible cells pass straight through
            with torch.no_grad():
                for lin in (self.proj, self.out):
                    lin.weight.copy_(torch.eye(dim))
                    lin.bias.zero_()

    def forward(self, feats: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """feats B x C_s x h x w, masked B x h*w bool (same count per row) -> B x C_t x h x w."""
        b, _, h, w = feats.shape
        tok = self.proj(feats.flatten(2).transpose(1, 2)) + self.pos  # B x N x D
        n_m = int(masked[0].sum())
        order = torch.argsort(masked.float(), dim=1, stable=True)  # visible first, then masked
        vis_idx, m_idx = order[:, : h * w - n_m], order[:, h * w - n_m :]
        gather = lambda t, idx: torch.gather(t, 1, idx[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
        kv = gather(tok, vis_idx)
        q = self.mask_token + gather(self.pos[None].expand(b, -1, -1), m_idx)
        for attn, norm, mlp in zip(self.attn, self.norm, self.mlp):
            q = q + attn(norm(q), kv, kv, need_weights=False)[0]
            q = q + mlp(q)
        full = tok.clone()
        full = full.scatter(1, m_idx[..., None].expand(-1, -1, tok.shape[-1]), q)
        return self.out(full).transpose(1, 2).reshape(b, -1, h, w)


def sami_mask(b: int, h: int, w: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """B x h*w bool, exactly round(ratio * h * w) True per row (uniformly random cells)."""
    n = h * w
    k = round(ratio * n)
    noise = torch.rand((b, n), generator=gen)
    idx = noise.argsort(1)[:, :k]
    m = torch.zeros((b, n), dtype=torch.bool)
    m.scatter_(1, idx, True)
    return m


def blank_cells(x: torch.Tensor, masked: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Zeroes (the normalised mean) the input patches of masked cells: B x 3 x S x S -> same."""
    b, _, s, _ = x.shape
    m = masked.reshape(b, 1, *grid).float()
    m = F.interpolate(m, (s, s), mode="nearest")
    return x * (1 - m)


# --- steps --------------------------------------------------------------------------------------
class Distiller(nn.Module):
    """Everything trainable in a distillation run (the student, plus the SAMI head in ``sami`` mode)."""

    def __init__(self, student: Sam, head: SamiHead | None) -> None:
        super().__init__()
        self.student = student
        self.head = head


def _hard_select(
    student: Sam, teacher: Sam, sf: ImageFeatures, tf: ImageFeatures, boxes, coords, labels, k: int
) -> torch.Tensor:
    """Indices of the ``k`` candidates with the largest mean |student - teacher| logit gap."""
    with torch.no_grad():
        s_low, _, _ = decode_all(student, sf, coords, labels, boxes, None)
        t_low, _, _ = decode_all(teacher, tf, coords, labels, boxes, None)
        gap = (s_low - t_low).abs().flatten(1).mean(1)
    return gap.argsort(descending=True)[:k]


def make_step(
    cfg: DistillConfig,
    student: Sam,
    teacher: Sam,
    head: SamiHead | None,
    cache: TeacherCache,
    source,
    rank: int,
    world: int,
    device: torch.device,
):
    """The step function of :func:`leansam.train.runner.fit` for ``cfg.mode``."""
    frame = teacher.transform.prompt_frame
    same_input = student.transform == teacher.transform

    def load(step: int, gen: torch.Generator) -> tuple[list[Prepared], torch.Tensor, torch.Tensor]:
        idx = sample_indices(len(source), cfg.seed, step, cfg.batch_size, rank, world)
        flips = torch.rand(len(idx), generator=gen) < 0.5
        samples = [source[i] for i in idx]
        flips = [bool(f) and cfg.flip for f in flips]
        tb = [prepare(s, teacher.transform, cfg.loss_res, f) for s, f in zip(samples, flips)]
        xt = torch.stack([p.x for p in tb]).to(device)
        if same_input:
            return tb, xt, xt
        xs = torch.stack([prepare(s, student.transform, cfg.loss_res, f).x for s, f in zip(samples, flips)])
        return tb, xs.to(device), xt

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, rank))
        batch, xs, xt = load(step, gen)
        t_emb = cache.embeddings(xt)
        metrics: dict[str, float] = {}
        if cfg.mode == "sami":
            _, h, w = embed_shape(teacher)
            masked = sami_mask(len(xs), h, w, cfg.mask_ratio, gen).to(device)
            s_feat = student.encode_image(blank_cells(xs, masked, (h, w))).embed
            pred = head(s_feat, masked)
            loss = F.mse_loss(pred, t_emb)
            metrics["mse_masked"] = float(((pred - t_emb) ** 2).mean(1).flatten(1)[masked].mean().detach())
            return loss, metrics
        s_feats = student.encode_image(xs)
        s_emb = s_feats.embed
        emb_loss = F.mse_loss(s_emb, t_emb)
        metrics["embed_mse"] = float(emb_loss.detach())
        if cfg.mode == "encoder":
            return emb_loss + _skip_feature_loss(
                _teacher_features(teacher, xt, t_emb), s_feats, metrics
            ), metrics
        total = cfg.embed_weight * emb_loss
        t_feats = _teacher_features(teacher, xt, t_emb)
        dec_losses = []
        for i, p in enumerate(batch):
            if len(p.masks) == 0:
                continue
            sf, tf = s_feats.select(i), t_feats.select(i)
            n_cand = min(
                len(p.masks), cfg.prompts_per_image * (cfg.candidate_factor if cfg.mode == "full" else 1)
            )
            pick = torch.randint(len(p.masks), (n_cand,), generator=gen)
            gt = p.masks[pick]
            n_box = round(n_cand * cfg.box_fraction)
            boxes, pts, labs = initial_prompts(gt, n_box, gen, frame, 0.1)
            groups = []
            if n_box:
                groups.append((boxes.to(device), None, None))
            if n_cand - n_box:
                groups.append((None, pts.to(device), labs.to(device)))
            for g_box, g_c, g_l in groups:
                if cfg.mode == "full":
                    dec_losses.append(_full_loss(cfg, student, teacher, sf, tf, g_box, g_c, g_l, n_cand))
                else:
                    dec_losses.append(_loop_loss(cfg, student, teacher, sf, tf, g_box, g_c, g_l, gen, frame))
        if dec_losses:
            dec = torch.stack(dec_losses).mean()
            metrics["decoder_loss"] = float(dec.detach())
            total = total + dec
        return total, metrics

    return step_fn


def _skip_feature_loss(
    tf: ImageFeatures, s_feats: ImageFeatures, metrics: dict[str, float]
) -> torch.Tensor | float:
    """Mean MSE over the skip features that a SAM 2 style decoder reads beside the embedding, when
    teacher (``tf``) and student both give them at the same shapes (else 0; recorded as ``skip_mse``):
    matching the embedding alone leaves those free to drift."""
    t_hr, s_hr = tf.high_res, s_feats.high_res
    if t_hr is None or s_hr is None or [t.shape for t in t_hr] != [s.shape for s in s_hr]:
        return 0.0
    loss = torch.stack([F.mse_loss(s, t) for s, t in zip(s_hr, t_hr)]).mean()
    metrics["skip_mse"] = float(loss.detach())
    return loss


@torch.no_grad()
def _teacher_features(teacher: Sam, xt: torch.Tensor, t_emb: torch.Tensor) -> ImageFeatures:
    """The teacher's features for the decoder losses: the (cached) embedding, plus the skip
    features when its decoder upscales with them (SAM 2 style; computed, not cached)."""
    if not teacher.mask_decoder.use_high_res_features:
        return ImageFeatures(t_emb)
    return ImageFeatures(t_emb, teacher.encode_image(xt).high_res)


def _full_loss(cfg, student, teacher, sf, tf, boxes, coords, labels, n_cand) -> torch.Tensor:
    b = (boxes if boxes is not None else coords).shape[0]
    k = max(1, round(b / cfg.candidate_factor))
    if k < b:
        sel = _hard_select(student, teacher, sf, tf, boxes, coords, labels, k)
        boxes = boxes[sel] if boxes is not None else None
        coords = coords[sel] if coords is not None else None
        labels = labels[sel] if labels is not None else None
    s_low, _, s_tok = decode_all(student, sf, coords, labels, boxes, None)
    with torch.no_grad():
        t_low, _, t_tok = decode_all(teacher, tf, coords, labels, boxes, None)
    return cfg.token_weight * (s_tok - t_tok).abs().mean() + cfg.mask_weight * (s_low - t_low).abs().mean()


def _loop_loss(cfg, student, teacher, sf, tf, boxes, coords, labels, gen, frame) -> torch.Tensor:
    total = sf.embed.new_zeros(())
    s_in = t_in = None
    for r in range(cfg.rounds):
        s_low, _, _ = decode_all(student, sf, coords, labels, boxes, s_in)
        with torch.no_grad():
            t_low, t_iou, _ = decode_all(teacher, tf, coords, labels, boxes, t_in)
        target = (t_low > 0).float()
        s_up = F.interpolate(s_low, (cfg.loss_res,) * 2, mode="bilinear", align_corners=False)
        t_up = F.interpolate(target, (cfg.loss_res,) * 2, mode="bilinear", align_corners=False)
        t_up = (t_up > 0.5).float()
        total = total + cfg.mask_weight * (20 * focal_loss(s_up, t_up) + dice_loss(s_up, t_up)).mean()
        if r == cfg.rounds - 1:
            break
        # the mask the user would see: token 0, or the teacher's best candidate for one click
        single_click = boxes is None and coords.shape[1] == 1 and r == 0
        rows = torch.arange(len(s_low))
        tok = t_iou[:, 1:].argmax(1) + 1 if single_click else torch.zeros(len(s_low), dtype=torch.long)
        with torch.no_grad():
            new_c, new_l = correction_points((s_up[rows, tok] > 0).cpu(), t_up[rows, tok].cpu(), gen, frame)
        new_c, new_l = new_c.to(s_low.device), new_l.to(s_low.device)
        coords = new_c if coords is None else torch.cat([coords, new_c], 1)
        labels = new_l if labels is None else torch.cat([labels, new_l], 1)
        s_in = s_low[rows, tok][:, None].detach()
        t_in = t_low[rows, tok][:, None]
    return total / cfg.rounds


def distill(cfg: DistillConfig) -> dict[str, float]:
    """Runs ``leansam distill``; returns the last step's metrics. Writes into ``cfg.out``."""
    info = setup(cfg)
    torch.manual_seed(cfg.seed)
    try:
        teacher = load_spec(cfg.teacher, pretrained=True)
    except KeyError as e:
        raise InputError(str(e)) from e
    teacher = teacher.to(info.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = build_student(cfg.student, teacher, cfg.copy_decoder)
    if cfg.student_init:
        from ..checkpoints import read_state_dict

        student.load_state_dict(read_state_dict(cfg.student_init))
    student = student.to(info.device)
    head = None
    if cfg.mode == "sami":
        c_t, h, w = embed_shape(teacher)
        with torch.no_grad():
            c_s = student.encode_image(torch.zeros(1, 3, *(student.transform.encoder_size,) * 2)).embed.shape[
                1
            ]
        head = SamiHead(c_s, c_t, (h, w), cfg.sami_dim, cfg.sami_depth).to(info.device)
    decoder_modes = cfg.mode in ("full", "prompt-in-the-loop")
    set_trainable(student, True, decoder_modes and cfg.train_decoder, False)
    cache_root = cfg.cache_dir if cfg.cache_dir is not None else str(Path(cfg.out).parent / "teacher_cache")
    cache = TeacherCache(teacher, cfg.teacher, cache_root or None)
    source = open_source(cfg.data)
    module = Distiller(student, head)
    step_fn = make_step(cfg, student, teacher, head, cache, source, info.rank, info.world, info.device)
    dec = [p for p in student.mask_decoder.parameters() if p.requires_grad]
    dec_ids = {id(p) for p in dec}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in dec_ids]
    groups = [{"params": rest}] + ([{"params": dec, "lr_scale": cfg.decoder_lr_scale}] if dec else [])
    return fit(cfg, module, step_fn, info, export=student.state_dict, params=groups)
