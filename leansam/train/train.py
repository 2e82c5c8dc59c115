"""Promptable-segmentation training of any registered architecture from masks (SAM's recipe).

One step, per image of the batch: pick up to ``prompts_per_image`` instances; a fraction
``box_fraction`` gets a jittered box prompt, the rest one click drawn uniformly inside the
mask. The decoder predicts all mask tokens; single-click prompts are ambiguous, so only the
candidate with the lowest loss among the 3 multimask outputs is trained (min-loss selection),
while boxes train the single-mask token. Then ``correction_rounds`` times: a click is drawn
from the error region of the current prediction (label 1 for a miss, 0 for a false positive),
appended to the prompt, the previous low-res logits are fed back as the mask prompt, and the
loss of the new prediction is added. Loss = 20 x focal + 1 x dice + MSE(IoU head, true IoU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..io import InputError
from ..models.sam import ImageFeatures, Sam
from .data import Prefetcher, Prepared, StepLoader, image_cells, open_source, prepare, sample_indices
from .losses import segmentation_loss
from .prompts import background_region, boxes_from_masks, correction_points, jitter_boxes, sample_points
from .runner import RunConfig, fit, setup, step_seed


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """``leansam train`` options (plus :class:`RunConfig`'s).

    Attributes:
        model: registry name of the architecture, optionally ``NAME:CKPT`` to start from weights.
        data: ``synth:N[:SEED]``, a COCO ``.json`` or a directory (SA-1B layout or COCO set).
        prompts_per_image: instances prompted per image and step.
        box_fraction: share of those prompted with a box (the rest with one click).
        correction_rounds: iterative correction clicks after the first prediction.
        loss_res: side of the prompt-frame grid the loss is computed on.
        box_jitter: box noise std as a fraction of the box side (capped at 20 frame px).
        focal_weight / dice_weight / iou_weight: loss weights (SAM: 20 / 1 / 1).
        flip: random horizontal flips.
        min_mask_area: instances smaller than this at ``loss_res`` are skipped.
        train_encoder / train_decoder / train_prompt_encoder: which parts are optimised.
        decoder_warmup: steps of :func:`decoder_warmup` before training (fresh runs only).
        warmup_lr: its learning rate.
        batched_decode: decode the box prompts of all images of the batch in one decoder call and
            their click prompts in another (each prompt carries its image's features), instead of
            two calls per image; the loss is then the mean over the two prompt kinds of their
            per-prompt means. The same arithmetic in far fewer, larger kernels (for GPUs).
        data_workers: processes preparing the coming steps' batches (0: one background thread).
        background_clicks: per image with instances, this many extra clicks on the background (the
            image's pixels outside every instance), whose target is the whole background: a click
            there selects it as one segment, as SAM's does for "stuff", instead of an arbitrary blob.
    """

    model: str = "leansam_tiny"
    data: str = "synth:2000:0"
    prompts_per_image: int = 8
    box_fraction: float = 0.5
    correction_rounds: int = 1
    loss_res: int = 256
    box_jitter: float = 0.1
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    flip: bool = True
    min_mask_area: int = 4
    train_encoder: bool = True
    train_decoder: bool = True
    train_prompt_encoder: bool = True
    decoder_warmup: int = 0
    warmup_lr: float = 1e-3
    batched_decode: bool = False
    data_workers: int = 0
    background_clicks: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompts_per_image <= 0 or self.loss_res <= 0:
            raise ValueError("prompts_per_image and loss_res must be positive")
        if not 0 <= self.box_fraction <= 1:
            raise ValueError("box_fraction must be in [0, 1]")
        if self.correction_rounds < 0:
            raise ValueError("correction_rounds must be >= 0")
        if self.decoder_warmup < 0 or self.warmup_lr <= 0:
            raise ValueError("decoder_warmup must be >= 0 and warmup_lr > 0")
        if self.box_jitter < 0 or min(self.focal_weight, self.dice_weight, self.iou_weight) < 0:
            raise ValueError("box_jitter and loss weights must be >= 0")
        if self.data_workers < 0 or self.background_clicks < 0:
            raise ValueError("data_workers and background_clicks must be >= 0")


def load_spec(spec: str, pretrained: bool = False) -> Sam:
    """``NAME`` (fresh weights, or the official ones when ``pretrained``) or ``NAME:CKPT``."""
    import leansam

    name, _, ckpt = spec.partition(":")
    if ckpt:
        return leansam.build_model(name, checkpoint=ckpt)
    return leansam.build_model(name, pretrained=pretrained)


def decode_all(
    model: Sam,
    feats: ImageFeatures,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All mask tokens for B prompts given in prompt-frame coordinates.

    Returns (low-res logits B x (M+1) x l x l, IoU B x (M+1), the decoder's output tokens B x T x C).
    Token 0 is the single-mask output, 1..M the multimask candidates.
    """
    frame = model.transform.prompt_frame
    pts = model.prepare_prompts(coords, labels, boxes, (frame, frame))
    b = (boxes if boxes is not None else coords).shape[0]
    if mask_input is not None and not model.prompt_encoder.mask_prompt:
        mask_input = None
    sparse, dense = model.prompt_encoder(pts, mask_input, batch_size=b)
    captured: list[torch.Tensor] = []
    hook = model.mask_decoder.transformer.register_forward_hook(lambda m, i, o: captured.append(o[0]))
    try:
        low, iou, _ = model.mask_decoder.predict_masks(
            feats.embed, model.prompt_encoder.get_dense_pe(), sparse, dense, feats.high_res
        )
    finally:
        hook.remove()
    return low, iou, captured[0]


def initial_prompts(
    masks: torch.Tensor, n_box: int, gen: torch.Generator, frame: int, jitter: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box prompts for the first ``n_box`` masks, one click inside each of the others.

    Returns (jittered boxes n_box x 4, click coords (N - n_box) x 1 x 2, click labels (N - n_box) x 1).
    """
    boxes = jitter_boxes(boxes_from_masks(masks[:n_box], frame), gen, jitter, 20.0, frame)
    pts, _ = sample_points(masks[n_box:] > 0.5, gen, frame)
    labels = torch.ones((len(pts), 1), dtype=torch.long)
    return boxes, pts[:, None], labels


def _up(low: torch.Tensor, res: int) -> torch.Tensor:
    return (
        low if low.shape[-1] == res else F.interpolate(low, (res, res), mode="bilinear", align_corners=False)
    )


def prompt_rounds(
    model: Sam,
    feats: ImageFeatures,
    gt: torch.Tensor,
    boxes: torch.Tensor | None,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    rounds: int,
    gen: torch.Generator,
    cfg: TrainConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """First prediction plus ``rounds`` correction rounds for one prompt group; summed loss."""
    frame = model.transform.prompt_frame
    multimask = boxes is None and coords is not None and coords.shape[1] == 1
    mask_in = None
    total = gt.new_zeros(())
    parts_sum: dict[str, torch.Tensor] = {}
    dev = gt.device
    for r in range(rounds + 1):
        low, iou, _ = decode_all(model, feats, coords, labels, boxes, mask_in)
        mm = multimask and r == 0
        low_s, iou_s = (low[:, 1:], iou[:, 1:]) if mm else (low[:, :1], iou[:, :1])
        logits = _up(low_s, cfg.loss_res)
        loss, parts, best = segmentation_loss(
            logits, iou_s, gt, cfg.focal_weight, cfg.dice_weight, cfg.iou_weight, multimask=mm
        )
        total = total + loss.mean()
        for k, v in parts.items():
            parts_sum[f"{k}_r{r}"] = v.detach().mean()
        if r == rounds:
            break
        rows = torch.arange(len(gt), device=dev)
        with torch.no_grad():
            chosen = logits[rows, best] > 0
            new_c, new_l = correction_points(chosen.cpu(), gt.cpu(), gen, frame)
        new_c, new_l = new_c.to(dev), new_l.to(dev)
        coords = new_c if coords is None else torch.cat([coords, new_c], 1)
        labels = new_l if labels is None else torch.cat([labels, new_l], 1)
        mask_in = low_s[rows, best][:, None].detach()
    return total / (rounds + 1), parts_sum


def load_batch(
    source: Sequence | Prefetcher,
    model: Sam,
    cfg: TrainConfig,
    step: int,
    rank: int,
    world: int,
    gen: torch.Generator,
) -> list[Prepared]:
    """The step's samples, prepared in the model's frame (flips drawn from ``gen``).

    With a :class:`Prefetcher`, the next step's samples start loading before this one returns.
    """
    n = len(source.source if isinstance(source, Prefetcher) else source)
    idx = sample_indices(n, cfg.seed, step, cfg.batch_size, rank, world)
    if isinstance(source, Prefetcher):
        samples = source.get(idx)
        source.prefetch(sample_indices(n, cfg.seed, step + 1, cfg.batch_size, rank, world))
    else:
        samples = [source[i] for i in idx]
    flips = torch.rand(len(idx), generator=gen) < 0.5
    return [
        prepare(s, model.transform, cfg.loss_res, bool(f) and cfg.flip, cfg.min_mask_area)
        for s, f in zip(samples, flips)
    ]


class _PreparedSteps:
    """Step ``s``'s batch as :func:`load_batch` prepares it, with the step's own generator (whose
    first draw is the flips), for :class:`StepLoader` workers. Masks are bool (a quarter of the
    shared memory); the step turns the ones it picks to float."""

    def __init__(self, source: Sequence, model: Sam, cfg: TrainConfig, rank: int, world: int) -> None:
        self.source, self.model, self.cfg = source, model, cfg
        self.rank, self.world = rank, world

    def __call__(self, step: int) -> list[Prepared]:
        gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, step, self.rank))
        batch = load_batch(self.source, self.model, self.cfg, step, self.rank, self.world, gen)
        return [dataclasses.replace(p, masks=p.masks.bool()) for p in batch]


class _Group(NamedTuple):
    """Prompts of one kind decoded together: boxes (N x 4), or clicks (coords N x 1 x 2 and labels
    N x 1), with their ground-truth masks N x L x L and the index of their image in the batch."""

    image: int
    gt: torch.Tensor
    boxes: torch.Tensor | None
    coords: torch.Tensor | None
    labels: torch.Tensor | None


def _pick_prompts(
    batch: list[Prepared], cfg: TrainConfig, gen: torch.Generator, frame: int, device: torch.device
) -> Iterator[list[_Group]]:
    """Per image with instances, up to ``prompts_per_image`` of them as a box group and a click
    group on ``device`` (the click group ends with the image's ``background_clicks``). Yields image
    by image, so a caller that decodes each image's groups before asking for the next draws from
    ``gen`` in the per-image order."""
    for i, p in enumerate(batch):
        if len(p.masks) == 0:
            continue
        k = min(cfg.prompts_per_image, len(p.masks))
        pick = torch.randperm(len(p.masks), generator=gen)[:k]
        gt_cpu = p.masks[pick].float()  # the loader's masks are bool
        n_box = round(k * cfg.box_fraction)
        boxes, pts, labs = initial_prompts(gt_cpu, n_box, gen, frame, cfg.box_jitter)
        if cfg.background_clicks:
            gt_cpu, pts, labs = _add_background_clicks(p, gt_cpu, pts, labs, cfg, gen, frame)
        gt = gt_cpu.to(device)
        groups = []
        if n_box:
            groups.append(_Group(i, gt[:n_box], boxes.to(device), None, None))
        if len(gt) - n_box:
            groups.append(_Group(i, gt[n_box:], None, pts.to(device), labs.to(device)))
        yield groups


def _add_background_clicks(
    p: Prepared,
    gt: torch.Tensor,
    pts: torch.Tensor,
    labs: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    frame: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cfg.background_clicks`` clicks on the background of ``p`` appended to the click prompts
    (coords K x 1 x 2, labels K x 1), with the background region as their target rows of ``gt``.
    An image whose background is smaller than ``cfg.min_mask_area`` gets none."""
    bg = background_region(p.masks, image_cells(p.frame, p.masks.shape[-1], frame))
    if bg.sum() < cfg.min_mask_area:
        return gt, pts, labs
    bg = bg.expand(cfg.background_clicks, -1, -1)
    bg_pts, _ = sample_points(bg > 0.5, gen, frame)
    ones = torch.ones((len(bg_pts), 1), dtype=labs.dtype)
    return torch.cat([gt, bg]), torch.cat([pts, bg_pts[:, None]]), torch.cat([labs, ones])


def _batched_groups(groups: list[_Group], feats_all: ImageFeatures) -> list[tuple[ImageFeatures, _Group]]:
    """The per-image groups joined into one group per prompt kind, each prompt with its image's
    features (the joined group's ``image`` is -1)."""
    joined = []
    for kind in ([g for g in groups if g.boxes is not None], [g for g in groups if g.boxes is None]):
        if not kind:
            continue
        dev = kind[0].gt.device
        idx = torch.cat([torch.full((len(g.gt),), g.image, dtype=torch.long, device=dev) for g in kind])
        hr = feats_all.high_res
        feats = ImageFeatures(feats_all.embed[idx], [h[idx] for h in hr] if hr is not None else None)
        parts = [
            None if getattr(kind[0], f) is None else torch.cat([getattr(g, f) for g in kind])
            for f in _Group._fields[1:]
        ]
        joined.append((feats, _Group(-1, *parts)))
    return joined


def make_step(model: Sam, source: Sequence, cfg: TrainConfig, rank: int, world: int, device: torch.device):
    """The step function of :func:`leansam.train.runner.fit` for promptable segmentation."""
    frame = model.transform.prompt_frame
    reader, loader = None, None
    if cfg.data_workers:
        prepared = _PreparedSteps(source, model, cfg, rank, world)
        loader = StepLoader(prepared, cfg.stop_after or cfg.steps, cfg.data_workers)
    else:
        reader = Prefetcher(source)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, rank))
        if loader is not None:
            batch = loader.get(step)
            torch.rand(len(batch), generator=gen)  # the flips' draw, made by the loader
        else:
            batch = load_batch(reader, model, cfg, step, rank, world, gen)
        x = torch.stack([p.x for p in batch]).to(device)
        feats_all = model.encode_image(x)
        per_image = _pick_prompts(batch, cfg, gen, frame, device)
        if cfg.batched_decode:
            work: Iterable = _batched_groups([g for groups in per_image for g in groups], feats_all)
        else:
            work = ((feats_all.select(g.image), g) for groups in per_image for g in groups)
        total = x.new_zeros(())
        agg: dict[str, list[torch.Tensor]] = {}
        n_groups = 0
        for feats, g in work:
            loss, parts = prompt_rounds(
                model, feats, g.gt, g.boxes, g.coords, g.labels, cfg.correction_rounds, gen, cfg
            )
            total = total + loss
            n_groups += 1
            for key, v in parts.items():
                agg.setdefault(key, []).append(v)
        if n_groups == 0:  # no instance in the whole batch: a zero loss that still touches the graph
            return feats_all.embed.sum() * 0.0, {}
        metrics = {key: float(torch.stack(v).mean()) for key, v in agg.items()}
        return total / n_groups, metrics

    return step_fn


def set_trainable(model: Sam, encoder: bool, decoder: bool, prompt_encoder: bool) -> None:
    """Freezes / unfreezes the three parts of ``model``."""
    for part, flag in (
        (model.image_encoder, encoder),
        (model.mask_decoder, decoder),
        (model.prompt_encoder, prompt_encoder),
    ):
        for p in part.parameters():
            p.requires_grad_(flag)


def decoder_warmup(model: Sam, steps: int, lr: float, seed: int, prompts: int = 16) -> list[float]:
    """Teaches a fresh prompt encoder + mask decoder to localise box prompts (a cheap curriculum).

    A decoder trained from scratch spends hundreds of steps predicting "nothing" before it
    learns to route the prompt's position to the image grid. This warm-up shortcuts that on
    a task with no image encoder at all: image embeddings = the prompt encoder's dense positional
    encoding plus a little noise (an encoder's embedding carries positions, as a ViT's does),
    random boxes, target = the filled box at the decoder's low-res grid, class-balanced BCE +
    dice. Deterministic for a given ``seed`` (every rank of a data-parallel run computes the same
    weights). Returns the losses.
    """
    c, (gh, gw) = model.mask_decoder.transformer_dim, model.prompt_encoder.image_embedding_size
    frame = model.transform.prompt_frame
    params = [
        p for m in (model.prompt_encoder, model.mask_decoder) for p in m.parameters() if p.requires_grad
    ]
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    dev = model.device
    lh, lw = 4 * gh, 4 * gw
    with torch.no_grad():
        dense_pe = model.prompt_encoder.get_dense_pe()
    ys = (torch.arange(lh, device=dev) + 0.5) * frame / lh
    xs = (torch.arange(lw, device=dev) + 0.5) * frame / lw
    losses = []
    for _ in range(steps):
        emb = WARMUP_EMBED_SCALE * torch.randn((1, c, gh, gw), generator=gen).to(dev) + dense_pe
        xy0 = torch.rand((prompts, 2), generator=gen) * frame * 0.8
        wh = frame * (0.05 + 0.4 * torch.rand((prompts, 2), generator=gen))
        boxes = torch.cat([xy0, (xy0 + wh).clamp(max=frame)], 1).to(dev)
        gt = (
            (ys[None, :, None] >= boxes[:, 1, None, None])
            & (ys[None, :, None] < boxes[:, 3, None, None])
            & (xs[None, None, :] >= boxes[:, 0, None, None])
            & (xs[None, None, :] < boxes[:, 2, None, None])
        ).float()
        low, _, _ = decode_all(
            model, ImageFeatures(emb, _random_high_res(model, gen)), None, None, boxes, None
        )
        loss = _warmup_loss(low[:, 0], gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


#: Scale of the noise in the warm-up's image embeddings (the rest is the dense positional encoding).
WARMUP_EMBED_SCALE = 0.1


def _warmup_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE + dice: a fresh decoder cannot settle on "nothing" for the small boxes."""
    pos = gt.mean((1, 2), keepdim=True).clamp(0.01, 0.99)
    weight = torch.where(gt > 0.5, 0.5 / pos, 0.5 / (1 - pos))
    bce = F.binary_cross_entropy_with_logits(logits, gt, weight=weight)
    p = logits.sigmoid().flatten(1)
    t = gt.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice.mean()


def _random_high_res(model: Sam, gen: torch.Generator) -> list[torch.Tensor] | None:
    """Random skip features for the warm-up of a decoder that upscales with them (else None)."""
    dec = model.mask_decoder
    if not dec.use_high_res_features:
        return None
    c, (gh, gw) = dec.transformer_dim, model.prompt_encoder.image_embedding_size
    raw = [
        WARMUP_EMBED_SCALE * torch.randn((1, c, f * gh, f * gw), generator=gen).to(model.device)
        for f in (4, 2)
    ]
    return dec.project_high_res(raw)


def train(cfg: TrainConfig) -> dict[str, float]:
    """Runs ``leansam train``; returns the last step's metrics. Writes into ``cfg.out``."""
    info = setup(cfg)
    torch.manual_seed(cfg.seed)
    try:
        model = load_spec(cfg.model)
    except KeyError as e:
        raise InputError(str(e)) from e
    model = model.to(info.device)
    source = open_source(cfg.data)
    set_trainable(model, cfg.train_encoder, cfg.train_decoder, cfg.train_prompt_encoder)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("nothing to train: every part of the model is frozen")
    if cfg.decoder_warmup and not (cfg.resume and (Path(cfg.out) / "last.pt").is_file()):
        decoder_warmup(model, cfg.decoder_warmup, cfg.warmup_lr, cfg.seed)
    step_fn = make_step(model, source, cfg, info.rank, info.world, info.device)
    return fit(cfg, model, step_fn, info, export=model.state_dict)
