"""Segment-everything benchmarks (issue #5): speed against the official generator, prompts saved by
TinySAM's hierarchical sampling, and peak memory of large point grids.

    python -m benchmarks.everything [--runs 3] [--quick] [--sections speed,hierarchical,memory]

1. ``speed``: MobileSAM with the deterministic stand-in weights of shared/parity on the fixture
   image (480 x 640). leansam's ``grid`` 32 x 32 against the official ``SamAutomaticMaskGenerator``
   (PyPI ``mobilesam-mirror``, imported through tests/oracles.py) with the same weights, image and
   options, timed in alternation. Forward hooks split every run into image encoder, mask decoder,
   mask upscaling and the rest; "after the encoder" is the run's total minus its encoder time. The
   two mask sets are compared (count, masks matched by prompt, their IoU).
2. ``hierarchical``: the bundled ``leansam_tiny`` on the first 40 held-out synthetic images
   (``leansam.train.recipe.held_out``, seed 1000), with the model's registered defaults and with
   the looser ``moderate`` filters (:data:`HIER_SETTINGS`): prompts decoded by ``grid`` and
   ``hierarchical`` per image and in total, the share of the grid's masks that hierarchical keeps
   (IoU >= 0.5 / 0.75), ground-truth recall, time.
3. ``memory``: peak RSS of one ``generate`` call in a fresh process (16 / 32 / 64 points per side,
   1024 x 1024 image), leansam with MobileSAM stand-in weights and with ``leansam_tiny``, and the
   official generator.

``run`` writes ``docs/results/everything.json`` (sections run earlier are kept), ``render`` returns
the Markdown section. Needs the test extra (official package). Every section records the machine
and the load average, because the machine may be shared.
"""

from __future__ import annotations

__all__ = ["main", "render", "run", "targets"]

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.agreement import compare_records
from benchmarks.everything_page import render, targets
from benchmarks.weights import record_bundled, weights_sha256
from leansam.bench.timing import StageTimer

RESULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "results" / "everything.json"
SECTIONS = ("speed", "hierarchical", "memory")

# Random stand-in weights predict IoU in about [-0.5, 0.15] and soft masks whose boxes are the
# whole image, so segment_anything's defaults (0.88 / 0.95) keep nothing. On the 32 x 32 grid these
# keep about 9% of the masks by IoU (0.0 would switch the filter off) and about 7% after the stability
# filter (offset 0.1, as in tests/everything/test_parity_vit_b.py); box NMS at 1.0 keeps the identical
# whole-image boxes from collapsing into one mask.
SPEED_OPTS: dict[str, Any] = {
    "points_per_batch": 64,
    "pred_iou_thresh": 0.01,
    "stability_score_thresh": 0.55,
    "stability_score_offset": 0.1,
    "box_nms_thresh": 1.0,
}

# Memory rows keep fewer masks (IoU above 0.1: about 1% of them) so that the stored results, which
# are large for the stand-in weights' fragmented masks, do not hide the working memory.
MEMORY_OPTS: dict[str, Any] = {**SPEED_OPTS, "pred_iou_thresh": 0.1}

# leansam_tiny's logits rarely exceed 1-3 and its predicted IoU 0.7, so TinySAM's defaults
# (IoU 0.88, stability 0.95 at offset 1.0, confident logit 8.5) keep no mask at all. "defaults" is
# what a user gets: the model's registered thresholds, confident logit included (calibrated on the
# validation split); "moderate" was chosen on training-seed images (synth seed 0). Neither looked at
# the held-out set.
HIER_SETTINGS: dict[str, dict[str, float]] = {
    "defaults": {},
    "moderate": {
        "pred_iou_thresh": 0.2,
        "stability_score_thresh": 0.5,
        "stability_score_offset": 0.25,
        "high_score_thresh": 0.5,
    },
}
HIER_SOURCES = {
    "defaults": "the model's registered defaults (python -m leansam.train.recipe calibrate-everything)",
    "moderate": "chosen on training-seed images",
}
TINYSAM_DEFAULTS = {
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "high_score_thresh": 8.5,
}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _machine() -> dict[str, Any]:
    from leansam.bench.timing import machine_fingerprint

    return machine_fingerprint().to_dict()


# --- the official generator ----------------------------------------------------------------------


def _batched_nms_vectorised(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` semantics (boxes N x 4 XYXY), for the official generator.

    tests/oracles.py stubs NMS with a pure-Python pair loop (fine for correctness, minutes for a
    few hundred boxes); torchvision's compiled NMS is an O(N^2) pass, which this matches in cost:
    one N x N IoU matrix, then a greedy pass over its rows. Written here, independent of leansam.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    b = boxes.double() + (idxs.double() * (boxes.double().max() + 1))[:, None]  # categories apart
    order = torch.argsort(scores, descending=True, stable=True)
    b = b[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    over = (inter / (area[:, None] + area[None, :] - inter) > iou_threshold).numpy()
    removed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64)]


def _official_module() -> Any:
    """The official MobileSAM package, with the vectorised NMS in its generator."""
    from tests import oracles

    ms = oracles.mobile_sam()
    import mobile_sam.automatic_mask_generator as amg

    amg.batched_nms = _batched_nms_vectorised
    return ms


def _mobile_sam_models(ckpt: Path, which: tuple[str, ...] = ("leansam", "official")) -> dict[str, Any]:
    import leansam

    out: dict[str, Any] = {}
    if "leansam" in which:
        out["leansam"] = leansam.build_model("mobile_sam", checkpoint=ckpt).eval()
    if "official" in which:
        # eval() before use: TinyViT caches its attention biases in eval mode.
        out["official"] = _official_module().sam_model_registry["vit_t"](checkpoint=str(ckpt)).eval()
    return out


# --- speed ---------------------------------------------------------------------------------------


def _instrument(model: Any) -> StageTimer:
    """Times the image encoder, the mask decoder and the upscaling of masks to the image size."""
    stages = StageTimer()
    stages.module("encoder", model.image_encoder)
    if hasattr(model, "decode_confident"):
        # leansam: the generator's one call per batch (prompt encoder, a few tokens, included; the
        # decoder's upscaling only for prompts that keep a mask).
        stages.method("decoder", model, "decode_confident")
    else:
        stages.module("decoder", model.mask_decoder)
    stages.method("upscale", model, "postprocess_masks")
    return stages


def speed(runs: int = 3, points_per_side: int = 32) -> dict[str, Any]:
    """leansam grid vs the official generator on MobileSAM stand-in weights (see the module docstring)."""
    from leansam.bench.timing import measure_interleaved
    from leansam.everything import AutomaticMaskGenerator
    from tests import parity as P

    load_before = _load()
    image = P.load_case("mobile_sam")["image"]
    with tempfile.TemporaryDirectory() as d:
        models = _mobile_sam_models(P.write_stand_in_checkpoint("mobile_sam", Path(d) / "mobile_sam.pt"))
    ms = _official_module()
    opts = {"points_per_side": points_per_side, **SPEED_OPTS}
    gens = {
        "leansam": AutomaticMaskGenerator(models["leansam"], "grid", **opts),
        "official": ms.SamAutomaticMaskGenerator(models["official"], **opts),
    }
    stages = {k: _instrument(m) for k, m in models.items()}
    splits: dict[str, list[dict[str, float]]] = {k: [] for k in gens}
    outputs: dict[str, list[dict[str, Any]]] = {}

    def timed(name: str) -> Callable[[], None]:
        def call() -> None:
            stages[name].take()
            t, c = time.perf_counter(), time.process_time()
            outputs[name] = gens[name].generate(image)
            split = stages[name].take()
            split["total"] = time.perf_counter() - t
            # CPU time of all of this process's threads: less sensitive to other jobs than wall time.
            split["cpu"] = time.process_time() - c
            splits[name].append(split)

        return call

    fns = {k: timed(k) for k in gens}
    for fn in fns.values():  # warm-up pair; its outputs are the ones compared
        fn()
    agreement = compare_records(outputs["leansam"], outputs["official"], opts)
    timings = measure_interleaved(fns, runs=runs, warmup=0)
    res: dict[str, Any] = {
        "machine": _machine(),
        "load_before": load_before,
        "load_after": _load(),
        "image": "shared/parity/mobile_sam/case.npz image, 480 x 640",
        "weights": "mobile_sam stand-in (shared/parity)",
        "options": opts,
        "points_per_side": points_per_side,
        "prompts": points_per_side**2,
        "official_nms": "vectorised torchvision-semantics NMS (the tests/oracles.py stub is a Python pair loop)",
        "agreement": agreement,
        "warmup_split_s": {k: v[0] for k, v in splits.items()},
        "leansam_stats_last_run": gens["leansam"].last_stats.to_dict(),
    }
    for k in gens:
        rows = splits[k][1:]
        res[k] = {
            **timings[k].to_dict(),
            "split_s": rows,
            "after_encoder_runs_s": [r["total"] - r.get("encoder", 0.0) for r in rows],
            "official_floor_runs_s": [
                r.get("encoder", 0) + r.get("decoder", 0) + r.get("upscale", 0) for r in rows
            ],
        }
    res["ratios"] = _speed_ratios(res)
    return res


def _speed_ratios(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """leansam / official per run (end to end, CPU time, after the encoder, per stage) and medians."""
    ratios = {
        "end_to_end": [a / b for a, b in zip(res["leansam"]["runs_s"], res["official"]["runs_s"])],
        "end_to_end_cpu_time": [
            a["cpu"] / b["cpu"] for a, b in zip(res["leansam"]["split_s"], res["official"]["split_s"])
        ],
        "after_encoder": [
            a / b
            for a, b in zip(res["leansam"]["after_encoder_runs_s"], res["official"]["after_encoder_runs_s"])
        ],
        # Against the official encoder + decoder + upscaling alone (all its filtering, RLE and
        # bookkeeping left out): a bound that does not depend on how fragmented the masks are.
        "end_to_end_vs_official_floor": [
            a / b for a, b in zip(res["leansam"]["runs_s"], res["official"]["official_floor_runs_s"])
        ],
    }
    for part in ("encoder", "decoder", "upscale"):
        ratios[part] = [
            a.get(part, 0.0) / b[part] for a, b in zip(res["leansam"]["split_s"], res["official"]["split_s"])
        ]
    return {k: {"per_run": v, "median": float(np.median(v))} for k, v in ratios.items()}


# --- hierarchical --------------------------------------------------------------------------------


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of K x H x W and L x H x W bool masks -> K x L."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b))
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    return inter / (fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter).clamp(min=1)


def _kept_share(best: torch.Tensor, thr: float) -> float | None:
    return float((best >= thr).float().mean()) if len(best) else None


def _everything_once(
    model: Any, strategy: str, image: np.ndarray, opts: dict[str, Any]
) -> tuple[Any, Any, float]:
    from leansam.everything import AutomaticMaskGenerator

    gen = AutomaticMaskGenerator(model, strategy, points_per_side=32, **opts)
    t = time.perf_counter()
    data = gen.generate_maskset(image)
    return data, gen.last_stats, time.perf_counter() - t


def _resolved(model: Any, setting: dict[str, float]) -> dict[str, float]:
    """The thresholds the hierarchical generator runs with for ``setting`` (the model's fill the rest)."""
    from leansam.everything import AutomaticMaskGenerator
    from leansam.everything.options import SAM_DEFAULTS

    o = AutomaticMaskGenerator(model, "hierarchical", points_per_side=32, **setting).options
    return {k: getattr(o, k) for k in (*SAM_DEFAULTS, "high_score_thresh")}


def hierarchical(n_images: int = 40, n_default_images: int = 3) -> dict[str, Any]:
    """grid vs hierarchical with ``leansam_tiny`` on the held-out synthetic images."""
    import leansam
    from leansam.train.recipe import held_out

    load_before = _load()
    model = leansam.build_model("leansam_tiny").eval()
    src = held_out(max(n_images, n_default_images))
    out: dict[str, Any] = {
        "machine": _machine(),
        "load_before": load_before,
        "model": "leansam_tiny (bundled)",
        "weights_sha256": weights_sha256("leansam_tiny"),
        "images": f"leansam.train.recipe.held_out({n_images}) = synth:{n_images}:1000:rich",
        "points_per_side": 32,
        "settings": {k: _resolved(model, v) for k, v in HIER_SETTINGS.items()},
        "setting_sources": dict(HIER_SOURCES),
        "per_image": [],
    }
    with torch.no_grad():
        for i in range(n_images):
            sample = src[i]
            gt = torch.from_numpy(sample.masks)
            row: dict[str, Any] = {
                "image": sample.key,
                "size": list(sample.image.shape[:2]),
                "objects": len(gt),
            }
            for name, setting in HIER_SETTINGS.items():
                grid, gstats, gsec = _everything_once(model, "grid", sample.image, setting)
                hier, hstats, hsec = _everything_once(model, "hierarchical", sample.image, setting)
                gm, hm = grid.masks(), hier.masks()
                best = _mask_iou(gm, hm).amax(1) if len(hm) else torch.zeros(len(gm))
                row[name] = {
                    "grid_prompts": gstats.prompts_decoded,
                    "hier_prompts": hstats.prompts_decoded,
                    "hier_prompts_per_round": hstats.prompts_per_round,
                    "grid_masks": len(grid),
                    "hier_masks": len(hier),
                    "kept_at_050": _kept_share(best, 0.5),
                    "kept_at_075": _kept_share(best, 0.75),
                    "grid_kept_050": int((best >= 0.5).sum()),
                    "grid_kept_075": int((best >= 0.75).sum()),
                    "gt_found_grid": int((_mask_iou(gt, gm).amax(1) >= 0.5).sum()) if len(gm) else 0,
                    "gt_found_hier": int((_mask_iou(gt, hm).amax(1) >= 0.5).sum()) if len(hm) else 0,
                    "grid_s": gsec,
                    "hier_s": hsec,
                }
            out["per_image"].append(row)
        defaults = []
        for i in range(n_default_images):
            image = src[i].image
            g, gs, _ = _everything_once(model, "grid", image, TINYSAM_DEFAULTS)
            h, hs, _ = _everything_once(model, "hierarchical", image, TINYSAM_DEFAULTS)
            defaults.append(
                {
                    "image": src[i].key,
                    "grid_masks": len(g),
                    "hier_masks": len(h),
                    "grid_prompts": gs.prompts_decoded,
                    "hier_prompts": hs.prompts_decoded,
                }
            )
        out["tinysam_defaults"] = {"options": TINYSAM_DEFAULTS, "per_image": defaults}
    out["totals"] = _hierarchical_totals(out)
    out["load_after"] = _load()
    return out


def _hierarchical_totals(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per setting, the per-image rows of :func:`hierarchical` summed: prompts, masks, objects found."""
    totals = {}
    for name in HIER_SETTINGS:
        rows = [r[name] for r in out["per_image"]]
        gp, hp = sum(r["grid_prompts"] for r in rows), sum(r["hier_prompts"] for r in rows)
        gmasks = sum(r["grid_masks"] for r in rows)
        totals[name] = {
            "grid_prompts": gp,
            "hier_prompts": hp,
            "prompt_cut": 1 - hp / gp,
            "grid_masks": gmasks,
            "hier_masks": sum(r["hier_masks"] for r in rows),
            "kept_at_050": sum(r["grid_kept_050"] for r in rows) / max(1, gmasks),
            "kept_at_075": sum(r["grid_kept_075"] for r in rows) / max(1, gmasks),
            "gt_objects": sum(r["objects"] for r in out["per_image"]),
            "gt_found_grid": sum(r["gt_found_grid"] for r in rows),
            "gt_found_hier": sum(r["gt_found_hier"] for r in rows),
            "grid_s": sum(r["grid_s"] for r in rows),
            "hier_s": sum(r["hier_s"] for r in rows),
        }
    return totals


# --- memory --------------------------------------------------------------------------------------


def _memory_image(size: int) -> np.ndarray:
    from leansam.bench.protocol import test_image

    return test_image((size, size), 0)[0]


def _peak_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one ``generate`` in this (fresh) process and measures its peak RSS (VmHWM delta)."""
    from leansam.bench.memory import _status_kib, peak_memory

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    image = _memory_image(spec["image_size"])
    opts = {"points_per_side": spec["points_per_side"], "output_mode": "coco_rle", **spec["options"]}
    with tempfile.TemporaryDirectory() as d:
        if spec["model"] == "mobile_sam":
            from tests import parity as P

            ckpt = P.write_stand_in_checkpoint("mobile_sam", Path(d) / "mobile_sam.pt")
            model = _mobile_sam_models(ckpt, (spec["impl"],))[spec["impl"]]
        else:
            import leansam

            model = leansam.build_model(spec["model"]).eval()
    if spec["impl"] == "official":
        gen = _official_module().SamAutomaticMaskGenerator(model, **opts)
    else:
        from leansam.everything import AutomaticMaskGenerator

        gen = AutomaticMaskGenerator(model, "grid", **opts)
    holder: dict[str, Any] = {}

    def call() -> None:
        t = time.perf_counter()
        with torch.no_grad():
            holder["records"] = gen.generate(image)
        holder["seconds"] = time.perf_counter() - t

    rss_before = (_status_kib("VmRSS") or 0) * 1024
    peak = peak_memory(call)
    records = holder["records"]
    return {
        **peak.to_dict(),
        "rss_before_bytes": rss_before,
        "process_peak_bytes": (_status_kib("VmHWM") or 0) * 1024,
        "seconds": holder["seconds"],
        "masks": len(records),
        "rle_bytes": int(sum(len(r["segmentation"]["counts"]) for r in records)),
        "prompts": spec["points_per_side"] ** 2,
    }


def memory(
    sides: tuple[int, ...] = (16, 32, 64),
    official_sides: tuple[int, ...] = (16, 64),
    image_size: int = 1024,
    timeout_s: float = 2400.0,
) -> dict[str, Any]:
    """Peak RSS of one generate() per configuration, each in a fresh process."""
    load_before = _load()
    configs = [("leansam", "mobile_sam", s, MEMORY_OPTS) for s in sides]
    tiny = {k: v for k, v in HIER_SETTINGS["moderate"].items() if k != "high_score_thresh"}
    configs += [("leansam", "leansam_tiny", s, tiny) for s in sides]
    configs += [("official", "mobile_sam", s, MEMORY_OPTS) for s in official_sides]
    rows = []
    for impl, model, side, options in configs:
        spec = {
            "impl": impl,
            "model": model,
            "points_per_side": side,
            "image_size": image_size,
            "options": options,
            "threads": torch.get_num_threads(),
        }
        row: dict[str, Any] = {"impl": impl, "model": model, "points_per_side": side, "load_before": _load()}
        cmd = [sys.executable, "-m", "benchmarks.everything", "--peak-child", json.dumps(spec)]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            if proc.returncode == 0:
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                row["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired:
            row["error"] = f"did not finish within {timeout_s:.0f} s"
        rows.append(row)
        print(f"memory: {row}", file=sys.stderr, flush=True)
    return {
        "machine": _machine(),
        "load_before": load_before,
        "load_after": _load(),
        "image": f"leansam.bench.protocol.test_image(({image_size}, {image_size}), 0)",
        "points_per_batch": 64,
        "method": "VmHWM - VmRSS around one generate() call, fresh process per row (leansam.bench.memory)",
        "mobile_sam_options": MEMORY_OPTS,
        "tiny_options": tiny,
        "rows": rows,
    }


# --- run / render --------------------------------------------------------------------------------


def run(
    runs: int = 3,
    quick: bool = False,
    sections: tuple[str, ...] = SECTIONS,
    path: Path | None = RESULT_PATH,
) -> dict[str, Any]:
    """Runs the chosen sections and writes ``path`` (sections not run keep their earlier result).

    ``quick``: 16 x 16 grid and one timed run for speed, 4 held-out images, memory at 8 / 16 points
    per side on a 512 px image (a smoke run, not the reported numbers).
    """
    from leansam.io import write_json

    result: dict[str, Any] = {}
    if path is not None and path.exists():
        result = json.loads(path.read_text())
    command = "python -m benchmarks.everything " + " ".join(sys.argv[1:])
    for name in sections:
        t = time.perf_counter()
        if name == "speed":
            sec = speed(1 if quick else runs, 16 if quick else 32)
        elif name == "hierarchical":
            sec = hierarchical(4 if quick else 40, 1 if quick else 3)
        elif name == "memory":
            sec = memory((8, 16), (16,), 512) if quick else memory()
        else:
            raise ValueError(f"unknown section {name!r}; choose from {SECTIONS}")
        sec["command"] = command
        sec["quick"] = quick
        sec["wall_s"] = time.perf_counter() - t
        result[name] = record_bundled(sec)
        if path is not None:
            write_json(path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="interleaved timed runs per side (speed)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (not the reported numbers)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument(
        "--out", default=None, help="result JSON (default docs/results/everything.json; --quick: a temp file)"
    )
    ap.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peak_child is not None:
        print(json.dumps(_peak_child(json.loads(args.peak_child))))
        return 0
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    bad = [s for s in sections if s not in SECTIONS]
    if bad or args.runs < 1:
        print(
            f"error: unknown section(s) {bad} or --runs < 1; sections: {','.join(SECTIONS)}", file=sys.stderr
        )
        return 2
    if args.out is not None:
        out = Path(args.out)
    else:  # a smoke run must not overwrite the reported results
        out = Path(tempfile.gettempdir()) / "everything_quick.json" if args.quick else RESULT_PATH
    result = run(args.runs, args.quick, sections, out)
    print(f"wrote {out}", file=sys.stderr)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
