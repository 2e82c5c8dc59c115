"""Do the distillation modes close the student-teacher gap? (the table in docs/training.md)

    python -m leansam.train.ablation --teacher leansam_tiny --student leansam_nano_512 \\
        --root runs/compare --steps 300 --eval-images 30

For each mode of :data:`leansam.train.distill.MODES` the same untrained student (the ``--student``
architecture: random encoder, prompt encoder / decoder copied from the teacher, seed 0) is
distilled for ``--steps`` steps on the recipe's training data (its last segment's spec); then student and teacher are
compared on held-out synthetic images (seed 1000): mean IoU between their masks for GT-box and
centre-click prompts, the embedding MSE, and each model's own box / click mIoU against the ground
truth. The row "untrained" is the starting point. The results go to :data:`RESULTS` (and
``<root>/compare.json``); ``python -m leansam.train.recipe docs`` renders them into
docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..checkpoints import CheckpointError
from ..io import one_line
from ..registry import UnknownModelError
from .curves import read_metrics
from .distill import MODES, DistillConfig, build_student, distill
from .evaluate import agreement, evaluate_gt
from .recipe import EVAL_SETS, SEGMENTS, held_out
from .runner import write_json_file
from .train import load_spec

RESULTS = Path("docs/results/distillation_modes.json")
BEGIN, END = "<!-- distillation -->", "<!-- /distillation -->"


def teacher_sha256(spec: str) -> str | None:
    """sha256 of the teacher's weights file: ``NAME:CKPT``'s file, else the registry's recorded digest."""
    from ..checkpoints import sha256_file
    from ..registry import get_model_info

    name, _, ckpt = spec.partition(":")
    return sha256_file(ckpt) if ckpt else get_model_info(name).weights.sha256


def _row(mode: str, steps: int, model, teacher, src, metrics: Path | None) -> dict:
    gt = evaluate_gt(model, src)
    row = {
        "mode": mode,
        "steps": steps,
        **agreement(model, teacher, src),
        "box_miou": gt["box_miou"],
        "point_miou": gt["point_miou"],
    }
    if metrics is not None:
        row["cpu_hours"] = sum(read_metrics(metrics).get("cpu_seconds", [])) / 3600
    return row


def compare_modes(
    teacher: str,
    root: str,
    steps: int,
    eval_images: int,
    modes: tuple[str, ...] = MODES,
    student: str = "leansam_nano_512",
) -> dict:
    """Runs the comparison; returns the results (one row per mode, plus "untrained") and writes
    them to ``<root>/compare.json``.

    ``teacher``: ``NAME`` (its registered weights, e.g. the bundled ``leansam_tiny``) or
    ``NAME:CKPT``. ``student``: a registry name whose pipeline (input size, embedding grid) is the
    teacher's."""
    import leansam

    t = load_spec(teacher, pretrained=True).eval()  # the weights distill() loads too
    torch.manual_seed(0)
    untrained = build_student(student, t)  # first: a student of another pipeline stops here
    src = held_out(eval_images)
    teacher_gt = evaluate_gt(t, src)
    rows = [_row("untrained", 0, untrained, t, src, None)]
    data = SEGMENTS[-1].data
    for mode in modes:
        cfg = DistillConfig(
            out=f"{root}/{mode}",
            teacher=teacher,
            student=student,
            mode=mode,
            data=data,
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
        distilled = leansam.build_model(student, checkpoint=f"{root}/{mode}/model.pt")
        rows.append(_row(mode, steps, distilled, t, src, Path(cfg.out) / "metrics.csv"))
    res = {
        "teacher": teacher,
        "teacher_sha256": teacher_sha256(teacher),
        "teacher_gt": {"box_miou": teacher_gt["box_miou"], "point_miou": teacher_gt["point_miou"]},
        "student": student,
        "data": data,
        "eval": {
            "spec": f"the first {eval_images} images of `{EVAL_SETS['held_out']}`",
            "n_instances": teacher_gt["n_instances"],
        },
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    write_json_file(f"{root}/compare.json", res)
    return res


def markdown(res: dict) -> str:
    """The results as the docs/training.md block: a sentence naming the run, then the table."""
    out = [
        f"Teacher `{res['teacher']}` (weights sha256 `{str(res['teacher_sha256'])[:12]}...`; box / click "
        f"mIoU against the ground truth {res['teacher_gt']['box_miou']:.3f} / "
        f"{res['teacher_gt']['point_miou']:.3f}), student `{res['student']}`, data `{res['data']}`, "
        f"evaluated on {res['eval']['spec']} ({res['eval']['n_instances']} instances); "
        f"`{res['command']}`:",
        "",
        "| mode | steps | CPU hours | box agreement (mIoU vs teacher) | click agreement | embedding MSE "
        "| box mIoU (GT) | click mIoU (GT) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        cpu = f"{r['cpu_hours']:.2f}" if "cpu_hours" in r else ""
        out.append(
            f"| {r['mode']} | {r['steps']} | {cpu} | {r['box_agree']:.3f} | {r['point_agree']:.3f} "
            f"| {r['embed_mse']:.4f} | {r['box_miou']:.3f} | {r['point_miou']:.3f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leansam.train.ablation")
    p.add_argument("--teacher", required=True, help="NAME (its registered weights) or NAME:CKPT")
    p.add_argument("--student", default="leansam_nano_512", help="registry name (the teacher's pipeline)")
    p.add_argument("--root", default="runs/compare")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-images", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", default=str(RESULTS), help="results JSON (rendered into docs/training.md)")
    a = p.parse_args(argv)
    modes = tuple(a.modes.split(","))
    bad = [m for m in modes if m not in MODES]
    if bad or a.steps < 1 or a.eval_images < 1:
        what = (
            f"unknown modes {bad} (choose from {', '.join(MODES)})"
            if bad
            else "steps and eval images must be >= 1"
        )
        print(f"error: {what}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    try:
        res = compare_modes(a.teacher, a.root, a.steps, a.eval_images, modes, a.student)
    except (
        OSError,
        ValueError,
        UnknownModelError,
        CheckpointError,
    ) as e:  # unknown model, bad weights, other pipeline
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    res["command"] = "python -m leansam.train.ablation " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    write_json_file(a.out, res)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
