"""The recipe of the bundled default model ``leansam_tiny`` (run by ``scripts/train_default.sh``).

Stages (each resumable; each writes into ``<root>/<stage>``):

1. ``teacher``: ``leansam_tiny_teacher`` trained from scratch on rendered synthetic shapes
   (``synth:4000:0``, :data:`leansam.train.data.TINY_SYNTH`), SAM's promptable-segmentation loss.
2. ``student``: ``leansam_tiny`` distilled from it: its prompt encoder and mask decoder start as
   copies of the teacher's; the encoder is distilled (MSE on embeddings, MobileSAM), then the
   whole student is fine-tuned on the masks with the teacher's training loss.
3. ``eval``: held-out synthetic set (seed 1000), GT box and centre point, student and teacher;
   encoder latency against MobileSAM's; writes ``<root>/results.json``.
4. ``export``: copies the student weights to ``leansam/assets/leansam_tiny.pt`` and prints its sha256.

Usage::

    python -m leansam.train.recipe teacher --root runs/tiny        # (or under torchrun)
    python -m leansam.train.recipe student --root runs/tiny
    python -m leansam.train.recipe eval --root runs/tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .data import TINY_SYNTH, SynthSource
from .distill import DistillConfig, distill
from .evaluate import encoder_latency, evaluate_gt
from .runner import save_atomic, write_json_file
from .train import TrainConfig, train

TEACHER_DATA = "synth:4000:0"
EVAL_SEED = 1000
ASSET = "leansam_tiny.pt"
FINAL_STUDENT = "student_tune2"


def teacher_config(root: str, steps: int = 800) -> TrainConfig:
    """Stage 1: the teacher, from scratch."""
    return TrainConfig(
        out=f"{root}/teacher",
        model="leansam_tiny_teacher",
        data=TEACHER_DATA,
        steps=steps,
        batch_size=2,
        lr=2e-3,
        warmup=30,
        decoder_warmup=700,
        ckpt_every=25,
        prompts_per_image=8,
        box_fraction=0.7,
        correction_rounds=1,
        loss_res=256,
        threads=1,
        seed=0,
    )


def student_configs(
    root: str, enc_steps: int = 250, tune_steps: int = 250, tune2_steps: int = 400
) -> list[DistillConfig | TrainConfig]:
    """Stage 2: encoder distillation (MobileSAM) from the teacher, then fine-tuning on the masks.

    The student starts with the teacher's prompt encoder and mask decoder; its encoder is
    distilled (MSE on embeddings); then the whole student continues with the teacher's own
    promptable-segmentation training (SAM loss on ground-truth masks, lower LR: 250 steps, then
    400 more with a fresh warm-up + cosine schedule, ``student_tune2``). Batch sizes
    are per process; the documented run uses 2 processes (torchrun, gloo).
    """
    teacher = f"leansam_tiny_teacher:{root}/teacher/model.pt"
    distill_cfg = DistillConfig(
        out=f"{root}/student_encoder",
        mode="encoder",
        teacher=teacher,
        student="leansam_tiny",
        data=TEACHER_DATA,
        steps=enc_steps,
        batch_size=4,
        lr=3e-3,
        warmup=20,
        ckpt_every=50,
        threads=1,
        seed=1,
        cache_dir=f"{root}/teacher_cache",
    )
    tune_cfg = dataclasses.replace(
        teacher_config(root),
        out=f"{root}/student_tune",
        model=f"leansam_tiny:{root}/student_encoder/model.pt",
        steps=tune_steps,
        lr=5e-4,
        warmup=10,
        decoder_warmup=0,
        seed=2,
    )
    tune2_cfg = dataclasses.replace(
        tune_cfg,
        out=f"{root}/{FINAL_STUDENT}",
        model=f"leansam_tiny:{root}/student_tune/model.pt",
        steps=tune2_steps,
        seed=3,
    )
    return [distill_cfg, tune_cfg, tune2_cfg]


def held_out(n: int = 100) -> SynthSource:
    """The held-out evaluation set: ``n`` images of :data:`TINY_SYNTH` rendered with seed 1000."""
    return SynthSource(n, EVAL_SEED, TINY_SYNTH)


def evaluate_stage(root: str, n_images: int = 100, student_ckpt: str | None = None) -> dict:
    """Stage 3: held-out mIoU of student and teacher, and the encoder latency ratio vs MobileSAM."""
    import leansam

    student_ckpt = student_ckpt or f"{root}/{FINAL_STUDENT}/model.pt"
    student = leansam.build_model("leansam_tiny", checkpoint=student_ckpt)
    teacher = leansam.build_model("leansam_tiny_teacher", checkpoint=f"{root}/teacher/model.pt")
    src = held_out(n_images)
    res: dict = {
        "held_out": {"spec": f"synth:{n_images}:{EVAL_SEED}", "synth_config": dataclasses.asdict(TINY_SYNTH)},
        "student": evaluate_gt(student, src),
        "teacher": evaluate_gt(teacher, src),
    }
    mobile = leansam.build_model("mobile_sam", pretrained=False)
    t_student = encoder_latency(student, reps=20)
    t_teacher = encoder_latency(teacher, reps=10)
    t_mobile = encoder_latency(mobile, reps=5, warmup=1)
    res["latency_s"] = {
        "student_encoder": t_student,
        "teacher_encoder": t_teacher,
        "mobile_sam_encoder": t_mobile,
        "ratio_student_to_mobile_sam": t_student / t_mobile,
        "threads": torch.get_num_threads(),
    }
    res["params"] = {
        "student": sum(p.numel() for p in student.parameters()),
        "student_encoder": sum(p.numel() for p in student.image_encoder.parameters()),
        "teacher": sum(p.numel() for p in teacher.parameters()),
    }
    write_json_file(f"{root}/results.json", res)
    return res


def results_markdown(res: dict) -> str:
    """The held-out table of docs/training.md from ``results.json``."""
    names = {1: "ellipse", 2: "polygon", 3: "blob", 4: "thin", 5: "holed"}
    st, te, lat = res["student"], res["teacher"], res["latency_s"]
    lines = [
        f"Held-out: {st['n_images']} images, {st['n_instances']} instances (`{res['held_out']['spec']}`).",
        "",
        "| | student `leansam_tiny` | teacher |",
        "|---|---|---|",
        f"| mIoU, GT box | **{st['box_miou']:.3f}** | {te['box_miou']:.3f} |",
        f"| mIoU, centre point | **{st['point_miou']:.3f}** | {te['point_miou']:.3f} |",
    ]
    for c, d in st["per_category"].items():
        t = te["per_category"][c]
        lines.append(
            f"| {names.get(int(c), c)} (n={d['n']}): box / point | {d['box_miou']:.3f} / {d['point_miou']:.3f} "
            f"| {t['box_miou']:.3f} / {t['point_miou']:.3f} |"
        )
    p = res["params"]
    lines += [
        f"| parameters (image encoder) | {p['student']:,} ({p['student_encoder']:,}) | {p['teacher']:,} |",
        f"| image-encoder latency, 1 image, {lat['threads']} thread(s) | {lat['student_encoder'] * 1e3:.1f} ms "
        f"| {lat['teacher_encoder'] * 1e3:.1f} ms |",
        "",
        f"MobileSAM's image encoder (`build_model('mobile_sam', pretrained=False)`, 1024 px) took "
        f"{lat['mobile_sam_encoder'] * 1e3:.0f} ms in the same run: the student's encoder needs "
        f"**{lat['ratio_student_to_mobile_sam']:.4f}x** of it (target <= 0.25x).",
    ]
    return "\n".join(lines)


def export_stage(root: str, src: str | None = None, dest: str | None = None) -> str:
    """Stage 4: writes the student weights (fp32 state_dict) into the package; returns their sha256."""
    from ..checkpoints import read_state_dict, sha256_file

    src = src or f"{root}/{FINAL_STUDENT}/model.pt"
    dest = dest or str(Path(__file__).resolve().parent.parent / "assets" / ASSET)
    state = read_state_dict(src)
    save_atomic({k: v.contiguous() for k, v in state.items()}, dest)
    return sha256_file(dest)


def example_alpha(shape: tuple[int, int]):
    """The anti-aliased coverage (H x W uint8, 0..255) of the ellipse painted into example.jpg;
    ``>= 128`` is its ground-truth mask (bounding box (60, 60, 330, 300), contains (200, 180))."""
    import cv2
    import numpy as np

    sub = 16  # 4 bits of subpixel precision
    alpha = np.zeros(shape, np.uint8)
    cv2.ellipse(alpha, (195 * sub, 180 * sub), (135 * sub, 120 * sub), 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    return alpha


def make_example(dest: str | Path | None = None, seed: int = 11) -> Path:
    """Writes ``leansam/assets/example.jpg``: a 400 x 360 synthetic scene for ``make demo``.

    A rendered ``leansam.data.synth`` scene (seed ``seed``, image 0) with one shaded ellipse
    painted on top whose bounding box is (60, 60, 330, 300) and which contains the demo click
    (200, 180): ``leansam segment leansam/assets/example.jpg --box 60,60,330,300 --point 200,180``.
    """
    import numpy as np
    from PIL import Image

    from ..data.synth import render_sample

    cfg = dataclasses.replace(
        TINY_SYNTH, min_side=400, max_side=400, max_aspect=1.12, min_objects=6, max_objects=9
    )
    img = None
    for i in range(50):  # first landscape 400 x 360-ish scene
        s = render_sample(i, seed, cfg)
        if s.image.shape[1] == 400 and 340 <= s.image.shape[0] <= 380:
            img = s.image.copy()
            break
    if img is None:
        img = render_sample(0, seed, cfg).image[:360, :400].copy()
    h, w = img.shape[:2]
    a = example_alpha((h, w)).astype(np.float32)[..., None] / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = np.clip(1.15 - 0.5 * ((xx - 150) ** 2 + (yy - 130) ** 2) ** 0.5 / 200, 0.55, 1.15)[..., None]
    colour = np.array([222, 120, 40], np.float32) * shade
    out = img.astype(np.float32) * (1 - a) + colour * a
    rng = np.random.default_rng(seed)
    out = np.clip(out + rng.normal(0, 3, out.shape), 0, 255).astype(np.uint8)
    dest = Path(dest) if dest else Path(__file__).resolve().parent.parent / "assets" / "example.jpg"
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(dest, quality=90)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leansam.train.recipe")
    p.add_argument("stage", choices=["teacher", "student", "eval", "export", "curves", "all"])
    p.add_argument("--root", default="runs/tiny")
    p.add_argument("--steps", type=int, default=None, help="teacher steps (default 800)")
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    stages = ["teacher", "student", "eval", "export", "curves"] if a.stage == "all" else [a.stage]
    for stage in stages:
        if stage == "teacher":
            train(teacher_config(a.root) if a.steps is None else teacher_config(a.root, a.steps))
        elif stage == "student":
            for cfg in student_configs(a.root):
                distill(cfg) if isinstance(cfg, DistillConfig) else train(cfg)
        elif stage == "eval":
            print(json.dumps(evaluate_stage(a.root, a.eval_images), indent=2))
        elif stage == "export":
            print(f"sha256 {export_stage(a.root)}")
        elif stage == "curves":
            from .curves import plot_runs

            plot_runs(a.root, "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
