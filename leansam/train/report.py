"""The default model's results section of docs/training.md, rendered from its results file.

``python -m leansam.train.recipe docs`` replaces the text between ``<!-- results -->`` and
``<!-- /results -->`` with :func:`results_markdown` of ``docs/results/default_model.json`` (written
by ``python -m leansam.train.recipe eval``), and the text between ``<!-- everything-defaults -->``
and ``<!-- /everything-defaults -->`` with :func:`calibration_markdown` of
``docs/results/everything_calibration.json`` (written by ``... calibrate-everything``), and the
text between ``<!-- probes -->`` and ``<!-- /probes -->`` with the checkpoint table of
``docs/results/training_probes.json`` (written by ``... probe``), and the text between
``<!-- distillation -->`` and ``<!-- /distillation -->`` with the table of
``docs/results/distillation_modes.json`` (written by ``python -m leansam.train.ablation``); a test
checks that the page and the files agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.synth import CATEGORIES
from ..data.synth.config import KIND_IDS
from .ablation import BEGIN as DIST_BEGIN
from .ablation import END as DIST_END
from .ablation import markdown as distillation_markdown
from .probe import BEGIN as PROBES_BEGIN
from .probe import END as PROBES_END
from .probe import probes_markdown

BEGIN, END = "<!-- results -->", "<!-- /results -->"
CAL_BEGIN, CAL_END = "<!-- everything-defaults -->", "<!-- /everything-defaults -->"

#: Targets of the default model: set -> (box mIoU, centre-click mIoU); segment-everything recall.
TARGETS = {"held_out": (0.90, 0.75), "out_of_style": (0.80, 0.65)}
EVERYTHING_RECALL_TARGET = 0.70
SET_NAMES = {"held_out": "held-out", "out_of_style": "out-of-style", "tiny": "easy (`tiny`)"}


def _verdict(value: float, target: float) -> str:
    return f"{value:.3f} ({'met' if value >= target else 'not met'}, target {target:.2f})"


def _sets_table(sets: dict) -> list[str]:
    lines = [
        "| set | images / instances | box mIoU | centre-click mIoU | fill-the-box baseline "
        "| background click |",
        "|---|---|---|---|---|---|",
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
            f"| {box} | {click} | {r['fill_box_miou']:.3f} | {_optional(r.get('background_miou'))} |"
        )
    return lines


def _optional(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def _category_table(r: dict) -> list[str]:
    lines = ["| kind (held-out) | n | box | click | fill-the-box |", "|---|---|---|---|---|"]
    for cid, d in r["per_category"].items():
        name = CATEGORIES.get(int(cid), str(cid))
        lines.append(
            f"| {name} | {d['n']} | {d['box_miou']:.3f} | {d['point_miou']:.3f} | {d['fill_box_miou']:.3f} |"
        )
    return lines


def _fmt_options(o: dict) -> str:
    keys = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh")
    return " / ".join(f"{o[k]:g}" for k in keys)


def _everything_lines(ev: dict) -> list[str]:
    h, sam, ceil = ev["held_out"], ev["held_out_sam_defaults"], ev["ceiling"]
    ex, exs = ev["example"], ev["example_sam_defaults"]
    met = "met" if h["recall"] >= EVERYTHING_RECALL_TARGET else "not met"
    click = ceil["centre_click"]
    return [
        f"Segment-everything on the first {h['images']} held-out images ({h['n_objects']} objects; "
        f"`{ev['command']}`): an object is found when a mask reaches IoU >= 0.5 with it; precision = "
        "masks matched one-to-one / masks.",
        "",
        "| thresholds | pred IoU / stability / offset / box NMS | recall | precision | masks per image |",
        "|---|---|---|---|---|",
        f"| the model's defaults | {_fmt_options(h['options'])} | {h['recall']:.3f} ({met}, target "
        f"{EVERYTHING_RECALL_TARGET:.2f}) | {h['precision']:.3f} | {h['masks_per_image']:.1f} |",
        f"| SAM's defaults | {_fmt_options(sam['options'])} | {sam['recall']:.3f} | {sam['precision']:.3f} "
        f"| {sam['masks_per_image']:.1f} |",
        "",
        f"Ceilings on the same images: some unfiltered mask of the 32 x 32 grid reaches IoU 0.5 for "
        f"{ceil['grid_masks_unfiltered']:.3f} of the objects (no threshold or NMS setting can find more); "
        f"the centre click alone for {click['best_predicted']:.3f} (its highest-scored mask) and "
        f"{click['best_of_3']:.3f} (the best of its three).",
        "",
        f"The bundled example image ({ex['objects']} objects): {ex['masks']} masks finding {ex['found']} "
        f"objects with the model's defaults; {exs['masks']} masks finding {exs['found']} with SAM's.",
    ]


def calibration_markdown(cal: dict, rows: int = 10) -> str:
    """The segment-everything defaults block of docs/training.md for an ``everything_calibration.json``."""
    gen, rep, ceil = cal["generator"], cal["replay"], cal["ceiling"]
    c = cal["chosen"]
    lines = [
        f"`{cal['model']}` declares: predicted IoU > {c['pred_iou_thresh']:g}, stability >= "
        f"{c['stability_score_thresh']:g} at offset {c['stability_score_offset']:g}, box NMS "
        f"{c['box_nms_thresh']:g} (official models: SAM's 0.88, 0.95 at 1.0, 0.7).",
        "",
        f"Chosen by `{cal['command']}` on the validation split `{cal['validation']['spec']}` "
        f"({cal['validation']['n_objects']} objects, {cal['n_settings']} settings, grid "
        f"{cal['points_per_side']} x {cal['points_per_side']}): {cal['rule']}.",
        "",
        "| thresholds (validation) | pred IoU / stability / offset / box NMS | recall | precision "
        "| masks per image | replayed recall / precision |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in (("SAM's defaults", "sam_defaults"), ("chosen", "chosen")):
        g, r = gen[key], rep[key]
        lines.append(
            f"| {name} | {_fmt_options(g['options'])} | {g['recall']:.3f} | {g['precision']:.3f} "
            f"| {g['masks_per_image']:.1f} | {r['recall']:.3f} / {r['precision']:.3f} |"
        )
    front = cal["pareto"]
    step = max(1, -(-len(front) // rows))
    lines += [
        "",
        f"Recall against precision (replayed; every {step}th setting of the {len(front)} on the Pareto front, "
        "all in the results file):",
        "",
        "| pred IoU / stability / offset / box NMS | recall | precision | masks per image |",
        "|---|---|---|---|",
    ]
    for r in front[::step]:
        lines.append(
            f"| {_fmt_options(r)} | {r['recall']:.3f} | {r['precision']:.3f} | {r['masks_per_image']:.1f} |"
        )
    lines += [
        "",
        f"Other options with the chosen thresholds (the generator on the first {cal['levers']['images']} "
        "validation images):",
        "",
        "| change | recall | precision | masks per image |",
        "|---|---|---|---|",
    ]
    names = sorted(k for k in cal["levers"] if k not in ("images", "none"))
    for name in ["none", *names]:
        r = cal["levers"][name]
        lines.append(f"| {name} | {r['recall']:.3f} | {r['precision']:.3f} | {r['masks_per_image']:.1f} |")
    click = ceil["centre_click"]
    lines += [
        "",
        f"Ceilings on the validation split: unfiltered grid masks {ceil['grid_masks_unfiltered']:.3f}; "
        f"centre click {click['best_predicted']:.3f} (highest-scored mask), {click['best_of_3']:.3f} (best of three).",
    ]
    if "hierarchical" in cal:
        lines += _hierarchical_markdown(cal["hierarchical"])
    return "\n".join(lines)


def _hierarchical_markdown(h: dict) -> list[str]:
    """The hierarchical sampling part of the calibration block (its threshold sweep)."""
    lines = [
        "",
        f"Hierarchical sampling's confident logit: **{h['chosen']:g}** (TinySAM's: 8.5). Chosen by "
        f"`{h['command']}` on `{h['validation']}` ({h['objects']} objects, the thresholds above): {h['rule']}. "
        f"The grid decodes {h['grid']['prompts']} prompts and finds {h['grid']['recall']:.3f} of the objects; "
        f"the real generator with the chosen value finds {h['generator']['recall']:.3f} "
        f"({h['generator']['masks_per_image']:.1f} masks per image).",
        "",
        "| confident logit | prompts decoded | cut | recall | loss (points) |",
        "|---|---|---|---|---|",
    ]
    for r in h["thresholds"]:
        lines.append(
            f"| {r['high_score_thresh']:g} | {r['prompts']} | {100 * r['prompt_cut']:.0f}% | {r['recall']:.3f} "
            f"| {r['recall_loss_points']:.1f} |"
        )
    return lines


def _training_table(log: list[dict]) -> list[str]:
    lines = [
        "| segment | data | steps done / planned | images seen | wall hours | CPU hours (logged steps) "
        "| loss, last 100 steps | training IoU, last 100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in log:
        iou = "" if s["train_iou_r0_last100"] is None else f"{s['train_iou_r0_last100']:.3f}"
        where = "" if s.get("trained_on", "cpu") == "cpu" else f" ({s['trained_on']})"
        lines.append(
            f"| {s['segment']}{where} | `{s['data']}` | {s['steps_done']} / {s['steps_planned']} | {s['images_seen']:,} "
            f"| {s['wall_hours']:.2f} | {s['cpu_hours_logged']:.2f} ({s['steps_with_cpu_logged']}) "
            f"| {s['loss_last100']:.4f} | {iou} |"
        )
    return lines


def _limit_lines(lim: dict) -> list[str]:
    sides = lim["sides"]
    low = str(lim["low_res_side"])
    cells = ", ".join(
        f"{int(k)} x {int(k)}{' (this model)' if k == low else ''}: **{v['miou']:.3f}**"
        for k, v in sorted(sides.items(), key=lambda kv: int(kv[0]))
    )
    thin = str(KIND_IDS["thin"])
    return [
        "How well masks of each low-res size can fit the held-out objects at all: each ground-truth mask "
        "is area-averaged into the low-res grid and brought back by the model's postprocess. Mean IoU "
        f"against itself, {cells}; for thin objects at this model's size "
        f"{sides[low]['per_category'].get(thin, float('nan')):.3f}.",
        "",
    ]


def _fill_table(r: dict) -> list[str]:
    if "per_fill" not in r:  # a results file without the breakdown
        return []
    lines = [
        "| share of its box the object covers (held-out) | n | box | click | fill-the-box |",
        "|---|---|---|---|---|",
    ]
    for bucket, d in r["per_fill"].items():
        lines.append(
            f"| {bucket} | {d['n']} | {d['box_miou']:.3f} | {d['point_miou']:.3f} | {d['fill_box_miou']:.3f} |"
        )
    return [*lines, ""]


def results_markdown(res: dict) -> str:
    """The results block of docs/training.md for a ``default_model.json`` dict."""
    lat, p = res["latency_s"], res["params"]
    lines = [f"Measured by `{res['command']}` on `{res['weights']}`.", ""]
    lines += _sets_table(res["sets"])
    held = res["sets"]["held_out"]
    lines += ["", *_category_table(held), "", *_fill_table(held), *_everything_lines(res["everything"]), ""]
    if "mask_resolution_limit" in res:
        lines += _limit_lines(res["mask_resolution_limit"])
    lines += [
        f"Parameters: {p['model']:,} ({p['image_encoder']:,} in the image encoder). Image encoder, 1 image, "
        f"{lat['threads']} thread(s): {lat['encoder'] * 1e3:.1f} ms; MobileSAM's (random weights, 1024 px) "
        f"{lat['mobile_sam_encoder'] * 1e3:.0f} ms in the same run: **{lat['ratio_to_mobile_sam']:.4f}x** "
        "(target <= 0.25x).",
        "",
        "Training log (from each segment's `metrics.csv`; wall hours include the times training was paused "
        "for other work, CPU hours do not and count only the steps that logged them):",
        "",
        *_training_table(res["training"]),
    ]
    return "\n".join(lines)


def replace_block(page: str, text: str, begin: str = BEGIN, end: str = END) -> str:
    """``page`` with the text between ``begin`` and ``end`` replaced by ``text``."""
    if begin not in page or end not in page:
        raise ValueError(f"the page has no {begin} ... {end} block")
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


def render_page(
    page: str,
    res: dict,
    calibration: dict | None = None,
    probes: dict | None = None,
    distillation: dict | None = None,
) -> str:
    """``page`` with its results block replaced by :func:`results_markdown` of ``res``; with
    ``calibration``, its segment-everything defaults block by :func:`calibration_markdown`; with
    ``probes``, its checkpoint block by :func:`~leansam.train.probe.probes_markdown`; with
    ``distillation``, its distillation-modes block by :func:`~leansam.train.ablation.markdown`."""
    page = replace_block(page, results_markdown(res))
    if calibration is not None:
        page = replace_block(page, calibration_markdown(calibration), CAL_BEGIN, CAL_END)
    if probes is not None:
        page = replace_block(page, probes_markdown(probes, res["sets"]), PROBES_BEGIN, PROBES_END)
    if distillation is not None:
        page = replace_block(page, distillation_markdown(distillation), DIST_BEGIN, DIST_END)
    return page


def _read(path: Path | None) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None


def write_training_doc(
    results: Path,
    page: Path,
    calibration: Path | None = None,
    probes: Path | None = None,
    distillation: Path | None = None,
) -> None:
    """Regenerates the results block of ``page`` from the ``results`` JSON file (and the
    segment-everything defaults block from the ``calibration`` JSON file, the checkpoint block
    from the ``probes`` JSON file, the distillation-modes block from the ``distillation`` JSON
    file, where given and present)."""
    res = _read(results)
    extra = (_read(calibration), _read(probes), _read(distillation))
    page.write_text(render_page(page.read_text(encoding="utf-8"), res, *extra), encoding="utf-8")
