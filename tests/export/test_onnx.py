"""Exported fp32 ONNX graphs reproduce PyTorch for EVERY registered model.

For each model in ``leansam.list_models()`` (stand-in weights, see conftest): export with in-graph
upscaling, then through ``SamPredictor`` on both backends: the encoder output, 1, 7 and 50 box
prompts in one decoder call each (multimask), points + box and points only (single-mask output,
SAM 2's dynamic rule included), and the graph's own ``masks`` output against leansam's post-processing.
Tolerances: low-res logits and IoU atol 1e-3, masks identical on >= 99.9 % of the pixels.

Default suite (time budget): the whole pipeline of the bundled model, and the decoder graphs of
``DECODER_VARIANTS`` (SAM, SAM 2 and EfficientSAM decoders) on shared random features. Every
registered model's whole pipeline (a newly registered one too) runs under ``slow`` (``make test-slow``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import leansam
from leansam.export import OnnxExportConfig, export_onnx, load_onnx_decoder, load_onnx_model, read_metadata
from leansam.models.common import LayerNorm2d
from leansam.models.sam import ImageFeatures
from tests.export.conftest import random_boxes

LIGHT = ("leansam_tiny",)  # whole pipeline in the default suite: the default model (128-d, 32 x 32, 512 px)
# Decoder graphs in the default suite: SAM's (MobileSAM); SAM 2's (object score, high-res features,
# dynamic single mask, box first, always one padding point); EfficientSAM's (no mask prompt, GELU,
# GroupNorm, box first, padding to 6 points at -1, bicubic upscaling).
DECODER_VARIANTS = ("mobile_sam", "sam2.1_hiera_tiny", "efficientsam_vitt")
CPU = ["CPUExecutionProvider"]


def _params():
    return [pytest.param(n, marks=() if n in LIGHT else pytest.mark.slow) for n in leansam.list_models()]


def check_same(ref: tuple, got: tuple, what: str) -> dict[str, float]:
    """(masks, iou, low-res) of both backends: logits/IoU atol 1e-3, >= 99.9 % identical mask pixels."""
    (m_ref, iou_ref, low_ref), (m_got, iou_got, low_got) = ref, got
    assert m_got.shape == m_ref.shape and low_got.shape == low_ref.shape, what
    low = float((low_got - low_ref).abs().max())
    iou = float((iou_got - iou_ref).abs().max())
    flips = float((m_got != m_ref).float().mean(dim=(-1, -2)).max())
    assert low <= 1e-3, f"{what}: low-res logits differ by {low:.2e}"
    assert iou <= 1e-3, f"{what}: IoU predictions differ by {iou:.2e}"
    assert flips <= 1e-3, f"{what}: {flips:.2%} of a mask's pixels differ"
    return {"low": low, "iou": iou, "flips": flips}


def compare_prompts(
    ref: leansam.SamPredictor,
    got: leansam.SamPredictor,
    size: tuple[int, int],
    name: str,
    counts: tuple[int, ...] = (1, 7, 50),
) -> dict[str, float]:
    """1, 7 and 50 boxes (multimask); 7 boxes + 2 clicks each and 2 clicks alone (single mask); the
    first again with its low-res logits as mask prompts (models with a mask input).

    Returns the worst low-res / IoU difference and mask-pixel fraction seen (printed with ``-s``).
    """
    worst = {"low": 0.0, "iou": 0.0, "flips": 0.0}

    def note(stats: dict[str, float]) -> None:
        for k, v in stats.items():
            worst[k] = max(worst[k], v)

    for n in counts:
        boxes = random_boxes(n, size, seed=n)
        with torch.inference_mode():
            a = ref.predict_torch(None, None, boxes, multimask_output=True, original_coords=True)
        b = got.predict_torch(None, None, boxes, multimask_output=True, original_coords=True)
        assert b[0].shape[:2] == (n, 3)
        note(check_same(a, b, f"{name}, {n} boxes"))

    boxes = random_boxes(7, size, seed=3)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    clicks = torch.cat([centres, centres * 0.9], dim=1)  # one foreground, one background click per box
    labels = torch.tensor([[1, 0]] * 7)
    for args, what in (
        ((clicks, labels, boxes), "points + box, single mask"),
        ((clicks[:1], labels[:1], None), "points only, single mask"),
    ):
        with torch.inference_mode():
            a = ref.predict_torch(*args, multimask_output=False, original_coords=True)
        b = got.predict_torch(*args, multimask_output=False, original_coords=True)
        note(check_same(a, b, f"{name}, {what}"))
        if what.startswith("points + box"):
            previous = a[2]  # 7 x 1 x h x w low-res logits: the next round's mask prompts
    if ref.model.prompt_encoder.mask_prompt:
        with torch.inference_mode():
            a = ref.predict_torch(
                clicks, labels, boxes, previous, multimask_output=True, original_coords=True
            )
        b = got.predict_torch(clicks, labels, boxes, previous, multimask_output=True, original_coords=True)
        note(check_same(a, b, f"{name}, points + box + mask input"))
    return worst


@pytest.mark.parametrize("name", _params())
def test_onnx_matches_pytorch(name, exports, scene):
    model = exports.model(name)
    folder = exports.folder(name, upscale=True)
    onnx_model = load_onnx_model(folder, CPU, expect_model=name)
    assert onnx_model.name == name and onnx_model.transform == model.transform
    meta = read_metadata(folder / "encoder.onnx")
    assert meta["leansam.model"] == name and meta["leansam.input_size"] == str(model.transform.encoder_size)

    # prompt_block=None: all B prompts in ONE decoder call (the requirement), not blocks of 4.
    ref, got = (
        leansam.SamPredictor(model, prompt_block=None),
        leansam.SamPredictor(onnx_model, prompt_block=None),
    )
    with torch.inference_mode():
        ref.set_image(scene)
    got.set_image(scene)
    # Encoder outputs within 1e-3 of their scale: ORT's kernels (and BatchNorm folding) order fp32
    # arithmetic differently, and the stand-in weights blow activations up to ~1e15 inside the deep
    # CNNs before the neck normalises them (RepViT-SAM: 1.7e-5 of the scale).
    for r, g in zip(
        [ref.features.embed, *(ref.features.high_res or [])],
        [got.features.embed, *(got.features.high_res or [])],
    ):
        assert float((g - r).abs().max()) <= 1e-3 * max(1.0, float(r.abs().max()))

    size = scene.shape[:2]
    worst = compare_prompts(ref, got, size, name)
    embed = float((got.features.embed - ref.features.embed).abs().max())
    print(f"\nPARITY {name}: embed {embed:.2e}, " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    boxes = random_boxes(7, size, seed=3)

    # The graph's in-graph upscaling (``masks`` output) against leansam's post-processing.
    import onnxruntime as ort

    full = ort.InferenceSession(str(folder / "decoder.onnx"), providers=CPU)
    coords, labels = onnx_model.prepare_prompts(None, None, boxes, size)
    corner = labels[0] >= 2  # the graph's ``boxes`` input takes the corners, placed as the family does
    feeds = {
        "image_embeddings": got.features.embed.numpy(),
        "point_coords": coords[:, ~corner].numpy(),
        "point_labels": labels[:, ~corner].float().numpy(),
        "boxes": coords[:, corner].reshape(7, 1, 4).numpy(),
        "orig_im_size": np.array(size, dtype=np.int64),
    }
    if got.features.high_res is not None:
        feeds["high_res_feats_0"], feeds["high_res_feats_1"] = (t.numpy() for t in got.features.high_res)
    if model.prompt_encoder.mask_prompt:
        feeds["mask_input"] = np.zeros((7, 1, *model.prompt_encoder.mask_input_size), np.float32)
        feeds["has_mask_input"] = np.zeros(1, np.float32)
    low, masks = full.run(["low_res_logits", "masks"], feeds)
    expected = model.postprocess_masks(torch.from_numpy(low), size).numpy()
    assert masks.shape == expected.shape == (7, model.mask_decoder.num_mask_tokens, *size)
    assert float(np.abs(masks - expected).max()) <= 1e-3 * max(1.0, float(np.abs(expected).max()))
    assert float(((masks > 0) != (expected > 0)).mean()) <= 1e-3

    if name not in LIGHT:  # free memory and disk before the next big model
        exports.drop(name)
        shutil.rmtree(folder, ignore_errors=True)


def test_channel_layer_norms_are_one_onnx_operator_each(exports):
    """LayerNorm2d exports as ``LayerNormalization`` over the channels, not as the explicit mean and
    variance (ReduceMean over NCHW's channel axis, which ONNX Runtime runs as a strided reduction)."""
    import onnx

    model = exports.model("leansam_tiny")
    norms = sum(isinstance(m, LayerNorm2d) for m in model.image_encoder.modules())
    graph = onnx.load(str(exports.folder("leansam_tiny", upscale=True) / "encoder.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert norms > 0 and ops.count("LayerNormalization") == norms
    assert "ReduceMean" not in ops


@pytest.mark.parametrize("name", DECODER_VARIANTS)
def test_decoder_graph_matches_pytorch(name, exports):
    """Decoder only (``load_onnx_decoder``): both backends decode the same random image features."""
    model = exports.model(name)
    decoder = exports.decoder(name)
    assert not (decoder.parent / "encoder.onnx").exists()
    onnx_model = load_onnx_decoder(decoder, CPU, expect_model=name)
    pe = model.prompt_encoder
    c, (h, w) = pe.embed_dim, pe.image_embedding_size
    gen = torch.Generator().manual_seed(0)
    high = None
    if model.mask_decoder.use_high_res_features:
        high = [
            torch.randn(1, c // 8, 4 * h, 4 * w, generator=gen),
            torch.randn(1, c // 4, 2 * h, 2 * w, generator=gen),
        ]
    features = ImageFeatures(torch.randn(1, c, h, w, generator=gen), high)
    size = (120, 160)  # small: the full-size upscaling of 150 masks is not what is tested here
    ref, got = (
        leansam.SamPredictor(model, prompt_block=None),
        leansam.SamPredictor(onnx_model, prompt_block=None),
    )
    ref.set_features(features, size)
    got.set_features(features, size)
    # 50 prompts in one call for SAM's decoder here; every model's in the slow whole-pipeline test.
    compare_prompts(ref, got, size, name, (1, 7, 50) if name == "mobile_sam" else (1, 7))


@pytest.mark.slow
def test_dynamo_exporter_matches_pytorch(exports, scene, tmp_path):
    """The non-default exporter (``torch.export`` + onnxscript) on the bundled model."""
    model = exports.model("leansam_tiny")
    out = export_onnx(model, tmp_path / "dynamo", config=OnnxExportConfig(exporter="dynamo", upscale=True))
    ref = leansam.SamPredictor(model, prompt_block=None)
    got = leansam.SamPredictor(load_onnx_model(out.directory, CPU), prompt_block=None)
    with torch.inference_mode():
        ref.set_image(scene)
    got.set_image(scene)
    assert float((got.features.embed - ref.features.embed).abs().max()) <= 1e-4 * float(
        ref.features.embed.abs().max()
    )
    compare_prompts(ref, got, scene.shape[:2], "leansam_tiny (dynamo exporter)")
