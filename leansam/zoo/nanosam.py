"""NanoSAM (NVIDIA-AI-IOT/nanosam): a ResNet-18 image encoder distilled from MobileSAM's, with MobileSAM's decoder.

The official release is two ONNX files (links from the NanoSAM README, Google Drive; no checksum
is published, so none is checked):

* ``resnet18_image_encoder.onnx``: input ``image`` 1 x 3 x 1024 x 1024 (SAM normalisation:
  mean 123.675, 116.28, 103.53 / std 58.395, 57.12, 57.375 on 0..255 pixels, longest side
  resized to 1024, zero-padded), output ``image_embeddings`` 1 x 256 x 64 x 64
  (``nanosam/tools/export_image_encoder_onnx.py``, opset 16, batch fixed to 1);
* ``mobile_sam_mask_decoder.onnx``: MobileSAM's prompt encoder + mask decoder in
  segment-anything's ONNX layout (inputs ``image_embeddings``, ``point_coords`` 1 x P x 2,
  ``point_labels`` 1 x P, ``mask_input`` 1 x 1 x 256 x 256, ``has_mask_input`` [1]; outputs
  ``iou_predictions`` 1 x 4, ``low_res_masks`` 1 x 4 x 256 x 256;
  ``nanosam/tools/export_sam_mask_decoder_onnx.py``). Boxes are corner points with labels 2 and 3.

leansam runs the official encoder unchanged through :class:`leansam.export.runtime.OnnxSam`,
paired with either that decoder file or MobileSAM's decoder exported by ``leansam export onnx
--model mobile_sam`` (same weights, boxes as a first-class input, many prompts per call)::

    leansam segment photo.jpg --model nanosam --backend onnx \\
        --onnx resnet18_image_encoder.onnx --onnx-decoder mobile_sam_mask_decoder.onnx --box 10,10,200,200

Pre-processing is leansam's SAM pipeline (the encoder was distilled on 1024 x 1024 random crops
normalised as SAM does). NanoSAM's own TensorRT predictor differs in small ways: it resizes
with PIL's default (bicubic) filter and truncates the scaled side instead of rounding, and
upscales the cropped 256 x 256 logits straight to the image size.

The torch builder below has the official encoder's architecture (timm ``resnet18`` features,
``up_1``/``proj`` neck, learned ``pos_embedding``; parameter count exact) so the model can be
exported, tested and distilled in leansam; there are no official torch weights for it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.sam import Sam
from ..registry import ModelInfo, Weights
from ..train.encoders import BasicBlock
from ..transforms import ImageTransform

ENCODER_URL = "https://drive.google.com/file/d/14-SsvoaTl-esC3JOzomHDnI9OGgdO2OR/view?usp=drive_link"
ENCODER_FILE = "resnet18_image_encoder.onnx"
DECODER_URL = "https://drive.google.com/file/d/1jYNvnseTL49SNRx9PDcbkZ9DwsY8up7n/view?usp=drive_link"
DECODER_FILE = "mobile_sam_mask_decoder.onnx"
#: Models whose ONNX decoder a model may be paired with (NanoSAM uses MobileSAM's).
DECODER_SOURCES: dict[str, tuple[str, ...]] = {"nanosam": ("mobile_sam",)}


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier (timm ``features_only``; last level used).

    B x 3 x S x S -> B x 512 x S/32 x S/32. 7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages of
    two basic blocks (leansam's :class:`~leansam.train.encoders.BasicBlock`, the same arithmetic
    and parameter count as torchvision's / timm's).
    """

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class NanoSamEncoder(nn.Module):
    """NanoSAM's image encoder: B x 3 x 1024 x 1024 (normalised, padded) -> B x 256 x 64 x 64.

    ResNet-18 (stride 32), then ``up_1`` (three 3x3 conv + GELU, one stride-2 transposed conv to
    stride 16), ``proj`` (3x3 conv, GELU, 1x1 conv) and a learned position embedding added to the output.
    """

    def __init__(self, feature_dim: int = 256, neck_channels: int = 256, grid: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet18Trunk()
        gelu = nn.GELU
        self.up_1 = nn.Sequential(
            nn.Conv2d(512, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.ConvTranspose2d(neck_channels, neck_channels, 3, 2, 1, 1),
            gelu(),
        )
        self.proj = nn.Sequential(
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            gelu(),
            nn.Conv2d(neck_channels, feature_dim, 1),
        )
        self.pos_embedding = nn.Parameter(torch.zeros(1, feature_dim, grid, grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.up_1(self.backbone(x))) + self.pos_embedding


def build_nanosam() -> Sam:
    """NanoSAM's architecture: :class:`NanoSamEncoder` with MobileSAM's (= SAM's) prompt encoder and decoder."""
    return Sam(NanoSamEncoder())


MODELS = (
    ModelInfo(
        name="nanosam",
        family="nanosam",
        builder="leansam.zoo.nanosam:build_nanosam",
        weights=Weights(
            url=ENCODER_URL,
            file_name=ENCODER_FILE,
            sha256=None,  # upstream publishes none; the file is only on Google Drive
            license="Apache-2.0",
            source="https://github.com/NVIDIA-AI-IOT/nanosam",
            paper="NanoSAM (NVIDIA-AI-IOT, 2023; no paper): ResNet-18 encoder distilled from MobileSAM",
        ),
        transform=ImageTransform(),
        n_params=19_895_664,
        description="NanoSAM: ResNet-18 encoder + MobileSAM decoder; official weights are ONNX only "
        "(--backend onnx, see docs/deployment.md)",
    ),
)
