"""Q-TinySAM (``tinysam_w8a8.pth``): the official pickled fake-quant model loads into ``tinysam_q``.

The real file cannot be downloaded here. The stand-in mirrors what TinySAM's code and release
show (see ``leansam/zoo/tiny_vit.py``): ``torch.save`` of the whole model, TinySAM's classes
under ``tinysam.modeling.*``, the quantization wrappers under the top-level module
``quantization_layer.layers`` (``InferQuantLinear[Post]`` / ``InferQuantConv2d`` /
``InferQuantConvTranspose2d`` subclass the torch layers and add quantizer buffers through
``get_parameter``; ``InferQuantMatMul[Post]`` hold only buffers), ``mode`` / ``w_bit`` / ``w_qmax``
attributes, parameters carrying TinyViT's ``lr_scale`` / ``param_name`` attributes. The module
tree and the float tensors come from the official ``tinysam`` key manifest and its stand-in
weights. The wrappers are written here from the layers' description (not copied); the packages
exist only while the file is written and are unimportable when it is read.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import leansam
from leansam.checkpoints import CheckpointError, load_model
from leansam.cli import main
from leansam.pickle_safe import load_pickled_module_checkpoint
from leansam.registry import get_model_info
from leansam.zoo import tiny_vit as Q
from tests import parity as P

NAME = "tinysam_q"

_LAYERS_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    def _int_buffers(module, **values):
        for name, value in values.items():
            module.register_buffer(name, torch.tensor(value, dtype=torch.int32))


    class InferQuantMatMul(nn.Module):
        def __init__(self, A_bit=8, B_bit=8, mode="raw"):
            super().__init__()
            self.A_bit, self.B_bit, self.mode = A_bit, B_bit, mode
            self.A_qmax, self.B_qmax = 2 ** (A_bit - 1), 2 ** (B_bit - 1)

        def get_parameter(self, A_interval, B_interval, **sizes):
            self.register_buffer("A_interval", A_interval)
            self.register_buffer("B_interval", B_interval)
            _int_buffers(self, **sizes)


    class InferQuantMatMulPost(InferQuantMatMul):
        def get_parameter(self, A_interval, B_interval, split, **sizes):
            super().get_parameter(A_interval, B_interval, **sizes)
            self.register_buffer("split", torch.tensor(split, dtype=torch.float32))


    class InferQuantLinear(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, mode="raw", w_bit=8, a_bit=8, bias_correction=False):
            super().__init__(in_features, out_features, bias)
            self.mode, self.w_bit, self.a_bit = mode, w_bit, a_bit
            self.w_qmax, self.a_qmax = 2 ** (w_bit - 1), 2 ** (a_bit - 1)
            self.bias_correction = bias_correction

        def get_parameter(self, n_V, n_H, n_a, a_interval, w_interval, crb_rows, crb_cols, crb_acts):
            self.register_buffer("a_interval", a_interval)
            self.register_buffer("w_interval", w_interval)
            _int_buffers(self, n_V=n_V, n_H=n_H, n_a=n_a, crb_rows=crb_rows, crb_cols=crb_cols, crb_acts=crb_acts)

        def quant_weight_bias(self):
            # Block (row group x column group) scales: the weight seen as n_V x crb_rows x n_H x crb_cols.
            shape = [int(self.n_V), int(self.crb_rows), int(self.n_H), int(self.crb_cols)]
            levels = torch.clamp(torch.round(self.weight.view(shape) / self.w_interval), -self.w_qmax, self.w_qmax - 1)
            return (levels * self.w_interval).view(self.out_features, self.in_features), self.bias


    class InferQuantLinearPost(InferQuantLinear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("a_neg_interval", torch.tensor(0.17 / self.a_qmax))


    class _ConvQuant:
        def get_parameter(self, n_V, n_H, a_interval, a_bias, w_interval):
            self.register_buffer("a_interval", a_interval)
            self.register_buffer("a_bias", a_bias)
            self.register_buffer("w_interval", w_interval)
            _int_buffers(self, n_V=n_V, n_H=n_H)

        def quant_weight_bias(self):
            levels = torch.clamp(torch.round(self.weight / self.w_interval), -self.w_qmax, self.w_qmax - 1)
            return levels * self.w_interval, self.bias


    class InferQuantConv2d(_ConvQuant, nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, padding_mode="zeros", mode="raw", w_bit=8, a_bit=8):
            super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
            self.mode, self.w_bit, self.a_bit = mode, w_bit, a_bit
            self.w_qmax, self.a_qmax = 2 ** (w_bit - 1), 2 ** (a_bit - 1)


    class InferQuantConvTranspose2d(_ConvQuant, nn.ConvTranspose2d):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                     bias=True, dilation=1, padding_mode="zeros", mode="raw", w_bit=8, a_bit=8):
            super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                             dilation, padding_mode)
            self.mode, self.w_bit, self.a_bit = mode, w_bit, a_bit
            self.w_qmax, self.a_qmax = 2 ** (w_bit - 1), 2 ** (a_bit - 1)
    """
)

# TinySAM's classes, by module of tinysam/modeling/ (names only: the tree is built below).
_MODELING = {
    "sam": ("Sam",),
    "tiny_vit_sam": (
        "TinyViT",
        "PatchEmbed",
        "ConvLayer",
        "BasicLayer",
        "MBConv",
        "TinyViTBlock",
        "PatchMerging",
        "Attention",
        "Mlp",
    ),
    "prompt_encoder": ("PromptEncoder", "PositionEmbeddingRandom"),
    "mask_decoder": ("MaskDecoder", "MLP"),
    "transformer": ("TwoWayTransformer", "TwoWayAttentionBlock", "Attention"),
    "common": ("MLPBlock",),
}
_LAYER_NORM_2D = """
class LayerNorm2d(nn.Module):
    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
"""
_CONV2D_BN = """
class Conv2d_BN(torch.nn.Sequential):
    pass
"""

# Module path -> (tinysam.modeling module, class) for the containers; first match wins.
_CONTAINERS = [
    (r"", ("sam", "Sam")),
    (r"image_encoder", ("tiny_vit_sam", "TinyViT")),
    (r"image_encoder\.patch_embed", ("tiny_vit_sam", "PatchEmbed")),
    (r".*\.(seq\.[02]|conv[123]|local_conv)", ("tiny_vit_sam", "Conv2d_BN")),
    (r"image_encoder\.layers\.0", ("tiny_vit_sam", "ConvLayer")),
    (r"image_encoder\.layers\.\d+", ("tiny_vit_sam", "BasicLayer")),
    (r"image_encoder\.layers\.0\.blocks\.\d+", ("tiny_vit_sam", "MBConv")),
    (r"image_encoder\.layers\.\d+\.blocks\.\d+", ("tiny_vit_sam", "TinyViTBlock")),
    (r"image_encoder\.layers\.\d+\.downsample", ("tiny_vit_sam", "PatchMerging")),
    (r"image_encoder\..*\.attn", ("tiny_vit_sam", "Attention")),
    (r"image_encoder\..*\.mlp", ("tiny_vit_sam", "Mlp")),
    (r"prompt_encoder", ("prompt_encoder", "PromptEncoder")),
    (r"prompt_encoder\.pe_layer", ("prompt_encoder", "PositionEmbeddingRandom")),
    (r"mask_decoder", ("mask_decoder", "MaskDecoder")),
    (r"mask_decoder\.transformer", ("transformer", "TwoWayTransformer")),
    (r"mask_decoder\.transformer\.layers\.\d+", ("transformer", "TwoWayAttentionBlock")),
    (
        r"mask_decoder\.transformer\.(layers\.\d+\.(self_attn|cross_attn_\w+)|final_attn_token_to_image)",
        ("transformer", "Attention"),
    ),
    (r"mask_decoder\.transformer\.layers\.\d+\.mlp", ("common", "MLPBlock")),
    (r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)", ("mask_decoder", "MLP")),
    (r".*\.(seq|neck|mask_downscaling|output_upscaling)", (None, "Sequential")),
]
_EMBEDDINGS = re.compile(r".*(point_embeddings\.\d+|not_a_point_embed|no_mask_embed|iou_token|mask_tokens)$")
_LN2D = {
    "image_encoder.neck.1": "tiny_vit_sam",
    "image_encoder.neck.3": "tiny_vit_sam",
    "prompt_encoder.mask_downscaling.1": "common",
    "prompt_encoder.mask_downscaling.4": "common",
    "mask_decoder.output_upscaling.1": "common",
}
_UNCALIBRATED = {"image_encoder.head"}  # never run by SAM: its wrapper got no quantizer buffers
_PKG, _QPKG = "tinysam", "quantization_layer"


def _write_packages(root: Path) -> None:
    (root / _PKG / "modeling").mkdir(parents=True)
    (root / _PKG / "__init__.py").write_text("")
    (root / _PKG / "modeling" / "__init__.py").write_text("")
    for mod, classes in _MODELING.items():
        text = "import torch\nfrom torch import nn\n" + "".join(
            f"\n\nclass {c}(nn.Module):\n    pass\n" for c in classes
        )
        if mod in ("tiny_vit_sam", "common"):
            text += _LAYER_NORM_2D
        if mod == "tiny_vit_sam":
            text += _CONV2D_BN
        (root / _PKG / "modeling" / f"{mod}.py").write_text(text)
    (root / _QPKG).mkdir()
    (root / _QPKG / "__init__.py").write_text("from .layers import *  # noqa\n")
    (root / _QPKG / "layers.py").write_text(_LAYERS_SOURCE)


def _leaf(path: str, own: dict[str, torch.Tensor], modeling, layers) -> nn.Module:
    w = own.get("weight")
    if path.endswith(".bn"):
        return nn.BatchNorm2d(w.shape[0])
    if path in _LN2D:
        return modeling[_LN2D[path]].LayerNorm2d(w.shape[0])
    if _EMBEDDINGS.match(path):
        return nn.Embedding(*w.shape)
    bias = "bias" in own
    if w.ndim == 2:
        cls = layers.InferQuantLinearPost if path.endswith("mlp.fc2") else layers.InferQuantLinear
        return cls(w.shape[1], w.shape[0], bias=bias)
    if w.ndim == 4 and "mask_downscaling" in path:  # the mask-prompt path: left unquantized
        return nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], bias=bias)
    if w.ndim == 4 and "output_upscaling" in path:
        return layers.InferQuantConvTranspose2d(w.shape[0], w.shape[1], w.shape[2], stride=2, bias=bias)
    if w.ndim == 4:
        return layers.InferQuantConv2d(w.shape[1], w.shape[0], w.shape[2], bias=bias)
    return nn.LayerNorm(w.shape[0])


def _build_tree(state: dict[str, torch.Tensor], modeling, layers) -> nn.Module:
    owned: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        path, _, name = key.rpartition(".")
        owned.setdefault(path, {})[name] = value
    every = set(owned) | {".".join(p.split(".")[:i]) for p in owned for i in range(len(p.split(".")))}
    has_children = {p.rpartition(".")[0] for p in every if p}
    modules: dict[str, nn.Module] = {}
    for path in sorted(every, key=lambda p: (p.count(".") + bool(p), p)):
        own = owned.get(path, {})
        spec = next((s for pat, s in _CONTAINERS if re.fullmatch(pat, path)), None)
        if spec is not None or path in has_children:
            spec = spec or (None, "ModuleList")
            cls = getattr(nn, spec[1]) if spec[0] is None else getattr(modeling[spec[0]], spec[1])
            module = cls()
            for name, value in own.items():  # attention_biases, the Fourier matrix
                if name == "positional_encoding_gaussian_matrix":
                    module.register_buffer(name, value.clone())
                else:
                    module.register_parameter(name, nn.Parameter(value.clone()))
        else:
            module = _leaf(path, own, modeling, layers)
            module.load_state_dict({k: v.clone() for k, v in own.items()}, strict=False)
            assert set(own) <= set(module.state_dict()), path
        modules[path] = module
        if path:
            parent, _, name = path.rpartition(".")
            modules[parent].add_module(name, module)
    return modules[""]


def _calibrate(model: nn.Module, layers) -> None:
    """What a W8A8 export leaves: scales on every wrapper SAM runs, ``quant_forward`` mode, matmul wrappers."""
    for path, m in list(model.named_modules()):
        if path in _UNCALIBRATED:
            continue
        w = m.weight.detach() if hasattr(m, "weight") else None
        if isinstance(m, layers.InferQuantLinear):
            out, inp = w.shape
            n_h = 2 if inp % 2 == 0 else 1
            # 0.9 x the block maximum / 127: the largest weights of each block are clamped.
            scale = w.view(out, 1, n_h, inp // n_h).abs().amax(dim=(1, 3), keepdim=True) * (0.9 / 127)
            m.get_parameter(out, n_h, 1, torch.tensor([[0.05]]), scale, 1, inp // n_h, inp)
        elif isinstance(m, layers.InferQuantConvTranspose2d):
            scale = w.abs().amax(dim=(0, 2, 3), keepdim=True) * (0.9 / 127)
            m.get_parameter(1, 1, torch.full((1, 1, 1, 1), 0.03), torch.zeros(1, w.shape[0], 1, 1), scale)
        elif isinstance(m, layers.InferQuantConv2d):
            scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) * (0.9 / 127)
            a_bias = torch.linspace(-0.5, 0.5, w.shape[1] * m.groups).view(1, -1, 1, 1)
            m.get_parameter(1, 1, torch.full((1, 1, 1, 1), 0.02), a_bias, scale)
        else:
            if type(m).__name__ == "Attention":  # TinyViT's and the two-way transformer's
                heads = 8 if path.startswith("mask_decoder") else m.attention_biases.shape[0]
                sizes = {
                    f"{n}_{s}": 1 for n in ("n_V", "n_H", "crb_groups", "crb_rows", "crb_cols") for s in "AB"
                }
                sizes |= {f"pad_{n}_{s}": 0 for n in ("groups", "rows", "cols") for s in "AB"}
                per_head = torch.full((1, heads, 1, 1, 1, 1, 1), 0.1)
                m.matmul1 = layers.InferQuantMatMul(mode="quant_forward")
                m.matmul1.get_parameter(per_head, per_head * 2, n_G_A=heads, n_G_B=heads, **sizes)
                m.matmul2 = layers.InferQuantMatMulPost(mode="quant_forward")
                m.matmul2.get_parameter(per_head / 127, per_head, 0.01, n_G_A=heads, n_G_B=heads, **sizes)
            continue
        m.mode = "quant_forward"


def _decorate(model: nn.Module, modeling) -> None:
    """TinyViT's lr-decay attributes on parameters, and the non-persistent buffers of the official classes."""
    for name, p in model.image_encoder.named_parameters():
        p.lr_scale, p.param_name = 0.8, name
    for m in model.image_encoder.modules():
        if isinstance(m, modeling["tiny_vit_sam"].Attention):
            n = int(m.attention_biases.shape[1] ** 0.5) ** 2
            idxs = torch.zeros(n, n, dtype=torch.long)
            m.register_buffer("attention_bias_idxs", idxs, persistent=False)
            m.register_buffer("ab", m.attention_biases.detach()[:, idxs], persistent=False)
    model.register_buffer("pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False)


def _import_packages(root: Path) -> tuple[dict, object]:
    sys.path.insert(0, str(root))
    modeling = {m: importlib.import_module(f"{_PKG}.modeling.{m}") for m in _MODELING}
    return modeling, importlib.import_module(f"{_QPKG}.layers")


def _forget_packages(root: Path) -> None:
    sys.path.remove(str(root))
    for name in [n for n in sys.modules if n.split(".")[0] in (_PKG, _QPKG)]:
        del sys.modules[name]


class StandIn:
    """The written file and what the official model holds: float tensors, the weights it runs with, quantizer keys."""

    def __init__(
        self, path: Path, small_path: Path, state: dict, expected: dict, quant_keys: list[str]
    ) -> None:
        self.path, self.small_path = path, small_path
        self.state, self.expected, self.quant_keys = state, expected, quant_keys


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> StandIn:
    root = tmp_path_factory.mktemp("qtinysam")
    _write_packages(root)
    try:
        modeling, layers = _import_packages(root)
        model = _build_tree(P.stand_in_state_dict("tinysam")[0], modeling, layers).eval()
        _calibrate(model, layers)
        _decorate(model, modeling)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        expected = {}
        quant_keys = []
        for path, m in model.named_modules():
            if isinstance(
                m,
                (
                    layers.InferQuantMatMul,
                    layers.InferQuantLinear,
                    layers.InferQuantConv2d,
                    layers.InferQuantConvTranspose2d,
                ),
            ):
                quant_keys += [f"{path}.{n}" for n, _ in m.named_buffers(recurse=False)]
                if m.mode == "quant_forward" and not isinstance(m, layers.InferQuantMatMul):
                    expected[f"{path}.weight"] = m.quant_weight_bias()[0].detach().clone()
        path = root / "tinysam_w8a8.pth"
        torch.save(model, path)
        # A small model whose wrappers are not all in the W8A8 state (raw mode, 4-bit weights).
        small = modeling["sam"].Sam()
        small.raw = layers.InferQuantLinear(6, 4)
        small.w4 = layers.InferQuantLinear(6, 4, w_bit=4, mode="quant_forward")
        for m in (small.raw, small.w4):
            m.get_parameter(4, 1, 1, torch.tensor([[0.05]]), torch.full((4, 1, 1, 1), 0.03), 1, 6, 6)
        small_path = root / "small.pth"
        torch.save(small, small_path)
        small_expected = {
            "raw.weight": small.raw.weight.detach().clone(),
            "w4.weight": small.w4.quant_weight_bias()[0],
        }
    finally:
        _forget_packages(root)
    assert importlib.util.find_spec(_PKG) is None and importlib.util.find_spec(_QPKG) is None
    expected.update({f"small:{k}": v.detach().clone() for k, v in small_expected.items()})
    return StandIn(path, small_path, state, expected, sorted(quant_keys))


@pytest.fixture(scope="module")
def loaded(stand_in):
    model, report = load_model(NAME, stand_in.path, trust_pickle=True)
    return model, report


def test_stand_in_mirrors_the_official_layout(stand_in):
    # Float keys are exactly the official tinysam keys; quantizer state rides on the same modules.
    floats, quant = Q.split_quantizer_state(stand_in.state)
    assert {k for k, *_ in P.manifest("tinysam")["keys"]} == set(floats)
    assert sorted(f"{p}.{n}" for p, b in quant.items() for n in b) == stand_in.quant_keys
    assert "image_encoder.layers.1.blocks.0.attn.qkv.w_interval" in stand_in.state
    assert "image_encoder.layers.1.blocks.0.attn.matmul1.A_interval" in stand_in.state
    assert "image_encoder.head.w_interval" not in stand_in.state  # uncalibrated wrapper


def test_loads_every_float_weight_where_it_belongs(stand_in, loaded):
    model, _ = loaded
    own = model.state_dict()
    floats, _ = Q.split_quantizer_state(stand_in.state)
    assert set(own) == set(floats)
    quantized = {k for k in stand_in.expected if not k.startswith("small:")}
    # Every calibrated conv / linear / transposed conv: 69 in the image encoder (head excluded), 49 in the decoder.
    assert len(quantized) == 118 and "mask_decoder.output_upscaling.3.weight" in quantized
    for key, value in floats.items():
        want = stand_in.expected.get(key, value)
        assert own[key].dtype == want.dtype and torch.equal(own[key], want), key
        if key in quantized:  # clamping happened, and the weight is on its 255-level grid
            assert not torch.equal(own[key], value), key
    # Untouched: biases, norms, BatchNorm statistics, embeddings, the uncalibrated head, the mask-prompt convs.
    for key in (
        "image_encoder.head.weight",
        "prompt_encoder.mask_downscaling.0.weight",
        "image_encoder.neck.1.weight",
    ):
        assert torch.equal(own[key], floats[key])


def test_loader_reports_the_quantizer_buffers_as_set_aside(stand_in, loaded):
    _, report = loaded
    assert report.set_aside == stand_in.quant_keys
    assert len(report.set_aside) > 1000 and "set aside" in report.summary()
    assert (
        sys.modules.get(_PKG) is None and sys.modules.get(_QPKG) is None
    )  # nothing of the file was imported


def test_exact_parameter_count_equals_tinysam(loaded):
    model, _ = loaded
    n = sum(p.numel() for p in model.parameters())
    assert n == get_model_info(NAME).n_params == get_model_info("tinysam").n_params == 10_130_092


def test_registry_entry():
    w = get_model_info(NAME).weights
    assert w.pickled_module and w.file_name == "tinysam_w8a8.pth" and w.sha256 is None
    assert w.url == "https://github.com/xinghaochen/TinySAM/releases/download/2.0/tinysam_w8a8.pth"


def test_refused_without_trust_pickle(stand_in):
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*--trust-pickle"):
        leansam.build_model(NAME, checkpoint=stand_in.path)


@pytest.mark.slow  # the mismatch report fits the file against every registered model (~15 s here)
def test_wrong_model_name_points_to_tinysam_q(stand_in):
    with pytest.raises(
        CheckpointError, match=r"(?s)unexpected keys .*it looks like a 'tinysam_q' checkpoint"
    ):
        leansam.build_model("tinysam", checkpoint=stand_in.path, trust_pickle=True)


def test_read_q_tinysam_returns_the_same_weights_and_every_quantizer(stand_in, loaded):
    state, layers = Q.read_q_tinysam(stand_in.path)
    own = loaded[0].state_dict()
    assert set(state) == set(own) and all(torch.equal(state[k], own[k]) for k in own)
    assert Q.quant_keys(layers) == stand_in.quant_keys
    qkv = layers["image_encoder.layers.1.blocks.0.attn.qkv"]
    assert (qkv.cls, qkv.mode, qkv.bits, qkv.weight_fake_quantized) == (
        "InferQuantLinear",
        "quant_forward",
        {"w_bit": 8, "a_bit": 8},
        True,
    )
    assert torch.equal(
        qkv.buffers["w_interval"], stand_in.state["image_encoder.layers.1.blocks.0.attn.qkv.w_interval"]
    )
    assert layers["image_encoder.layers.1.blocks.0.mlp.fc2"].cls == "InferQuantLinearPost"
    mm = layers["mask_decoder.transformer.layers.0.self_attn.matmul2"]
    assert mm.cls == "InferQuantMatMulPost" and mm.bits == {"A_bit": 8, "B_bit": 8} and "split" in mm.buffers
    head = layers["image_encoder.head"]
    assert (head.mode, head.calibrated, head.weight_fake_quantized) == ("raw", False, False)


def test_read_q_tinysam_honours_recorded_mode_and_bits(stand_in):
    state, layers = Q.read_q_tinysam(stand_in.small_path)
    assert torch.equal(state["raw.weight"], stand_in.expected["small:raw.weight"])  # "raw": float weight
    assert torch.equal(state["w4.weight"], stand_in.expected["small:w4.weight"])  # 4 bits: 16 levels
    assert state["w4.weight"].div(0.03).round().unique().numel() <= 16
    assert not layers["raw"].weight_fake_quantized and layers["w4"].weight_fake_quantized
    # The registry filter cannot see the attributes: it assumes W8 quant_forward everywhere.
    flat, _ = Q.filter_fn(load_pickled_module_checkpoint(stand_in.small_path))
    assert not torch.equal(flat["raw.weight"], state["raw.weight"])


def test_filter_passes_a_float_state_dict_through():
    state = {"image_encoder.neck.0.weight": torch.ones(2, 2, 1, 1)}
    assert Q.filter_fn(state) == (state, [])


def test_fake_quantize_weight_rejects_scales_that_do_not_fit():
    w = torch.randn(4, 6)
    good = {"w_interval": torch.full((4, 1, 2, 1), 0.1)} | {
        k: torch.tensor(v, dtype=torch.int32)
        for k, v in (("n_V", 4), ("crb_rows", 1), ("n_H", 2), ("crb_cols", 3))
    }
    assert Q.fake_quantize_weight(w, good).shape == w.shape
    with pytest.raises(ValueError, match="cannot be grouped"):
        Q.fake_quantize_weight(w, good | {"n_H": torch.tensor(3, dtype=torch.int32)})
    with pytest.raises(ValueError, match="does not fit"):
        Q.fake_quantize_weight(w, {"w_interval": torch.ones(5, 1)})


def test_cli_segment_with_trust_pickle(stand_in, tmp_path, capsys):
    image = tmp_path / "scene.png"
    Image.fromarray(P.load_case("tinysam")["image"]).save(image)
    out = tmp_path / "out"
    args = [
        "segment",
        image,
        "--point",
        "430,310",
        "--model",
        NAME,
        "--checkpoint",
        stand_in.path,
        "--out",
        out,
    ]
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-pickle" in err and not out.exists()
    code = main([str(a) for a in [*args, "--trust-pickle"]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "keys not used in image mode were set aside" in err
    meta = json.loads((out / "masks.json").read_text())
    assert meta["model"] == NAME and len(meta["masks"]) == 1
    mask = np.asarray(Image.open(out / meta["masks"][0]["file"])) > 0
    assert mask.shape == (480, 640) and meta["masks"][0]["area"] == int(mask.sum())
