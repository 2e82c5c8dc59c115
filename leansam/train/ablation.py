"""Do the distillation modes close the student-teacher gap? (the table in docs/training.md)

    python -m leansam.train.ablation --teacher leansam_tiny_teacher:runs/tiny/teacher/model.pt \\
        --root runs/compare --steps 60 --eval-images 30

For each mode of :data:`leansam.train.distill.MODES` the same untrained student (``leansam_nano``
architecture: random encoder, prompt encoder / decoder copied from the teacher, seed 0) is
distilled for ``--steps`` steps on the teacher's training images; then student and teacher are
compared on held-out synthetic images (seed 1000): mean IoU between their masks for GT-box and
centre-click prompts, and the embedding MSE. The row "untrained" is the starting point.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .distill import MODES, DistillConfig, build_student, distill
from .evaluate import agreement
from .recipe import SEGMENTS, held_out
from .runner import write_json_file
from .train import load_spec


def compare_modes(
    teacher: str, root: str, steps: int, eval_images: int, modes: tuple[str, ...] = MODES
) -> list[dict]:
    """Runs the comparison; returns one row per mode (plus "untrained") and writes ``<root>/compare.json``."""
    t = load_spec(teacher).eval()
    src = held_out(eval_images)
    torch.manual_seed(0)
    untrained = build_student("leansam_nano", t)
    rows = [{"mode": "untrained", "steps": 0, **agreement(untrained, t, src)}]
    for mode in modes:
        cfg = DistillConfig(
            out=f"{root}/{mode}",
            teacher=teacher,
            student="leansam_nano",
            mode=mode,
            data=SEGMENTS[-1].data,
            steps=steps,
            batch_size=4 if mode in ("encoder", "sami") else 2,
            lr=2e-3,
            warmup=5,
            ckpt_every=max(1, steps),
            threads=torch.get_num_threads(),
            cache_dir=f"{root}/teacher_cache",
            seed=0,
            prompts_per_image=4,
        )
        distill(cfg)
        import leansam

        student = leansam.build_model("leansam_nano", checkpoint=f"{root}/{mode}/model.pt")
        rows.append({"mode": mode, "steps": steps, **agreement(student, t, src)})
    write_json_file(f"{root}/compare.json", rows)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    out = [
        "| mode | steps | box agreement (mIoU vs teacher) | point agreement | embedding MSE |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['mode']} | {r['steps']} | {r['box_agree']:.3f} | {r['point_agree']:.3f} | {r['embed_mse']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leansam.train.ablation")
    p.add_argument("--teacher", required=True, help="NAME[:CKPT]")
    p.add_argument("--root", default="runs/compare")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-images", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = compare_modes(a.teacher, a.root, a.steps, a.eval_images, tuple(a.modes.split(",")))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
