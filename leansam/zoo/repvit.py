"""RepViT-encoder SAM variants: RepViT-SAM (RepViT-M2.3) and EdgeSAM / EdgeSAM-3x (RepViT-M1 + fusion).

All three use SAM's pre/post-processing and prompt layout and plain state_dict files
whose keys already match leansam's, so no transform, prompt style or filter is set.

EdgeSAM's own builder loads its files with ``strict=False``; leansam loads them
strictly. The stand-in fixture proves every key of the model built by EdgeSAM's
builder is present and used; should a released file carry extra keys (not
verifiable here, no file available), the strict load reports them as unexpected
instead of silently ignoring them, and a filter would then have to set them aside.

Encoder: :class:`leansam.models.repvit.RepViTImageEncoder` (``REPVIT_SAM`` / ``EDGE_SAM``).
"""

from __future__ import annotations

from ..models.repvit import EDGE_SAM, REPVIT_SAM, RepViTImageEncoder
from ..models.sam import Sam
from ..registry import ModelInfo, Weights

_REPVIT_SOURCE = "https://github.com/THU-MIG/RepViT"
_EDGE_SOURCE = "https://github.com/chongzhou96/EdgeSAM"
_EDGE_BASE = "https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/main/weights/"
_EDGE_PAPER = "EdgeSAM: Prompt-In-the-Loop Distillation for On-Device Deployment of SAM (arXiv:2312.06660)"
# EdgeSAM's repository and weights: NTU S-Lab License 1.0, non-commercial use only.
_EDGE_LICENSE = "S-Lab-1.0 (NTU S-Lab License 1.0, non-commercial use only)"


def _edge_weights(file_name: str) -> Weights:
    return Weights(
        url=_EDGE_BASE + file_name,
        file_name=file_name,
        sha256=None,  # upstream publishes none; no two independent sources found
        license=_EDGE_LICENSE,
        source=_EDGE_SOURCE,
        paper=_EDGE_PAPER,
    )


def build_repvit_sam() -> Sam:
    """RepViT-SAM: RepViT-M2.3 encoder with SAM's prompt encoder and mask decoder (all defaults)."""
    return Sam(RepViTImageEncoder(REPVIT_SAM))


def build_edge_sam() -> Sam:
    """EdgeSAM (edge_sam.pth and edge_sam_3x.pth): RepViT-M1 + feature fusion, SAM decoder defaults.

    EdgeSAM's prompt encoder / mask decoder differ from SAM's only in options unused by
    point/box prediction (label -2, box labels, distillation outputs), so SAM's are used.
    """
    return Sam(RepViTImageEncoder(EDGE_SAM))


MODELS = (
    ModelInfo(
        name="repvit_sam",
        family="repvit",
        builder=build_repvit_sam,
        weights=Weights(
            url="https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt",
            file_name="repvit_sam.pt",
            sha256=None,  # upstream publishes none; no two independent sources found
            license="Apache-2.0",
            source=_REPVIT_SOURCE,
            paper="RepViT-SAM: Towards Real-Time Segmenting Anything (arXiv:2312.05760)",
        ),
        n_params=27_223_480,
        description="RepViT-SAM: RepViT-M2.3 CNN encoder distilled from SAM ViT-H",
    ),
    ModelInfo(
        name="edge_sam",
        family="repvit",
        builder=build_edge_sam,
        weights=_edge_weights("edge_sam.pth"),
        n_params=9_582_112,
        description="EdgeSAM: RepViT-M1 encoder with multi-scale fusion (non-commercial licence)",
    ),
    ModelInfo(
        name="edge_sam_3x",
        family="repvit",
        builder=build_edge_sam,
        weights=_edge_weights("edge_sam_3x.pth"),
        n_params=9_582_112,
        description="EdgeSAM-3x: EdgeSAM distilled on 3% of SA-1B instead of 1% (non-commercial licence)",
    ),
)
