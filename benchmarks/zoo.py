"""Every registered model on this machine under one protocol, published numbers side by side.

    python -m benchmarks.zoo [--models all] [--runs 2] [--grids 32] [--threads 2]

This is ``leansam bench`` (:func:`leansam.bench.run_benchmark`) over the whole registry; the page
section shows the published anchors (:mod:`benchmarks.anchors`) beside the measured numbers. Weights: the cached official checkpoint where one exists,
otherwise random init (labelled per row; speed does not depend on weight values, segment-everything
mask counts do).

SAM 2 / 2.1 checkpoints include the video memory modules, which leansam's image-mode models set
aside; their size is read from the official key layout of ``sam2.1_hiera_tiny`` in the parity
fixtures (``$LEANSAM_PARITY_DIR``, default ``../shared/parity``) and is the same for every size
(all sizes use 256-wide memory attention and a 64-channel memory encoder).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import anchors
from benchmarks.weights import record_bundled
from leansam.bench import BenchConfig, run_benchmark
from leansam.bench.report import (
    PlotUnavailable,
    _pyplot,
    errors_lines,
    everything_table,
    latency_table,
    plot_latency_vs_prompts,
    setup_lines,
    size_table,
)
from leansam.io import write_json
from leansam.registry import get_model_info

RESULT = Path("docs/results/zoo.json")
IMG_DIR = Path("docs/img")
COMMAND = "python -m benchmarks.zoo --models {models} --runs {runs} --warmup {warmup} --grids '{grids}' --threads {threads}"


def _parity_dir() -> Path:
    return Path(
        os.environ.get("LEANSAM_PARITY_DIR", Path(__file__).resolve().parents[2] / "shared" / "parity")
    )


def sam2_memory_params() -> dict[str, Any] | None:
    """Parameters of SAM 2's memory modules: official ``sam2.1_hiera_tiny`` layout minus image mode.

    Returns None when the parity fixtures are not on this machine.
    """
    manifest = _parity_dir() / "sam2.1_hiera_tiny" / "manifest.json"
    if not manifest.is_file():
        return None
    keys = json.loads(manifest.read_text())["keys"]
    official = sum(int(np.prod(shape)) for _, shape, dtype in keys if "float" in dtype)
    with torch.device("meta"):
        image_mode = sum(p.numel() for p in get_model_info("sam2.1_hiera_tiny").build().parameters())
    return {"official_total": official, "image_mode": image_mode, "memory": official - image_mode}


#: Models that get the costly measurements (segment-everything, peak memory): the survey's CPU
#: models, SAM ViT-B, the smallest EfficientViT-SAM and SAM 2.1 sizes, and leansam's default.
SEGEVERY_MODELS = (
    "mobile_sam",
    "edge_sam",
    "efficientsam_vitt",
    "repvit_sam",
    "tinysam",
    "efficientvit_sam_l0",
    "sam2.1_hiera_tiny",
    "sam_vit_b",
    "leansam_tiny",
)


def run(
    models: str = "all",
    runs: int = 2,
    warmup: int = 1,
    grids: tuple[int, ...] = (32,),
    threads: int = 2,
    out: Path = RESULT,
    segevery_models: tuple[str, ...] = SEGEVERY_MODELS,
) -> dict[str, Any]:
    """Benchmarks ``models`` and writes the JSON result to ``out``; returns it.

    Two passes keep a whole-registry run within an hour on 2 cores: every model gets parameters,
    MACs, encoder / one-box / decoder latency (interleaved across models); ``segevery_models``
    also get segment-everything on ``grids`` and peak memory (stored under ``"segevery"``).
    """
    config = BenchConfig(
        threads=threads,
        runs=runs,
        warmup=warmup,
        prompt_counts=(1, 10, 50),
        throughput_batches=(),
        everything_grids=(),
        weights="auto",
        measure_memory=False,
    )
    result = run_benchmark(models, config, progress=True).to_dict()
    if segevery_models and grids:
        config2 = BenchConfig(
            threads=threads,
            runs=1,
            warmup=warmup,
            prompt_counts=(1,),
            throughput_batches=(),
            everything_grids=tuple(grids),
            everything_strategies=("grid",),
            weights="auto",
            measure_memory=True,
            interleave=False,
        )
        result["segevery"] = run_benchmark(list(segevery_models), config2, progress=True).to_dict()
    result["sam2_memory"] = sam2_memory_params()
    result["command"] = COMMAND.format(
        models=models, runs=runs, warmup=warmup, grids=",".join(map(str, grids)), threads=threads
    )
    write_json(out, record_bundled(result))
    return result


def _plot_encoder_latency(result: dict[str, Any], path: Path) -> bool:
    """Horizontal bars: encoder latency per model (log scale), MobileSAM highlighted."""
    pts = [
        (m["name"], m["encoder_latency"]["median_s"] * 1000)
        for m in result["models"]
        if (m.get("encoder_latency") or {}).get("median_s")
    ]
    if not pts:
        return False
    plt = _pyplot()
    pts.sort(key=lambda p: p[1])
    fig, ax = plt.subplots(figsize=(6.4, 0.22 * len(pts) + 1.2))
    ax.barh(
        [p[0] for p in pts], [p[1] for p in pts], color=["C3" if p[0] == "mobile_sam" else "C0" for p in pts]
    )
    ax.set_xscale("log")
    ax.set_xlabel("image-encoder latency (ms, median, log scale)")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return True


def plots(result: dict[str, Any], img_dir: Path = IMG_DIR) -> list[Path]:
    """Writes the plots of this section; returns their paths (none without matplotlib)."""
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        if _plot_encoder_latency(result, img_dir / "zoo_encoder_latency.png"):
            written.append(img_dir / "zoo_encoder_latency.png")
        if any(m.get("decoder_latency") for m in result["models"]):
            plot_latency_vs_prompts(result, img_dir / "zoo_latency_vs_prompts.png")
            written.append(img_dir / "zoo_latency_vs_prompts.png")
    except PlotUnavailable:
        return []
    return written


def _segevery(seg: dict[str, Any]) -> str:
    """Markdown: segment-everything time and peak memory of the second pass."""
    rows = []
    for m in seg["models"]:
        peak = (m.get("peak_memory") or {}).get("peak_bytes")
        for e in m.get("everything", []):
            rows.append(
                f"| `{m['name']}` | {m.get('weights', '')} | {e['grid']} x {e['grid']} | "
                + (f"{e['median_s']:.2f}" if "median_s" in e else f"error: {e.get('error', '')[:60]}")
                + f" | {e.get('prompts_decoded', '')} | {e.get('masks', '')} | "
                + ("" if peak is None else f"{peak / 2**20:.0f}")
                + " |"
            )
    load = seg.get("load_average") or {}
    la = f" Load average (1 min) {load['start'][0]:.1f} -> {load['end'][0]:.1f}." if load.get("start") else ""
    return (
        "### Segment everything and peak memory (survey models)\n\n"
        "| model | weights | grid | seconds per image (encoder included) | prompts decoded | masks | "
        "peak memory, one SegAny (MiB) |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n`AutomaticMaskGenerator` with SAM's default thresholds, one run after a warm-up; with random "
        "weights almost no mask survives the filters, so this is the cost of prompting and decoding, not "
        f"of post-processing many masks.{la}\n"
    )


def render(result: dict[str, Any]) -> str:
    """The docs section: the protocol's tables, the published anchors beside them, and the plots."""
    from leansam.registry import list_models

    models = result["models"]
    names = {m["name"] for m in models}
    registered = set(list_models())
    lines = []
    if registered <= names:
        lines += ["## Every registered model, one protocol (the survey's)", ""]
    else:
        covered = len(names & registered)
        lines += [
            f"## Model zoo on this machine: {covered} of {len(registered)} registered models",
            "",
            f"This run covers {covered} of the {len(registered)} registered models (missing: "
            f"{', '.join(f'`{n}`' for n in sorted(registered - names))}); `python -m benchmarks.zoo` (default "
            "`--models all`) measures them all.",
            "",
        ]
    lines += setup_lines(result) + size_table(models) + latency_table(models) + everything_table(models)
    lines += errors_lines(models)
    parts = ["\n".join(lines).rstrip() + "\n"]
    if result.get("segevery"):
        parts.append(_segevery(result["segevery"]))
    parts.append(anchors.render(result))
    imgs = [p for p in ("zoo_encoder_latency.png", "zoo_latency_vs_prompts.png") if (IMG_DIR / p).is_file()]
    if imgs:
        parts.append("### Plots\n\n" + "\n".join(f"![{p[:-4]}](img/{p})" for p in imgs) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--grids", default="32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    grids = tuple(int(g) for g in args.grids.split(",") if g)
    res = run(args.models, args.runs, args.warmup, grids, args.threads, args.out)
    plots(res)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
