"""The default model's results section of docs/training.md, rendered from its results file.

``python -m leansam.train.recipe docs`` replaces the text between ``<!-- results -->`` and
``<!-- /results -->`` with :func:`results_markdown` of ``docs/results/default_model.json`` (written
by ``python -m leansam.train.recipe eval``); a test checks that the page and the file agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.synth import CATEGORIES

BEGIN, END = "<!-- results -->", "<!-- /results -->"

#: Targets of the default model: set -> (box mIoU, centre-click mIoU); segment-everything recall.
TARGETS = {"held_out": (0.90, 0.75), "out_of_style": (0.80, 0.65)}
EVERYTHING_RECALL_TARGET = 0.70
SET_NAMES = {"held_out": "held-out", "out_of_style": "out-of-style", "tiny": "easy (`tiny`)"}


def _verdict(value: float, target: float) -> str:
    return f"{value:.3f} ({'met' if value >= target else 'not met'}, target {target:.2f})"


def _sets_table(sets: dict) -> list[str]:
    lines = [
        "| set | images / instances | box mIoU | centre-click mIoU | fill-the-box baseline |",
        "|---|---|---|---|---|",
    ]
    for name, r in sets.items():
        box, click = f"{r['box_miou']:.3f}", f"{r['point_miou']:.3f}"
        if name in TARGETS:
            box, click = (
                _verdict(r["box_miou"], TARGETS[name][0]),
                _verdict(r["point_miou"], TARGETS[name][1]),
            )
        lines.append(
            f"| {SET_NAMES.get(name, name)} `{r['spec']}` | {r['n_images']} / {r['n_instances']} "
            f"| {box} | {click} | {r['fill_box_miou']:.3f} |"
        )
    return lines


def _category_table(r: dict) -> list[str]:
    lines = ["| kind (held-out) | n | box | click | fill-the-box |", "|---|---|---|---|---|"]
    for cid, d in r["per_category"].items():
        name = CATEGORIES.get(int(cid), str(cid))
        lines.append(
            f"| {name} | {d['n']} | {d['box_miou']:.3f} | {d['point_miou']:.3f} | {d['fill_box_miou']:.3f} |"
        )
    return lines


def _everything_lines(ev: dict) -> list[str]:
    h = ev["held_out"]
    return [
        f"Segment-everything with default settings on the first {h['images']} held-out images: "
        f"{h['recall']:.3f} of {h['n_objects']} objects found at IoU >= 0.5 "
        f"({'met' if h['recall'] >= EVERYTHING_RECALL_TARGET else 'not met'}, target "
        f"{EVERYTHING_RECALL_TARGET:.2f}), {h['masks_per_image']:.1f} masks per image; "
        f"{ev['example_masks']} masks on the bundled example image.",
    ]


def _training_table(log: list[dict]) -> list[str]:
    lines = [
        "| segment | data | steps done / planned | images seen | wall hours | CPU hours (logged steps) "
        "| loss, last 100 steps | training IoU, last 100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in log:
        iou = "" if s["train_iou_r0_last100"] is None else f"{s['train_iou_r0_last100']:.3f}"
        lines.append(
            f"| {s['segment']} | `{s['data']}` | {s['steps_done']} / {s['steps_planned']} | {s['images_seen']:,} "
            f"| {s['wall_hours']:.2f} | {s['cpu_hours_logged']:.2f} ({s['steps_with_cpu_logged']}) "
            f"| {s['loss_last100']:.4f} | {iou} |"
        )
    return lines


def results_markdown(res: dict) -> str:
    """The results block of docs/training.md for a ``default_model.json`` dict."""
    lat, p = res["latency_s"], res["params"]
    lines = [f"Measured by `{res['command']}` on `{res['weights']}`.", ""]
    lines += _sets_table(res["sets"])
    lines += ["", *_category_table(res["sets"]["held_out"]), "", *_everything_lines(res["everything"]), ""]
    lines += [
        f"Parameters: {p['model']:,} ({p['image_encoder']:,} in the image encoder). Image encoder, 1 image, "
        f"{lat['threads']} thread(s): {lat['encoder'] * 1e3:.1f} ms; MobileSAM's (random weights, 1024 px) "
        f"{lat['mobile_sam_encoder'] * 1e3:.0f} ms in the same run: **{lat['ratio_to_mobile_sam']:.4f}x** "
        "(target <= 0.25x).",
        "",
        "Training log (from each segment's `metrics.csv`; CPU hours count only the steps that logged them):",
        "",
        *_training_table(res["training"]),
    ]
    return "\n".join(lines)


def render_page(page: str, res: dict) -> str:
    """``page`` with its results block replaced by :func:`results_markdown` of ``res``."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"the page has no {BEGIN} ... {END} block")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{results_markdown(res)}\n{END}{tail}"


def write_training_doc(results: Path, page: Path) -> None:
    """Regenerates the results block of ``page`` from the ``results`` JSON file."""
    res = json.loads(results.read_text(encoding="utf-8"))
    page.write_text(render_page(page.read_text(encoding="utf-8"), res), encoding="utf-8")
