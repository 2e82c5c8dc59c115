"""``leansam prune``: structural pruning of a model's image encoder, with recovery by distillation.

SlimSAM's alternate slimming: the bottleneck dims (ViT: q/k and v head dims, MLP hidden units;
TinyFPN: the inner width of every residual block) are pruned first, then the embedding dims
(ViT: the token width; TinyFPN: the stem and stage widths); after each stage the pruned model is
distilled from the unpruned one (``leansam distill``'s ``encoder`` mode, embedding MSE, or
``full`` to also match mask outputs). Importance is recomputed before each stage on the
calibration images (:mod:`.importance`). ``alternate=False`` prunes both kinds at once.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..io import InputError
from ..models.sam import Sam
from .arch import describe, save_pruned, set_arch
from .importance import IMPORTANCES, accumulate_grads, load_calibration_data, scorer

RECOVERY_MODES = ("encoder", "full")


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Options of :func:`prune_model`.

    Attributes:
        ratio: fraction of every channel kind removed, in (0, 1) (relative to the starting model).
        importance: one of :data:`~leansam.prune.importance.IMPORTANCES`.
        calib: calibration images: ``synth:N[:SEED[:PRESET]]``, an annotated data folder, or a
            folder of images (no masks: not for ``taylor``).
        num_calib: calibration images used per importance estimate.
        alternate: SlimSAM's alternate slimming (bottleneck, recovery, embedding, recovery).
        recovery_steps: distillation steps after each stage (0: no recovery).
        recovery_mode: ``encoder`` (embedding MSE) or ``full`` (also decoder tokens and masks).
        recovery_data: distillation images (``leansam distill --data``).
        batch_size, lr: of the recovery runs.
        noise: ``disturbed-taylor``'s noise, as a fraction of the embedding's std.
        seed: seed of calibration noise and recovery.
        device: where the recovery runs (``cpu``, ``cuda``, ``auto``; ``leansam distill --device``).
        teacher_cache: folder of the teacher's cached embeddings (``leansam distill``'s cache, keyed
            by the teacher's weights and the input bytes, so runs may share it); "" disables it.
    """

    ratio: float
    importance: str = "disturbed-taylor"
    calib: str = "synth:16:0"
    num_calib: int = 8
    alternate: bool = True
    recovery_steps: int = 0
    recovery_mode: str = "encoder"
    recovery_data: str = "synth:2000:0"
    batch_size: int = 4
    lr: float = 1e-4
    noise: float = 0.2
    seed: int = 0
    device: str = "cpu"
    teacher_cache: str = ""

    def __post_init__(self) -> None:
        ok_ratio = isinstance(self.ratio, int | float) and not isinstance(self.ratio, bool)
        if not (ok_ratio and 0.0 < self.ratio < 1.0):
            raise ValueError(f"ratio must be a number in (0, 1), not {self.ratio!r}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(IMPORTANCES)}, not {self.importance!r}")
        if self.recovery_mode not in RECOVERY_MODES:
            raise ValueError(f"recovery_mode must be one of {', '.join(RECOVERY_MODES)}")
        if self.num_calib < 1 or self.recovery_steps < 0 or self.batch_size < 1:
            raise ValueError("num_calib and batch_size must be >= 1, recovery_steps >= 0")
        if not (self.lr > 0 and self.noise >= 0):
            raise ValueError("lr must be > 0 and noise >= 0")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, not {self.device!r}")


def load_model_spec(spec: str | None, trust_pickle: bool = False, prunable: bool = False):
    """(model, spec that loads it again) from ``NAME``, ``NAME:CKPT`` or a pruned model's path.

    ``prunable``: refuse (InputError) an encoder :func:`prune_model` cannot prune, before any
    weights are read.
    """
    from ..checkpoints import load_model
    from ..registry import default_model_name
    from .arch import read_arch, resolve_spec

    spec = spec or default_model_name()
    name, ckpt = spec, None
    if not Path(spec).exists():
        name, _, ckpt = spec.partition(":")
        ckpt = ckpt or None
    name, ckpt = resolve_spec(name, ckpt)
    if prunable and (ckpt is None or read_arch(ckpt) is None):
        import torch

        from ..registry import get_model_info

        with torch.device("meta"):
            encoder_kind(get_model_info(name).build())
    model, _ = load_model(name, ckpt, trust_pickle=trust_pickle)
    return model, spec


def encoder_kind(model: Sam) -> str:
    """``vit`` or ``tiny_fpn``; InputError naming the encoder for anything leansam cannot prune."""
    from ..models.tiny_fpn import TinyFPNEncoder
    from ..models.vit import ViTImageEncoder
    from .vit import check_prunable

    enc = model.image_encoder
    if type(enc) is ViTImageEncoder:
        try:
            check_prunable(enc)
        except ValueError as e:
            raise InputError(str(e)) from None
        return "vit"
    if type(enc) is TinyFPNEncoder:
        return "tiny_fpn"
    raise InputError(
        f"{getattr(model, 'name', '') or 'this model'}'s image encoder ({type(enc).__name__}) cannot be "
        "pruned by leansam prune: it prunes SAM-style ViT encoders (sam_vit_*, slimsam_*) and the "
        "TinyFPN encoder (leansam_tiny, leansam_tiny_teacher)"
    )


def widths_of(model: Sam) -> dict[str, Any]:
    """The prunable widths of ``model``'s encoder, for reports."""
    enc = model.image_encoder
    if hasattr(enc, "cfg"):
        from .vit import current_widths

        qk, v, mlp = current_widths(enc.cfg)[0]
        return {"embed": enc.cfg.embed_dim, "qk": qk, "v": v, "mlp": mlp, "heads": enc.cfg.num_heads}
    c = enc.config
    return {"stem": c.stem_width, "widths": list(c.widths), "mids": [list(m) for m in (c.mids or ())]}


def encoder_params(model: Sam) -> int:
    return sum(p.numel() for p in model.image_encoder.parameters())


def _prune_stage(student: Sam, base_cfg, cfg: PruneConfig, kinds: tuple[bool, bool]) -> None:
    """Replaces ``student.image_encoder`` by its pruned copy (``kinds`` = (bottleneck, embedding))."""
    score = scorer(cfg.importance)
    enc = student.image_encoder
    if hasattr(enc, "cfg"):
        from .vit import prune_vit, target_widths

        student.image_encoder = prune_vit(enc, target_widths(base_cfg, enc.cfg, cfg.ratio, *kinds), score)
    else:
        from .conv import prune_tiny_fpn

        student.image_encoder = prune_tiny_fpn(enc, cfg.ratio, *kinds, score, base_cfg)
    student.zero_grad(set_to_none=True)


def prune_model(
    teacher: Sam,
    teacher_spec: str,
    cfg: PruneConfig,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Sam, dict[str, Any]]:
    """Prunes a copy of ``teacher`` (unchanged): (pruned model with its architecture recorded, report).

    ``teacher_spec`` (``NAME``, ``NAME:CKPT`` or a pruned model's path) loads the teacher again in
    the recovery runs (``leansam distill --teacher``).
    """
    kind = encoder_kind(teacher)
    base = getattr(teacher, "name", "")
    arch = describe(teacher)
    base = arch["base"] if arch else base
    base_cfg = teacher.image_encoder.cfg if kind == "vit" else teacher.image_encoder.config
    needs_data = cfg.importance != "magnitude" or cfg.recovery_steps > 0
    calib = load_calibration_data(cfg.calib, teacher, cfg.num_calib) if needs_data else None
    student = copy.deepcopy(teacher).float()
    stages = ((True, False), (False, True)) if cfg.alternate else ((True, True),)
    report: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "teacher": teacher_spec,
        "widths_before": widths_of(teacher),
        "encoder_params_before": encoder_params(teacher),
        "stages": [],
    }
    for i, kinds in enumerate(stages):
        t0 = time.perf_counter()
        accumulate_grads(student, teacher, calib, cfg.importance, cfg.noise, cfg.seed + i)
        _prune_stage(student, base_cfg, cfg, kinds)
        names = ("bottleneck", "embedding")
        stage: dict[str, Any] = {
            "pruned": [n for n, k in zip(names, kinds) if k],
            "widths": widths_of(student),
        }
        log(f"stage {i + 1}/{len(stages)}: pruned {'+'.join(stage['pruned'])} -> {stage['widths']}")
        if cfg.recovery_steps:
            stage["embed_mse"] = embed_mse(student, teacher, calib.inputs)
            set_arch(student, base)
            stage["recovery"] = recover(student, teacher_spec, cfg, seed=cfg.seed + i)
            stage["embed_mse_recovered"] = embed_mse(student, teacher, calib.inputs)
            log(f"  recovery: embedding MSE {stage['embed_mse']:.4g} -> {stage['embed_mse_recovered']:.4g}")
        stage["seconds"] = round(time.perf_counter() - t0, 2)
        report["stages"].append(stage)
    for p in student.parameters():
        p.requires_grad_(False)
    set_arch(student, base)
    report["widths_after"] = widths_of(student)
    report["encoder_params_after"] = encoder_params(student)
    return student.eval(), report


@torch.no_grad()
def embed_mse(model: Sam, teacher: Sam, inputs: list[torch.Tensor]) -> float:
    """Mean squared difference of the image embeddings of ``model`` and ``teacher`` over ``inputs``."""
    model.eval()
    errs = [torch.mean((model.encode_image(x).embed - teacher.encode_image(x).embed) ** 2) for x in inputs]
    return float(torch.stack(errs).mean())


def recover(student: Sam, teacher_spec: str, cfg: PruneConfig, seed: int) -> dict[str, float]:
    """Distils ``student`` (in place) from the teacher with ``leansam distill``; its last metrics."""
    from ..train.distill import DistillConfig, distill

    with tempfile.TemporaryDirectory(prefix="leansam-prune-") as tmp:
        start = Path(tmp) / "start"
        save_pruned(student, start, {})
        dcfg = DistillConfig(
            out=str(Path(tmp) / "run"),
            steps=cfg.recovery_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup=min(20, cfg.recovery_steps // 10),
            seed=seed,
            device=cfg.device,
            bf16=False,
            resume=False,
            progress=False,
            ckpt_every=cfg.recovery_steps,
            teacher=teacher_spec,
            student=str(start),
            mode=cfg.recovery_mode,
            data=cfg.recovery_data,
            cache_dir=cfg.teacher_cache,
            train_decoder=False,
        )
        last = distill(dcfg)
        state = torch.load(Path(dcfg.out) / "model.pt", map_location="cpu", weights_only=True)
    student.load_state_dict(state, strict=True)
    return last
