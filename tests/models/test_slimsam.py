"""SlimSAM-50 / -77: the three official checkpoint forms load into the same leansam model.

1. Uniform (local-pruning) state_dicts ``SlimSAM-{50,77}-uniform.pth``: encoder parity with the
   official SlimSAM code's outputs stored in ``shared/parity/slimsam_{50,77}`` (strict load and
   predictor parity: test_registry_parity.py).
2. The same weights in transformers ``SamModel`` format (HF ``Zigeng/SlimSAM-uniform-{50,77}``):
   written here with the key mapping documented by transformers' ``convert_sam_to_hf.py``.
3. Global-pruning pickled models ``SlimSAM-{50,77}.pth``: a stand-in written by a module that is
   not importable when the file is read (the real files cannot be downloaded here).
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import leansam
from leansam.checkpoints import CheckpointError
from leansam.models.sam import ImageFeatures
from leansam.models.vit import ViTImageEncoder
from leansam.registry import get_model_info
from leansam.zoo import slimsam
from tests import parity as P
from tests import tolerances as T

NAMES = ("slimsam_50", "slimsam_77")


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def ckpt_path(name, tmp_path_factory):
    return P.write_stand_in_checkpoint(
        name, tmp_path_factory.mktemp(name) / f"SlimSAM-{name[-2:]}-uniform.pth"
    )


@pytest.fixture(scope="module")
def model(name, ckpt_path):
    return leansam.build_model(name, checkpoint=ckpt_path)


# Encoder runs (about 10 s each for SlimSAM-50 on 2 shared cores) only for the parity tests;
# SlimSAM-50's are marked slow, SlimSAM-77's run by default.
@pytest.fixture(scope="module", params=[pytest.param("slimsam_50", marks=pytest.mark.slow), "slimsam_77"])
def parity_name(request):
    return request.param


@pytest.fixture(scope="module")
def parity_model(parity_name, tmp_path_factory):
    path = P.write_stand_in_checkpoint(parity_name, tmp_path_factory.mktemp(parity_name) / "uniform.pth")
    return leansam.build_model(parity_name, checkpoint=path)


@pytest.fixture(scope="module")
def case(parity_name):
    return P.load_case(parity_name)


def test_embedding_matches_fixture(parity_model, case):
    with torch.no_grad():
        mine = parity_model.image_encoder(P.encoder_input(case))
    T.check_floats(f"fixture/{parity_model.name}/embedding", mine, case["embedding"])


# --- 2. transformers (Hugging Face) format -----------------------------------------------------

# transformers' convert_sam_to_hf.py: KEYS_TO_MODIFY_MAPPING, applied in this order as substring
# replacements to every segment-anything key; then output_hypernetworks_mlps.N.layers.{0,1,2} ->
# proj_in / layers.0 / proj_out; then shared_image_embedding.positional_embedding = the prompt
# encoder's (tied) matrix. Written independently of leansam's filter (which goes the other way).
_SAM_TO_HF = (
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
)
_HYPER = re.compile(r".*\.output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)\..*")

# Names that transformers' modeling_sam.py (SamModel) defines, spot-checked against the conversion.
_KNOWN_HF_KEYS = {
    "shared_image_embedding.positional_embedding",
    "vision_encoder.pos_embed",
    "vision_encoder.patch_embed.projection.weight",
    "vision_encoder.layers.0.layer_norm1.weight",
    "vision_encoder.layers.2.attn.qkv.weight",
    "vision_encoder.layers.2.attn.rel_pos_h",
    "vision_encoder.layers.11.mlp.lin2.bias",
    "vision_encoder.neck.conv1.weight",
    "vision_encoder.neck.layer_norm2.bias",
    "prompt_encoder.point_embed.3.weight",
    "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.no_mask_embed.weight",
    "prompt_encoder.mask_embed.conv3.weight",
    "prompt_encoder.mask_embed.layer_norm2.weight",
    "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight",
    "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
    "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
    "mask_decoder.transformer.layers.0.layer_norm4.weight",
    "mask_decoder.transformer.layers.1.mlp.lin1.weight",
    "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight",
    "mask_decoder.transformer.layer_norm_final_attn.bias",
    "mask_decoder.upscale_conv1.weight",
    "mask_decoder.upscale_layer_norm.weight",
    "mask_decoder.upscale_conv2.bias",
    "mask_decoder.output_hypernetworks_mlps.3.proj_in.weight",
    "mask_decoder.output_hypernetworks_mlps.3.layers.0.weight",
    "mask_decoder.output_hypernetworks_mlps.3.proj_out.bias",
    "mask_decoder.iou_prediction_head.proj_in.weight",
    "mask_decoder.iou_prediction_head.layers.0.bias",
    "mask_decoder.iou_prediction_head.proj_out.weight",
}


def to_hf_state(state: dict[str, torch.Tensor], keep_tied_alias: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in _SAM_TO_HF:
            key = key.replace(old, new)
        m = _HYPER.match(key)
        if m:
            layer = int(m.group(2))
            key = key.replace(f"layers.{layer}", ("proj_in", "layers.0", "proj_out")[layer])
        out[key] = value.contiguous()
    alias = out["prompt_encoder.shared_embedding.positional_embedding"]
    out["shared_image_embedding.positional_embedding"] = alias.clone()  # separate tensors in the file
    if not keep_tied_alias:  # save_pretrained drops the tied alias (SamModel._tied_weights_keys)
        del out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def test_hf_safetensors_loads_into_the_same_model(name, model, ckpt_path, tmp_path):
    state = torch.load(ckpt_path, weights_only=True)
    hf = to_hf_state(state, keep_tied_alias=False)  # the alias case: next test
    assert set(hf) >= _KNOWN_HF_KEYS
    assert not [k for k in hf if re.search(r"blocks|\.norm|output_upscaling|mask_downscaling|pe_layer", k)]
    path = tmp_path / "model.safetensors"
    save_file(hf, str(path))

    hf_model = leansam.build_model(name, checkpoint=path)
    mine, theirs = hf_model.state_dict(), model.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # Outputs: both models decode the same image features identically (their encoders have
    # bit-equal weights, and the encoders' parity is checked above on the plain checkpoint).
    features = ImageFeatures(torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0)))
    case = P.load_case(name)
    outs = []
    for m in (hf_model, model):
        pred = leansam.SamPredictor(m)
        pred.set_features(features, case["image"].shape[:2])
        outs.append(pred.predict(**P.case_prompts(case, "box_points"), multimask_output=True))
    (m1, s1, l1), (m2, s2, l2) = outs
    assert np.array_equal(l1, l2) and np.array_equal(s1, s2) and np.array_equal(m1, m2)


def test_hf_filter_reports_the_tied_alias_and_reads_sam_vit_base_layout():
    # facebook/sam-vit-base has the same layout: every SAM ViT-B key round-trips (shapes on meta).
    with torch.device("meta"):
        state = get_model_info("sam_vit_b").build().state_dict()
    mapped, set_aside = slimsam.filter_fn(to_hf_state(state, keep_tied_alias=True))
    assert set_aside == ["prompt_encoder.shared_embedding.positional_embedding"]
    assert set(mapped) == set(state)
    assert all(mapped[k].shape == v.shape for k, v in state.items())


# --- 3. global-pruning pickled models -----------------------------------------------------------

# Mirrors the structure of SlimSAM's segment_anything_kd models after global pruning (written
# from their description, not copied): separate q/k/v projections with per-block widths,
# rel-pos tables as wide as a q head, blocks that return tuples, DataParallel image encoder.
_KD_SOURCE = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class LayerNorm2d(nn.Module):
        def __init__(self, c, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(1 + 0.1 * torch.randn(c))
            self.bias = nn.Parameter(0.1 * torch.randn(c))
            self.eps = eps

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


    class MLPBlock(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.lin1, self.lin2, self.act = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.GELU()

        def forward(self, x):
            mid = self.act(self.lin1(x))
            return self.lin2(mid), mid


    class Attention(nn.Module):
        def __init__(self, dim, qk, v, heads, size):
            super().__init__()
            self.input_size, self.num_heads, self.use_rel_pos = (size, size), heads, True
            self.scale = (qk // heads) ** -0.5
            self.q, self.k, self.v = nn.Linear(dim, qk), nn.Linear(dim, qk), nn.Linear(dim, v)
            self.proj = nn.Linear(v, dim)
            self.rel_pos_h = nn.Parameter(0.2 * torch.randn(2 * size - 1, qk // heads))
            self.rel_pos_w = nn.Parameter(0.2 * torch.randn(2 * size - 1, qk // heads))

        def forward(self, x):
            b, h, w, _ = x.shape
            q, k, v = (t(x).reshape(b, h * w, self.num_heads, -1).transpose(1, 2) for t in (self.q, self.k, self.v))
            attn = (q * self.scale) @ k.transpose(-2, -1)
            d = torch.arange(h)[:, None] - torch.arange(h)[None, :] + h - 1
            qg = q.reshape(b, self.num_heads, h, w, -1)
            rel_h = torch.einsum("bnyxc,ykc->bnyxk", qg, self.rel_pos_h[d])
            rel_w = torch.einsum("bnyxc,xkc->bnyxk", qg, self.rel_pos_w[d])
            attn = attn.view(b, self.num_heads, h, w, h, w) + rel_h[..., :, None] + rel_w[..., None, :]
            attn = attn.view(b, self.num_heads, h * w, h * w).softmax(-1)
            out = (attn @ v).transpose(1, 2).reshape(b, h, w, -1)
            return self.proj(out), torch.cat([q, k], 0)


    class Block(nn.Module):
        def __init__(self, dim, dims, heads, window, grid):
            super().__init__()
            qk, v, hidden = dims
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention(dim, qk, v, heads, window or grid)
            self.mlp = MLPBlock(dim, hidden)
            self.window_size = window

        def forward(self, x):
            shortcut, x = x, self.norm1(x)
            ws, (b, h, w, c) = self.window_size, x.shape
            if ws:
                ph, pw = -h % ws, -w % ws
                x = F.pad(x, (0, 0, 0, pw, 0, ph))
                hp, wp = h + ph, w + pw
                x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
            x, qkv_emb = self.attn(x)
            if ws:
                x = x.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
                x = x[:, :h, :w]
            x = shortcut + x
            y, mid = self.mlp(self.norm2(x))
            return x + y, qkv_emb, mid, torch.cat([x + y, x], 0)


    class PatchEmbed(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Conv2d(3, dim, 16, 16)

        def forward(self, x):
            return self.proj(x).permute(0, 2, 3, 1)


    class ImageEncoderViT(nn.Module):
        def __init__(self, img_size, dim, heads, block_dims, window, global_attn_indexes):
            super().__init__()
            grid = img_size // 16
            self.img_size, self.depth, self.num_heads = img_size, len(block_dims), heads
            self.global_attn_indexes = global_attn_indexes
            self.patch_embed = PatchEmbed(dim)
            self.pos_embed = nn.Parameter(0.5 * torch.randn(1, grid, grid, dim))
            self.blocks = nn.ModuleList(
                Block(dim, d, heads, 0 if i in global_attn_indexes else window, grid) for i, d in enumerate(block_dims)
            )
            self.neck = nn.Sequential(
                nn.Conv2d(dim, 256, 1, bias=False), LayerNorm2d(256), nn.Conv2d(256, 256, 3, padding=1, bias=False),
                LayerNorm2d(256),
            )

        def embed(self, x):
            x = self.patch_embed(x) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)[0]
            return self.neck(x.permute(0, 3, 1, 2))

        def forward(self, x):
            return self.embed(x), None


    class Sam(nn.Module):
        def __init__(self, image_encoder, prompt_encoder, mask_decoder):
            super().__init__()
            self.image_encoder, self.prompt_encoder, self.mask_decoder = image_encoder, prompt_encoder, mask_decoder
            self.register_buffer("pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False)
            self.register_buffer("pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False)
            self.mask_threshold, self.image_format = 0.0, "RGB"
    """
)
_KD_MODULE = "leansam_test_slimsam_kd"
# Per block (qk, v, mlp): widths differ block to block; block 2 has v narrower than q/k.
_BLOCK_DIMS = ((16, 16, 40), (8, 8, 24), (12, 10, 56), (16, 16, 8))


def _input(img_size: int) -> torch.Tensor:
    return torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))


def _write_global_checkpoint(
    path, img_size: int, window: int, break_scale: bool = False, reference: bool = True
) -> torch.Tensor | None:
    """torch.save of a kd-style pruned Sam; returns its encoder's output on a fixed input (if ``reference``)."""
    sys.path.insert(0, str(path.parent))
    (path.parent / f"{_KD_MODULE}.py").write_text(_KD_SOURCE)
    try:
        kd = importlib.import_module(_KD_MODULE)
        torch.manual_seed(0)
        enc = kd.ImageEncoderViT(img_size, 24, 2, _BLOCK_DIMS, window, (1, 3)).eval()
        if break_scale:
            enc.blocks[0].attn.scale = 0.125  # left at the unpruned head size: not what the shapes say
        ref = None
        if reference:
            with torch.no_grad():
                ref = enc.embed(_input(img_size))
        donor = get_model_info("slimsam_77").build()  # SAM prompt encoder / mask decoder modules
        sam = kd.Sam(torch.nn.DataParallel(enc), donor.prompt_encoder, donor.mask_decoder)
        torch.save(sam, path)
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop(_KD_MODULE, None)
    return ref


@pytest.fixture(scope="module")
def global_small(tmp_path_factory):
    path = tmp_path_factory.mktemp("global") / "SlimSAM-77.pth"
    return path, _write_global_checkpoint(path, img_size=256, window=6)


def test_global_checkpoint_state_and_architecture(global_small):
    path, _ = global_small
    state, arch = slimsam.read_global_pruned_checkpoint(path)
    assert _KD_MODULE not in sys.modules
    assert arch.block_dims == _BLOCK_DIMS and not arch.is_uniform
    assert (arch.embed_dim, arch.num_heads, arch.depth, arch.img_size) == (24, 2, 4, 256)
    assert (arch.window_size, arch.global_attn_indexes, arch.out_chans) == (6, (1, 3), 256)
    assert not [k for k in state if ".module." in k or re.search(r"attn\.[qkv]\.", k)]
    assert state["image_encoder.blocks.2.attn.qkv.weight"].shape == (12 + 12 + 10, 24)
    assert state["image_encoder.blocks.2.attn.proj.weight"].shape == (24, 10)
    assert "pixel_mean" not in state
    # Decoder and prompt encoder keys are SAM's, exactly as the registered model has them.
    own = get_model_info("slimsam_77").build().state_dict()
    assert {k for k in state if not k.startswith("image_encoder.")} == {
        k for k in own if not k.startswith("image_encoder.")
    }


def test_global_checkpoint_with_inconsistent_scale_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    _write_global_checkpoint(path, img_size=256, window=6, break_scale=True)
    with pytest.raises(ValueError, match=r"attention scale 0\.125"):
        slimsam.read_global_pruned_checkpoint(path)


def test_global_checkpoint_encoder_matches_the_pruned_model(global_small):
    path, ref = global_small
    state, arch = slimsam.read_global_pruned_checkpoint(path)
    enc = ViTImageEncoder(arch.vit_config()).eval()
    enc.load_state_dict(P.sub_state_dict(state, "image_encoder."), strict=True)
    with torch.no_grad():
        out = enc(_input(256))
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_global_checkpoint_through_the_registry(tmp_path):
    path = tmp_path / "SlimSAM-77.pth"
    _write_global_checkpoint(path, img_size=1024, window=14, reference=False)  # numerics: test above
    with pytest.raises(CheckpointError, match="trust-pickle"):
        leansam.build_model("slimsam_77", checkpoint=path)
    with pytest.raises(CheckpointError, match="closer to 'slimsam_77'"):
        leansam.build_model("slimsam_50", checkpoint=path, trust_pickle=True)
    model = leansam.build_model("slimsam_77", checkpoint=path, trust_pickle=True)
    assert [b.mlp.lin1.out_features for b in model.image_encoder.blocks] == [d[2] for d in _BLOCK_DIMS]
    state, _ = slimsam.read_global_pruned_checkpoint(path)
    own = model.state_dict()
    assert set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)
    with torch.no_grad():
        out = model.image_encoder(_input(1024))
    pred = leansam.SamPredictor(model)
    pred.set_features(ImageFeatures(out), (480, 640))
    masks, iou, _ = pred.predict(box=np.array([120.0, 80.0, 330.0, 260.0]), multimask_output=True)
    assert masks.shape == (3, 480, 640) and np.isfinite(iou).all()
