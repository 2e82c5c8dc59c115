"""``OnnxSam`` / ``load_onnx_model``: file checks, quantized encoders, the mask generator on ONNX Runtime."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch

import leansam
from leansam.export import (
    OnnxExportConfig,
    OnnxExportError,
    OnnxModelError,
    export_onnx,
    load_onnx_decoder,
    load_onnx_model,
)
from leansam.interface import PromptableModel
from leansam.registry import UnknownModelError
from tests.export.conftest import random_boxes
from tests.export.test_onnx import check_same

CPU = ["CPUExecutionProvider"]
NANO = "leansam_nano"


@pytest.fixture(scope="module")
def nano(exports):
    return exports.folder(NANO)


@pytest.fixture(scope="module")
def teacher_decoder(exports):
    """leansam_tiny_teacher's decoder (same 128 x 16 x 16 interface as leansam_nano, other model)."""
    return exports.decoder("leansam_tiny_teacher")


def strip_metadata(src, dest):
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dest))
    return dest


def test_pair_from_one_export_loads(nano):
    model = load_onnx_model(nano, CPU, expect_model=NANO)
    assert model.name == NANO and model.providers == CPU
    assert model.metadata["encoder"]["leansam.weights"] == model.metadata["decoder"]["leansam.weights"]
    assert model.metadata["decoder"]["leansam.version"] == leansam.__version__
    assert model.transform == leansam.get_model_info(NANO).transform
    assert isinstance(model, PromptableModel)


def test_files_of_another_model_are_refused(nano, teacher_decoder):
    with pytest.raises(OnnxModelError, match="exported from model 'leansam_nano', not 'mobile_sam'"):
        load_onnx_model(nano, CPU, expect_model="mobile_sam")
    # encoder of one model, decoder of another (same tensor shapes: only the metadata tells them apart)
    with pytest.raises(OnnxModelError, match=r"'leansam_nano' but decoder .* from 'leansam_tiny_teacher'"):
        load_onnx_model(nano / "encoder.onnx", CPU, decoder=teacher_decoder)


def test_same_model_other_weights_is_refused(nano, exports, tmp_path):
    torch.manual_seed(1)
    other = leansam.build_model(NANO, pretrained=False)  # same architecture, random weights
    dec = export_onnx(other, tmp_path / "other", config=OnnxExportConfig(encoder=False)).decoder
    with pytest.raises(OnnxModelError, match="different weights"):
        load_onnx_model(nano / "encoder.onnx", CPU, decoder=dec)


def test_encoder_of_another_shape_without_metadata_is_refused(nano, exports, tmp_path):
    dec = exports.decoder("mobile_sam")
    bare = strip_metadata(nano / "encoder.onnx", tmp_path / "bare.onnx")
    with pytest.raises(OnnxModelError, match=r"expected one input B x 3 x 1024 x 1024"):
        load_onnx_model(bare, CPU, decoder=dec)


def test_roles_swapped_are_refused(nano):
    with pytest.raises(OnnxModelError, match="is a leansam encoder file, given where the decoder"):
        load_onnx_model(nano / "decoder.onnx", CPU, decoder=nano / "encoder.onnx")


def test_missing_empty_corrupt_truncated_files(nano, tmp_path):
    with pytest.raises(OnnxModelError, match="no such ONNX file or folder"):
        load_onnx_model(tmp_path / "nope.onnx", CPU)
    with pytest.raises(OnnxModelError, match=r"no encoder\.onnx in"):
        load_onnx_model(tmp_path, CPU)
    with pytest.raises(OnnxModelError, match="no such ONNX decoder file"):
        load_onnx_model(nano / "encoder.onnx", CPU, decoder=tmp_path / "missing.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxModelError, match="empty"):
        load_onnx_model(nano / "encoder.onnx", CPU, decoder=empty)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(OnnxModelError, match="not a valid ONNX model"):
        load_onnx_model(junk, CPU, decoder=nano / "decoder.onnx")
    data = (nano / "decoder.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxModelError, match="not a valid ONNX model"):
        load_onnx_model(nano / "encoder.onnx", CPU, decoder=cut)


def test_unavailable_provider_is_refused(nano):
    with pytest.raises(OnnxModelError, match="not available here"):
        load_onnx_model(nano, ["NoSuchExecutionProvider"])


def test_quantized_renamed_encoder_is_accepted(nano, scene, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = tmp_path / "encoder.int8.onnx"
    quantize_dynamic(str(nano / "encoder.onnx"), str(q), weight_type=QuantType.QUInt8)
    bare = strip_metadata(q, tmp_path / "encoder.int8.nometa.onnx")  # tools that drop metadata_props
    fp32 = leansam.SamPredictor(load_onnx_model(nano, CPU))
    fp32.set_image(scene)
    boxes = random_boxes(4, scene.shape[:2])
    ref = fp32.predict_torch(None, None, boxes, multimask_output=False, original_coords=True)
    for enc in (q, bare):
        model = load_onnx_model(enc, CPU, expect_model=NANO, decoder=nano / "decoder.onnx")
        p = leansam.SamPredictor(model)
        p.set_image(scene)
        assert not torch.equal(p.features.embed, fp32.features.embed)  # really the int8 graph
        masks = p.predict_torch(None, None, boxes, multimask_output=False, original_coords=True)[0]
        inter = (masks & ref[0]).sum((-1, -2)).float()
        union = (masks | ref[0]).sum((-1, -2)).float().clamp(min=1)
        assert masks.shape == ref[0].shape and float((inter / union).mean()) > 0.5


def test_decoder_only_model_refuses_images(nano):
    model = load_onnx_decoder(nano / "decoder.onnx", CPU)
    with pytest.raises(OnnxModelError, match="only a decoder"):
        leansam.SamPredictor(model).set_image(np.zeros((32, 32, 3), np.uint8))


def test_mask_generator_runs_on_onnx_runtime(nano, exports, scene):
    kwargs = {
        "points_per_side": 6,
        "points_per_batch": 16,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    with torch.inference_mode():
        ref = leansam.AutomaticMaskGenerator(exports.model(NANO), **kwargs).generate(scene)
    got = leansam.AutomaticMaskGenerator(load_onnx_model(nano, CPU), **kwargs).generate(scene)
    assert len(ref) > 0 and len(got) == len(ref)
    for a, b in zip(ref, got):
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
        differ = np.count_nonzero(a["segmentation"] != b["segmentation"])
        assert differ <= 1e-3 * a["segmentation"].size


def test_predictor_reports_same_scores_for_boxes_and_points(nano, exports, scene):
    """One more SamPredictor.predict (numpy API) round: box and clicks of one prompt."""
    ref, got = leansam.SamPredictor(exports.model(NANO)), leansam.SamPredictor(load_onnx_model(nano, CPU))
    with torch.inference_mode():
        ref.set_image(scene)
    got.set_image(scene)
    kw = {"point_coords": np.array([[200, 150], [420, 330]]), "point_labels": np.array([1, 0])}
    for extra in ({}, {"box": np.array([120, 80, 330, 260])}):
        a = ref.predict(**kw, **extra)
        b = got.predict(**kw, **extra)
        check_same(tuple(map(torch.from_numpy, a)), tuple(map(torch.from_numpy, b)), str(extra))


def test_missing_onnxruntime_and_onnx_give_the_install_hint(nano, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an install without the extra looks like
    with pytest.raises(ImportError, match=r"pip install 'leansam\[onnx\]'"):
        load_onnx_model(nano, CPU)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'leansam\[onnx\]'"):
        export_onnx(NANO, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_failed_export_writes_nothing(tmp_path):
    model = leansam.build_model(NANO).half()
    with pytest.raises(OnnxExportError, match="float32"):
        export_onnx(model, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    with pytest.raises(UnknownModelError, match="unknown model 'mobile_samm'"):
        export_onnx("mobile_samm", tmp_path / "unknown")
    assert not list(tmp_path.iterdir())
