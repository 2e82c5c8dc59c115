"""TinyViT-5M SAM variants: MobileSAM and TinySAM (same architecture and key layout, different weights)."""

from ..registry import ModelInfo, Weights

MODELS = (
    ModelInfo(
        name="mobile_sam",
        family="tiny_vit",
        builder="leansam.models.tiny_vit:build_mobile_sam",
        weights=Weights(
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            file_name="mobile_sam.pt",
            sha256=None,  # upstream publishes none; no two independent sources found
            license="Apache-2.0",
            source="https://github.com/ChaoningZhang/MobileSAM",
            paper="Faster Segment Anything: Towards Lightweight SAM for Mobile Applications (arXiv:2306.14289)",
        ),
        n_params=10_130_092,
        description="MobileSAM: TinyViT-5M encoder distilled from SAM ViT-H",
    ),
    ModelInfo(
        name="tinysam",
        family="tiny_vit",
        builder="leansam.models.tiny_vit:build_tinysam",
        weights=Weights(
            url="https://github.com/xinghaochen/TinySAM/releases/download/3.0/tinysam_42.3.pth",
            file_name="tinysam_42.3.pth",
            sha256=None,  # upstream publishes none; no two independent sources found
            license="Apache-2.0",
            source="https://github.com/xinghaochen/TinySAM",
            paper="TinySAM: Pushing the Envelope for Efficient Segment Anything Model (arXiv:2312.13789)",
        ),
        n_params=10_130_092,
        description="TinySAM: TinyViT-5M encoder, full-stage distillation from SAM ViT-H (release 3.0 weights)",
    ),
    ModelInfo(
        name="tinysam_q",
        family="tiny_vit",
        builder="leansam.models.tiny_vit:build_tinysam",
        weights=Weights(
            url="https://github.com/xinghaochen/TinySAM/releases/download/2.0/tinysam_w8a8.pth",
            file_name="tinysam_w8a8.pth",
            sha256=None,  # upstream publishes none; no two independent sources found
            license="Apache-2.0",
            source="https://github.com/xinghaochen/TinySAM",
            paper="TinySAM: Pushing the Envelope for Efficient Segment Anything Model (arXiv:2312.13789)",
            pickled_module=True,  # torch.save(model) of the fake-quant model: needs trust_pickle=True
        ),
        # Sets the quantizer buffers aside and fake-quantizes the weights with their stored scales
        # (see leansam/zoo/tinysam_q.py; activations are not quantized).
        checkpoint_filter="leansam.zoo.tinysam_q:filter_fn",
        n_params=10_130_092,
        description="Q-TinySAM: TinySAM W8A8 post-training quantized (release 2.0); run in float, weights fake-quantized",
    ),
)
