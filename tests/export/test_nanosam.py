"""NanoSAM: the official release layout (an ONNX ResNet-18 encoder without leansam metadata, a
segment-anything-style MobileSAM decoder) runs through OnnxSam, the predictor and the CLI.

The decoder file is independent of leansam: it is exported from the official MobileSAM code
(``mobile_sam.utils.onnx.SamOnnxModel`` on MobileSAM's stand-in weights) the way
``nanosam/tools/export_sam_mask_decoder_onnx.py`` does, whose fork of that class returns
``(iou_predictions, low_res_masks)`` without upscaling (I/O ``image_embeddings``, ``point_coords``
1 x P x 2, ``point_labels``, ``mask_input``, ``has_mask_input``; opset 16). leansam running it
must reproduce leansam's torch MobileSAM decoder on the same weights.

The encoder file has no independent reference here: NanoSAM's encoder code needs timm and its
weights are not published as a torch checkpoint, so the stand-in is leansam's own NanoSAM
architecture (seeded weights) exported as ``nanosam/tools/export_image_encoder_onnx.py`` does
(input ``image`` 1 x 3 x 1024 x 1024, output ``image_embeddings``, opset 16, no metadata). Its
tests check that such a metadata-free file loads and runs through leansam's runtime, not that the
architecture is NanoSAM's (the exact parameter count below is the architecture check).
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

import leansam
from leansam.cli import main
from leansam.data.coco import decode_mask
from leansam.export import OnnxModelError, load_onnx_model
from leansam.models.resnet import NanoSamEncoder
from leansam.zoo import nanosam
from tests import oracles
from tests import parity as P
from tests.export.conftest import random_boxes
from tests.export.test_onnx import check_same
from tests.test_cli import assert_clean_error

CPU = ["CPUExecutionProvider"]


def stand_in_encoder() -> NanoSamEncoder:
    torch.manual_seed(0)
    enc = NanoSamEncoder()
    with torch.no_grad():
        enc.pos_embedding.normal_(std=0.1)
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return enc.eval()


def official_decoder_layout(checkpoint) -> nn.Module:
    """NanoSAM's decoder export built from the official MobileSAM code: its ``SamOnnxModel``
    prompt embedding and ``mask_decoder.predict_masks``, returning (iou, low-res logits) for the
    four mask tokens, as NanoSAM's fork of ``SamOnnxModel.forward`` does (no upscaling)."""
    ms = oracles.mobile_sam()
    from mobile_sam.utils.onnx import SamOnnxModel

    class NanoSamDecoderExport(SamOnnxModel):
        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
            masks, scores = self.model.mask_decoder.predict_masks(
                image_embeddings=image_embeddings,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=self._embed_points(point_coords, point_labels),
                dense_prompt_embeddings=self._embed_masks(mask_input, has_mask_input),
            )
            return scores, masks

    official = ms.sam_model_registry["vit_t"](checkpoint=str(checkpoint))
    return NanoSamDecoderExport(official.eval(), return_single_mask=False).eval()


@pytest.fixture(scope="module")
def release(exports, tmp_path_factory):
    """The stand-in release files and the torch reference model."""
    root = tmp_path_factory.mktemp("nanosam")
    mobile = exports.model("mobile_sam")
    enc = stand_in_encoder()
    encoder = root / nanosam.ENCODER_FILE
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter of the TorchScript exporter
        torch.onnx.export(
            enc,
            (torch.randn(1, 3, 1024, 1024),),
            str(encoder),
            input_names=["image"],
            output_names=["image_embeddings"],
            opset_version=16,
            dynamo=False,
        )
        official_decoder = root / nanosam.DECODER_FILE
        torch.onnx.export(
            official_decoder_layout(P.write_stand_in_checkpoint("mobile_sam", root / "mobile_sam.pt")),
            (
                torch.randn(1, 256, 64, 64),
                torch.rand(1, 3, 2) * 1024,
                torch.tensor([[2.0, 3.0, 1.0]]),
                torch.zeros(1, 1, 256, 256),
                torch.zeros(1),
            ),
            str(official_decoder),
            input_names=["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            output_names=["iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=16,
            dynamo=False,
        )
    ref = leansam.get_model_info("nanosam").build()
    ref.image_encoder.load_state_dict(enc.state_dict())
    ref.prompt_encoder.load_state_dict(mobile.prompt_encoder.state_dict())
    ref.mask_decoder.load_state_dict(mobile.mask_decoder.state_dict())
    return {
        "encoder": encoder,
        "official_decoder": official_decoder,
        "leansam_decoder": exports.decoder("mobile_sam"),
        "ref": ref.eval(),
    }


@pytest.fixture(scope="module")
def ref_predictor(release, scene):
    p = leansam.SamPredictor(release["ref"])
    with torch.inference_mode():
        p.set_image(scene)
    return p


def test_registry_entry_records_the_release():
    info = leansam.get_model_info("nanosam")
    assert info.weights.file_name == "resnet18_image_encoder.onnx" and info.weights.sha256 is None
    assert (
        info.weights.url
        == "https://drive.google.com/file/d/14-SsvoaTl-esC3JOzomHDnI9OGgdO2OR/view?usp=drive_link"
    )
    assert (
        nanosam.DECODER_URL
        == "https://drive.google.com/file/d/1jYNvnseTL49SNRx9PDcbkZ9DwsY8up7n/view?usp=drive_link"
    )
    assert nanosam.DECODER_FILE == "mobile_sam_mask_decoder.onnx"
    assert info.transform == leansam.get_model_info("mobile_sam").transform


def test_parameter_count_is_nanosams():
    model = leansam.get_model_info("nanosam").build()
    resnet18_features = 11_689_512 - (512 * 1000 + 1000)  # torchvision's resnet18 count minus its classifier
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    neck = conv(512, 256, 3) + 3 * conv(256, 256, 3) + conv(256, 256, 3) + conv(256, 256, 1) + 256 * 64 * 64
    assert sum(p.numel() for p in model.image_encoder.parameters()) == resnet18_features + neck
    mobile = leansam.get_model_info("mobile_sam").build()
    decoder_side = sum(p.numel() for p in mobile.parameters()) - sum(
        p.numel() for p in mobile.image_encoder.parameters()
    )
    assert sum(p.numel() for p in model.parameters()) == resnet18_features + neck + decoder_side
    assert leansam.get_model_info("nanosam").n_params == resnet18_features + neck + decoder_side


def _compare_prompts(ref: leansam.SamPredictor, got: leansam.SamPredictor, size: tuple[int, int]) -> None:
    for n in (1, 7):
        boxes = random_boxes(n, size, seed=n)
        with torch.inference_mode():
            a = ref.predict_torch(None, None, boxes, multimask_output=True, original_coords=True)
        check_same(
            a, got.predict_torch(None, None, boxes, multimask_output=True, original_coords=True), f"{n} boxes"
        )
    clicks, labels = torch.tensor([[[200.0, 150.0], [420.0, 330.0]]]), torch.tensor([[1, 0]])
    with torch.inference_mode():
        a = ref.predict_torch(clicks, labels, None, multimask_output=False, original_coords=True)
    check_same(
        a, got.predict_torch(clicks, labels, None, multimask_output=False, original_coords=True), "clicks"
    )
    with torch.inference_mode():
        b = ref.predict_torch(clicks, labels, boxes[:1], a[2], multimask_output=True, original_coords=True)
    got_b = got.predict_torch(clicks, labels, boxes[:1], a[2], multimask_output=True, original_coords=True)
    check_same(b, got_b, "clicks + box + mask input")


def test_release_layout_encoder_runs_through_the_runtime(release, ref_predictor, scene):
    """A metadata-free encoder file in the release's I/O layout (exported from leansam's NanoSAM
    architecture) with MobileSAM's decoder as leansam exports it."""
    assert not onnx.load(str(release["encoder"])).metadata_props  # like the real file: no leansam metadata
    model = load_onnx_model(
        release["encoder"], CPU, expect_model="nanosam", decoder=release["leansam_decoder"]
    )
    assert model.name == "nanosam" and model.transform == leansam.get_model_info("nanosam").transform
    got = leansam.SamPredictor(model)
    got.set_image(scene)
    ref = ref_predictor
    assert float((got.features.embed - ref.features.embed).abs().max()) <= 1e-4 * float(
        ref.features.embed.abs().max()
    )
    _compare_prompts(ref, got, scene.shape[:2])


def test_decoder_exported_by_the_official_code_matches_leansam(release, ref_predictor, scene):
    """NanoSAM's segment-anything-style decoder file, exported from the official MobileSAM code:
    boxes as corner points, one prompt per call; leansam's torch decoder is the reference."""
    model = load_onnx_model(
        release["encoder"], CPU, expect_model="nanosam", decoder=release["official_decoder"]
    )
    got = leansam.SamPredictor(model)
    got.set_features(ref_predictor.features, scene.shape[:2])  # the encoder is compared above
    _compare_prompts(ref_predictor, got, scene.shape[:2])


def test_sam_style_decoder_needs_the_model_name(release):
    with pytest.raises(OnnxModelError, match="without leansam metadata"):
        load_onnx_model(release["encoder"], CPU, decoder=release["official_decoder"])
    with pytest.raises(OnnxModelError, match="exported from model 'mobile_sam', not 'sam_vit_b'"):
        load_onnx_model(release["encoder"], CPU, expect_model="sam_vit_b", decoder=release["leansam_decoder"])


@pytest.fixture
def image_file(tmp_path, scene):
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    return path


def _segment(args, capsys):
    code = main([str(a) for a in ["segment", *args]])
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_runs_the_release_from_the_cache(
    release, ref_predictor, image_file, tmp_path, capsys, monkeypatch
):
    """``--model nanosam --backend onnx`` finds both official files in $LEANSAM_HOME/checkpoints."""
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    args = [image_file, "--model", "nanosam", "--backend", "onnx", "--box", "120,80,330,260", "--out", out]
    code, err = _segment(args, capsys)
    assert_clean_error(code, err, out, "download resnet18_image_encoder.onnx from https://drive.google.com/")
    ckpts = tmp_path / "home" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copy(release["encoder"], ckpts / nanosam.ENCODER_FILE)
    shutil.copy(release["official_decoder"], ckpts / nanosam.DECODER_FILE)
    code, err = _segment(args, capsys)
    assert code == 0, err
    meta = json.loads((out / "masks.json").read_text())
    assert meta["model"] == "nanosam" and nanosam.ENCODER_FILE in meta["checkpoint"]
    with torch.inference_mode():
        masks, scores, _ = ref_predictor.predict(box=np.array([120, 80, 330, 260]), multimask_output=False)
    got = decode_mask(meta["masks"][0]["segmentation"], 480, 640)
    assert np.count_nonzero(got != masks[0]) <= 1e-3 * got.size
    assert abs(meta["masks"][0]["score"] - float(scores[0])) <= 1e-3


def test_torch_backend_and_export_are_refused(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _segment([image_file, "--model", "nanosam", "--box", "1,1,50,50", "--out", out], capsys)
    assert_clean_error(code, err, out, "official weights are ONNX files")
    code = main(["export", "onnx", "--model", "nanosam", "--out", str(out)])
    assert_clean_error(code, capsys.readouterr().err, out, "official weights are ONNX files")
