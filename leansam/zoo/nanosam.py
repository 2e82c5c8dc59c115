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

The torch builder below uses :class:`leansam.models.resnet.NanoSamEncoder`, the official encoder's
architecture (timm ``resnet18`` features, ``up_1``/``proj`` neck, learned ``pos_embedding``;
parameter count exact), so the model can be
exported, tested and distilled in leansam; there are no official torch weights for it.
"""

from __future__ import annotations

from ..models.resnet import NanoSamEncoder
from ..models.sam import Sam
from ..registry import ModelInfo, Weights
from ..transforms import ImageTransform

ENCODER_URL = "https://drive.google.com/file/d/14-SsvoaTl-esC3JOzomHDnI9OGgdO2OR/view?usp=drive_link"
ENCODER_FILE = "resnet18_image_encoder.onnx"
DECODER_URL = "https://drive.google.com/file/d/1jYNvnseTL49SNRx9PDcbkZ9DwsY8up7n/view?usp=drive_link"
DECODER_FILE = "mobile_sam_mask_decoder.onnx"
#: Models whose ONNX decoder a model may be paired with (NanoSAM uses MobileSAM's).
DECODER_SOURCES: dict[str, tuple[str, ...]] = {"nanosam": ("mobile_sam",)}


def build_nanosam() -> Sam:
    """NanoSAM's architecture: :class:`NanoSamEncoder` with MobileSAM's (= SAM's) prompt encoder and decoder."""
    return Sam(NanoSamEncoder())


MODELS = (
    ModelInfo(
        name="nanosam",
        family="nanosam",
        builder=build_nanosam,
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
