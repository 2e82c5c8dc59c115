"""Published numbers the measured ones are shown beside, each with its source, and their tables.

Primary sources (the model papers and official READMEs) first; then the survey *On Efficient
Variants of Segment Anything Model* (Sun et al., arXiv:2410.04960), whose tables are
**second-hand**: transcribed from two public research notes that cite its Tables 3-5 and agree
where they overlap (the survey itself could not be read here). They are cited as "survey Tab.N,
second-hand", never as measured.

Published encoder MACs are of the image encoder at the model's native input size (the decoder
adds about 1.3 GMACs per image with one box, which those tables leave out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Published:
    """A published number: ``value`` in ``unit``, for registry model ``model``, from ``source``."""

    model: str
    value: float
    unit: str
    source: str


EFFICIENTVIT_SAM = (
    "EfficientViT-SAM (Zhang et al., arXiv:2402.05008), Table 1 / model card "
    "https://huggingface.co/mit-han-lab/efficientvit-sam"
)
EFFICIENTVIT_SAM_VITH = (
    "EfficientViT-SAM (Zhang et al., arXiv:2402.05008), SAM-ViT-H row of the comparison table"
)

#: Image-encoder GMACs.
PUBLISHED_GMACS: dict[str, Published] = {
    p.model: p
    for p in (
        Published("sam_vit_h", 2973.0, "GMACs", EFFICIENTVIT_SAM_VITH),
        Published("efficientvit_sam_l0", 35.0, "GMACs", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_l1", 49.0, "GMACs", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_l2", 69.0, "GMACs", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_xl0", 185.0, "GMACs", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_xl1", 322.0, "GMACs", EFFICIENTVIT_SAM),
    )
}

#: Whole-model parameters (millions).
PUBLISHED_PARAMS_M: dict[str, Published] = {
    p.model: p
    for p in (
        Published("efficientvit_sam_l0", 34.8, "M", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_l1", 47.7, "M", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_l2", 61.3, "M", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_xl0", 117.0, "M", EFFICIENTVIT_SAM),
        Published("efficientvit_sam_xl1", 203.3, "M", EFFICIENTVIT_SAM),
    )
}

SAM2 = (
    "SAM 2 model card (facebookresearch/sam2 README, checkpoint table: Size (M)), "
    "https://github.com/facebookresearch/sam2; counts include the video memory modules"
)

#: Whole-checkpoint parameters (millions) of SAM 2 / 2.1, memory modules included. leansam's
#: image-mode models leave the memory modules out, so compare with image-mode + memory.
PUBLISHED_PARAMS_WITH_MEMORY_M: dict[str, Published] = {
    p.model: p
    for p in (
        Published("sam2_hiera_tiny", 38.9, "M", SAM2),
        Published("sam2_hiera_small", 46.0, "M", SAM2),
        Published("sam2_hiera_base_plus", 80.8, "M", SAM2),
        Published("sam2_hiera_large", 224.4, "M", SAM2),
        Published("sam2.1_hiera_tiny", 38.9, "M", SAM2),
        Published("sam2.1_hiera_small", 46.0, "M", SAM2),
        Published("sam2.1_hiera_base_plus", 80.8, "M", SAM2),
        Published("sam2.1_hiera_large", 224.4, "M", SAM2),
    )
}

SURVEY = 'Sun et al., "On Efficient Variants of Segment Anything Model: A Survey" (arXiv:2410.04960)'
SECOND_HAND = (
    "Second-hand: transcribed from two public research notes citing the survey's tables (they agree where "
    "they overlap); the survey itself could not be read here."
)

#: Registry name of each survey model name.
SURVEY_NAMES: dict[str, str] = {
    "SAM-H": "sam_vit_h",
    "SAM-L": "sam_vit_l",
    "SAM-B": "sam_vit_b",
    "SAM2-B+": "sam2_hiera_base_plus",
    "MobileSAM": "mobile_sam",
    "EdgeSAM": "edge_sam",
    "EfficientSAM-Ti": "efficientsam_vitt",
    "EfficientSAM-S": "efficientsam_vits",
    "RepViT-SAM": "repvit_sam",
    "EfficientViT-SAM-L0": "efficientvit_sam_l0",
    "EfficientViT-SAM-XL1": "efficientvit_sam_xl1",
    "TinySAM": "tinysam",
    "NanoSAM": "nanosam",
    "SlimSAM-77": "slimsam_77",
}

#: Survey Tab.3 (efficiency; calflops, one box prompt): model -> (params M, GFLOPs or None).
SURVEY_EFFICIENCY: dict[str, tuple[float, float | None]] = {
    "SAM-H": (641.09, 5490.0),
    "SAM-L": (312.34, 2640.0),
    "SAM-B": (93.74, 746.4),
    "EfficientSAM-Ti": (10.22, None),
    "EfficientSAM-S": (26.41, None),
    "RepViT-SAM": (27.22, None),
    "SlimSAM-77": (9.85, None),
    "MobileSAM": (10.1, None),
}

#: Survey Tab.4 (SegAny, one box prompt, ms per image): model -> (RTX 3090, CPU).
SURVEY_SEGANY_MS: dict[str, tuple[float | None, float | None]] = {
    "SAM-H": (461.0, 9470.0),
    "SAM-B": (116.0, 3294.0),
    "SAM2-B+": (85.0, 1221.0),
    "MobileSAM": (30.0, 424.0),
    "EdgeSAM": (24.0, 259.0),
    "EfficientSAM-Ti": (40.0, 1159.0),
    "RepViT-SAM": (44.0, 1013.0),
    "EfficientViT-SAM-L0": (16.0, 194.0),
    "EfficientViT-SAM-XL1": (52.0, 1334.0),
    "TinySAM": (29.0, 422.0),
    "NanoSAM": (20.0, None),
}

#: Survey Tab.5 (SegEvery, ms per image, grid points per side 16 / 32 / 64; device not stated in the notes).
SURVEY_SEGEVERY_MS: dict[str, tuple[float, float, float]] = {
    "SAM-H": (824.0, 2269.0, 8103.0),
    "SAM2-B+": (442.0, 1610.0, 6356.0),
    "MobileSAM": (347.0, 1313.0, 5022.0),
    "EdgeSAM": (404.0, 1553.0, 5877.0),
    "EfficientViT-SAM-L0": (258.0, 1023.0, 3938.0),
    "EfficientSAM-S": (1100.0, 2290.0, 6210.0),
    "RepViT-SAM": (512.0, 1890.0, 7437.0),
}


# --- tables: published beside measured ----------------------------------------------------------
def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return _fmt(a / b, ".2f") if a and b else ""


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _models(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in result["models"]}


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def primary_table(result: dict[str, Any]) -> list[str]:
    """EfficientViT-SAM (params, encoder MACs) and SAM 2 (params incl. memory) vs leansam's counts."""
    mem = _get(result, "sam2_memory", "memory")
    rows = []
    for name, m in _models(result).items():
        pub_p, pub_pm = PUBLISHED_PARAMS_M.get(name), PUBLISHED_PARAMS_WITH_MEMORY_M.get(name)
        pub_g = PUBLISHED_GMACS.get(name)
        if not (pub_p or pub_pm or pub_g):
            continue
        total = _get(m, "params", "total")
        ours = total / 1e6 if total else None
        pub_val, note = (pub_p.value if pub_p else None), ""
        if pub_pm:
            pub_val, note = pub_pm.value, " (incl. memory)"
            ours = (total + mem) / 1e6 if total and mem is not None else None
        gmacs = (_get(m, "macs", "image_encoder") or 0) / 1e9 or None
        enc = _get(m, "encoder_latency", "median_s")
        cells = [f"`{name}`", str(m.get("input_size", "")), _fmt(pub_val) + (note if pub_val else "")]
        cells += [_fmt(ours, ".2f"), _fmt(ours / pub_val if ours and pub_val else None, ".3f")]
        cells += [_fmt(pub_g.value if pub_g else None, ".0f"), _fmt(gmacs)]
        cells += [
            _fmt(gmacs / pub_g.value if gmacs and pub_g else None, ".3f"),
            _fmt(enc and enc * 1000, ".0f"),
        ]
        rows.append(_row(cells))
    lines = [
        "#### Model papers: EfficientViT-SAM and SAM 2",
        "",
        "| model | input | published params (M) | leansam params (M) | ratio | published encoder GMACs "
        "| leansam encoder GMACs | ratio | encoder ms here (median) |",
        "|" + "---|" * 9,
        *rows,
        "",
        f"Sources: {EFFICIENTVIT_SAM} (whole model at its native input: 512 for L0-L2, 1024 for XL0/XL1); "
        f"{SAM2}.",
    ]
    if mem is not None:
        sm = result["sam2_memory"]
        lines.append(
            f"leansam's SAM 2 rows add the memory modules it sets aside in image mode: {mem / 1e6:.2f} M "
            f"(official `sam2.1_hiera_tiny` key layout {sm['official_total']:,} minus image mode "
            f"{sm['image_mode']:,}; the same modules at every size)."
        )
    return [*lines, ""]


def survey_efficiency_table(result: dict[str, Any]) -> list[str]:
    """Survey Tab.3 (params, GFLOPs with one box) vs leansam's exact counts."""
    models = _models(result)
    rows = []
    for survey_name, (params, gflops) in SURVEY_EFFICIENCY.items():
        m = models.get(SURVEY_NAMES[survey_name])
        total = _get(m, "params", "total")
        macs = _get(m, "macs", "total")
        ours_p = total / 1e6 if total else None
        ours_g = 2 * macs / 1e9 if macs else None
        cells = [survey_name, f"`{SURVEY_NAMES[survey_name]}`", _fmt(params, ".2f"), _fmt(ours_p, ".2f")]
        cells += [_ratio(ours_p, params), _fmt(gflops), _fmt(ours_g), _ratio(ours_g, gflops)]
        rows.append(_row(cells))
    return [
        "#### Survey Tab.3: efficiency (second-hand)",
        "",
        "| survey model | registry | survey params (M) | leansam params (M) | ratio | survey GFLOPs (one box) "
        "| leansam GFLOPs (2 x MACs, encoder + decoder, one box) | ratio |",
        "|" + "---|" * 8,
        *rows,
        "",
        "The survey counted with calflops; leansam counts MACs with `torch.utils.flop_counter` "
        "(FLOPs = 2 x MACs here).",
        "",
    ]


def survey_segany_table(result: dict[str, Any]) -> list[str]:
    """Survey Tab.4 (one-box SegAny latency) vs this machine, absolute and relative to MobileSAM."""
    models = _models(result)
    here = {n: _get(m, "segany_latency", "median_s") for n, m in models.items()}
    base_here, base_cpu = here.get("mobile_sam"), SURVEY_SEGANY_MS["MobileSAM"][1]
    rows = []
    for survey_name, (gpu, cpu) in SURVEY_SEGANY_MS.items():
        name = SURVEY_NAMES[survey_name]
        ms = here.get(name) and here[name] * 1000
        cells = [survey_name, f"`{name}`", _fmt(gpu, ".0f"), _fmt(cpu, ".0f"), _fmt(ms, ".0f") or "not run"]
        cells += [_ratio(ms, cpu), _ratio(ms, base_here and base_here * 1000), _ratio(cpu, base_cpu)]
        rows.append(_row(cells))
    return [
        "#### Survey Tab.4: one-box SegAny latency (second-hand)",
        "",
        "| survey model | registry | survey RTX 3090 ms | survey CPU ms | measured CPU ms here | measured / survey CPU "
        "| measured vs MobileSAM | survey CPU vs MobileSAM |",
        "|" + "---|" * 8,
        *rows,
        "",
        "The survey's CPU is a 14-vCPU Intel Xeon Gold 6330 according to one note (the other does not name "
        "it); absolute times depend on the CPU, so compare the ratios to MobileSAM, measured in the same run.",
        "",
    ]


def survey_segevery_table(result: dict[str, Any]) -> list[str]:
    """Survey Tab.5 (segment-everything time per grid) vs the 32 x 32 grid measured here."""
    seg = {m["name"]: m for m in _get(result, "segevery", "models") or []}

    def measured(name: str) -> float | None:
        runs = [e for e in (seg.get(name) or {}).get("everything", []) if e.get("grid") == 32]
        return runs[0]["median_s"] * 1000 if runs and runs[0].get("median_s") else None

    base_here, base_pub = measured("mobile_sam"), SURVEY_SEGEVERY_MS["MobileSAM"][1]
    rows = []
    for survey_name, (g16, g32, g64) in SURVEY_SEGEVERY_MS.items():
        name = SURVEY_NAMES[survey_name]
        ms = measured(name)
        cells = [survey_name, f"`{name}`", _fmt(g16, ".0f"), _fmt(g32, ".0f"), _fmt(g64, ".0f")]
        cells += [_fmt(ms, ".0f") or "not run", _ratio(ms, base_here), _ratio(g32, base_pub)]
        rows.append(_row(cells))
    return [
        "#### Survey Tab.5: segment everything (second-hand)",
        "",
        "| survey model | registry | survey ms, 16 x 16 | survey ms, 32 x 32 | survey ms, 64 x 64 "
        "| measured ms here, 32 x 32 | measured vs MobileSAM | survey 32 x 32 vs MobileSAM |",
        "|" + "---|" * 8,
        *rows,
        "",
        "Measured rows: the segment-everything table above (random weights where no checkpoint is cached: "
        "fewer masks survive the filters, so post-processing costs less than with real weights). The survey's "
        "device for this table is not stated in the notes.",
        "",
    ]


def render(result: dict[str, Any]) -> str:
    """The anchors section of the zoo: primary sources, then the survey's tables with their caveat."""
    lines = ["### Published anchors beside the measured numbers", ""]
    lines += primary_table(result)
    lines += [f'Survey tables: {SURVEY}. **{SECOND_HAND}** Cite them as "survey Tab.N, second-hand".', ""]
    lines += survey_efficiency_table(result) + survey_segany_table(result) + survey_segevery_table(result)
    return "\n".join(lines)
