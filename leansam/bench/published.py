"""Published reference numbers the benchmark is compared against, each with its source.

MACs are of the image encoder at the model's native input size (the decoder adds about
1.3 GMACs per image with one box, which the published tables leave out).
"""

from __future__ import annotations

from dataclasses import dataclass


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

SURVEY = (
    'Sun et al., "On Efficient Variants of Segment Anything Model: A Survey" (arXiv:2410.04960), '
    "Table 4: SegAny with one box prompt, CPU (14 vCPU Intel Xeon), ms per image"
)

#: One-box SegAny latency on CPU from the survey (ms).
SURVEY_CPU_ONE_BOX_MS: dict[str, Published] = {
    p.model: p
    for p in (
        Published("mobile_sam", 424.0, "ms", SURVEY),
        Published("edge_sam", 259.0, "ms", SURVEY),
        Published("efficientsam_vitt", 1159.0, "ms", SURVEY),
        Published("repvit_sam", 1013.0, "ms", SURVEY),
        Published("tinysam", 422.0, "ms", SURVEY),
    )
}

#: The survey's model names for the registry names above.
SURVEY_NAMES: dict[str, str] = {
    "mobile_sam": "MobileSAM",
    "edge_sam": "EdgeSAM",
    "efficientsam_vitt": "EfficientSAM-Ti",
    "repvit_sam": "RepViT-SAM",
    "tinysam": "TinySAM",
}
