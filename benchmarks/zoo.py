"""Every registered model on this machine under one protocol, published numbers side by side.

    python -m benchmarks.zoo [--models all] [--runs 2] [--grids 32] [--threads 2]

This is ``leansam bench`` (:func:`leansam.bench.run_benchmark`) over the whole registry, plus the
published anchors of the model papers (parameters and encoder MACs) next to leansam's exact counts
and this machine's encoder latency. Weights: the cached official checkpoint where one exists,
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

from leansam.bench import BenchConfig, run_benchmark
from leansam.bench.published import (
    PUBLISHED_GMACS,
    PUBLISHED_PARAMS_M,
    PUBLISHED_PARAMS_WITH_MEMORY_M,
)
from leansam.bench.report import PlotUnavailable, _pyplot, plot_latency_vs_prompts, render_markdown
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
    write_json(out, result)
    return result


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "" if v is None else format(v, spec)


def anchors(result: dict[str, Any]) -> str:
    """Markdown: published params and MACs of the model papers vs leansam's counts and latency here."""
    mem = (result.get("sam2_memory") or {}).get("memory")
    rows = []
    for m in result["models"]:
        name = m["name"]
        pub_p = PUBLISHED_PARAMS_M.get(name)
        pub_pm = PUBLISHED_PARAMS_WITH_MEMORY_M.get(name)
        pub_g = PUBLISHED_GMACS.get(name)
        if not (pub_p or pub_pm or pub_g):
            continue
        total = (m.get("params") or {}).get("total")
        ours_p = total / 1e6 if total else None
        if pub_pm:
            pub_val, note = pub_pm.value, "incl. memory"
            ours_p = (total + mem) / 1e6 if total and mem is not None else None
        else:
            pub_val, note = (pub_p.value if pub_p else None), ""
        gmacs = ((m.get("macs") or {}).get("image_encoder") or 0) / 1e9 or None
        enc = (m.get("encoder_latency") or {}).get("median_s")
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{name}`",
                    str(m.get("input_size", "")),
                    _fmt(pub_val) + (f" ({note})" if note and pub_val else ""),
                    _fmt(ours_p, ".2f"),
                    _fmt(ours_p / pub_val if ours_p and pub_val else None, ".3f"),
                    _fmt(pub_g.value if pub_g else None, ".0f"),
                    _fmt(gmacs),
                    _fmt(gmacs / pub_g.value if gmacs and pub_g else None, ".3f"),
                    _fmt(enc * 1000 if enc else None, ".0f"),
                ]
            )
            + " |"
        )
    head = (
        "| model | input | published params (M) | leansam params (M) | ratio | published encoder GMACs "
        "| leansam encoder GMACs | ratio | encoder ms here (median) |\n|" + "---|" * 9
    )
    lines = ["### Published anchors: EfficientViT-SAM and SAM 2", "", head, *rows, ""]
    lines.append(
        "Sources: EfficientViT-SAM (arXiv:2402.05008) Table 1 for params and MACs (whole model at its native "
        "input: 512 for L0-L2, 1024 for XL0/XL1); SAM 2 README checkpoint table for SAM 2 / 2.1 sizes, "
        "which count the video memory modules."
    )
    if mem is not None:
        sm = result["sam2_memory"]
        lines.append(
            f"leansam's SAM 2 rows add the memory modules it sets aside in image mode: {mem / 1e6:.2f} M "
            f"(official `sam2.1_hiera_tiny` key layout {sm['official_total']:,} minus image mode "
            f"{sm['image_mode']:,}; the same modules at every size)."
        )
    return "\n".join(lines) + "\n"


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
    """The docs section: the harness tables, the anchors and the plots."""
    from leansam.registry import list_models

    names = {m["name"] for m in result["models"]}
    registered = set(list_models())
    if registered <= names:
        title, scope = "Every registered model, one protocol (the survey's)", ""
    else:
        title = f"Model zoo on this machine: {len(names & registered)} of {len(registered)} registered models"
        scope = (
            f"This run covers {len(names & registered)} of the {len(registered)} registered models; "
            "`python -m benchmarks.zoo` (default `--models all`) measures them all. Exact parameter and "
            "MAC counts of every registered model: [benchmarks_harness.md](benchmarks_harness.md).\n\n"
        )
    body = render_markdown(result, title=title)
    if scope:
        head, _, rest = body.partition("\n\n")
        body = head + "\n\n" + scope + rest
    body = body.replace(
        "Regenerate with `python -m leansam.bench.report RESULT.json docs/benchmarks_harness.md`.",
        f"Regenerate with `{result.get('command', 'python -m benchmarks.zoo')}` "
        "(or everything with `python -m benchmarks run`).",
    )
    parts = [body.rstrip() + "\n", anchors(result)]
    if result.get("segevery"):
        parts.append(_segevery(result["segevery"]))
    imgs = [p for p in ("zoo_encoder_latency.png", "zoo_latency_vs_prompts.png") if (IMG_DIR / p).is_file()]
    if imgs:
        parts.append("### Plots\n\n" + "\n".join(f"![{p[:-4]}](img/{p})" for p in imgs) + "\n")
    parts.append(
        "The survey's segment-everything table could not be transcribed here (the survey text is not "
        "readable offline on this machine), so the SegEvery rows above stand without published numbers; "
        "the segment-everything section further down compares leansam with the official generators "
        "on this machine instead.\n"
    )
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
