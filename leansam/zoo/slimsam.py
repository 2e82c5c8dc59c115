"""SlimSAM (Chen et al., 2023): SAM ViT-B pruned to 50% / 77% of its encoder, SAM's decoder unchanged.

One leansam model per pruning ratio (``slimsam_50``, ``slimsam_77``) loads every official form:

1. the *uniform* (local-pruning) checkpoints ``SlimSAM-50-uniform.pth`` / ``SlimSAM-77-uniform.pth``:
   plain state_dicts in SAM ViT-B layout with embed 384 / 168, MLP 1536 / 696, 12 heads
   (head dim 32 / 14; rel-pos tables as wide as a head);
2. the same weights in Hugging Face transformers format (``Zigeng/SlimSAM-uniform-50`` / ``-77``,
   ``model.safetensors`` with ``SamModel`` key names): :func:`filter_fn` renames them (this also
   reads any transformers ``SamModel`` checkpoint, e.g. ``facebook/sam-vit-base``);
3. the *global*-pruning checkpoints ``SlimSAM-50.pth`` / ``SlimSAM-77.pth``: whole pickled
   models (``image_encoder`` wrapped in ``DataParallel``; attention with separate ``q``/``k``/``v``
   projections; per-block widths). They are read with :mod:`leansam.pickle_safe` (opt-in:
   ``trust_pickle=True``), their ``q``/``k``/``v`` are merged into ``qkv`` and the per-block widths
   are inferred from the tensor shapes (:func:`infer_pruned_vit_arch`).

Pre/post-processing and prompts are SAM's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.sam import Sam
from ..models.vit import ViTConfig
from ..registry import ModelInfo, Weights
from ._rename import compile_rules, rename_key
from .sam import build_sam_vit

SLIMSAM_50 = ViTConfig(embed_dim=384, depth=12, num_heads=12, mlp_dim=1536, global_attn_indexes=(2, 5, 8, 11))
SLIMSAM_77 = ViTConfig(embed_dim=168, depth=12, num_heads=12, mlp_dim=696, global_attn_indexes=(2, 5, 8, 11))


def build_slimsam_50() -> Sam:
    """SlimSAM-50 (uniform widths: embed 384, MLP 1536, 12 heads of 32)."""
    return build_sam_vit(SLIMSAM_50)


def build_slimsam_77() -> Sam:
    """SlimSAM-77 (uniform widths: embed 168, MLP 696, 12 heads of 14)."""
    return build_sam_vit(SLIMSAM_77)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers ``SamModel`` keys -> segment-anything keys.

_PE_KEY = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_PE_KEYS = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)

# First matching rule wins; keys matching none are already in segment-anything form
# (e.g. mask_decoder.iou_token, ...self_attn.q_proj, ...mlp.lin1, prompt_encoder.no_mask_embed).
_HF_RULES = compile_rules(
    (
        (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
        (r"^vision_encoder\.layers\.(\d+)\.layer_norm([12])\.", r"image_encoder.blocks.\1.norm\2."),
        (r"^vision_encoder\.layers\.(\d+)\.", r"image_encoder.blocks.\1."),
        (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
        (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
        (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
        (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
        (r"^vision_encoder\.", "image_encoder."),
        (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
        (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
        (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
        (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
        (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
        (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
        (
            r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.",
            r"mask_decoder.transformer.layers.\1.norm\2.",
        ),
        (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
        (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
        (r"^mask_decoder\.ups(?:cale|acle)_layer_norm\.", "mask_decoder.output_upscaling.1."),
        (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    )
)
# transformers' SamFeedForward: proj_in, layers.0..n-1, proj_out == segment-anything MLP layers.0..n+1.
_HF_FFN = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|proj_out|layers\.(\d+))\.(.*)$"
)


def is_hf_sam_state(state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` uses transformers ``SamModel`` key names (``vision_encoder.*`` ...)."""
    return any(
        k.startswith(
            (
                "vision_encoder.",
                "shared_image_embedding.",
                "prompt_encoder.point_embed.",
                "mask_decoder.upscale_",
            )
        )
        for k in state
    )


def hf_sam_to_official(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames a transformers ``SamModel`` state_dict to segment-anything keys: (state, keys set aside).

    Tensors are unchanged: transformers stores ``qkv``, rel-pos tables, ``pos_embed``
    (1 x g x g x C) and the random-Fourier matrix (2 x 128) exactly as segment-anything does.
    The positional matrix appears as ``shared_image_embedding.positional_embedding`` and/or its
    tied alias ``prompt_encoder.shared_embedding.positional_embedding``; the first is used and
    the alias set aside. Unknown keys are passed through (the strict loader reports them).
    """
    hidden: dict[str, int] = {}
    for k in state:
        m = _HF_FFN.match(k)
        if m and m.group(3) is not None:
            hidden[m.group(1)] = max(hidden.get(m.group(1), 0), int(m.group(3)) + 1)
    out: dict[str, torch.Tensor] = {}
    set_aside: list[str] = []
    pe = [k for k in _HF_PE_KEYS if k in state]
    if pe:
        out[_PE_KEY] = state[pe[0]]
        set_aside += pe[1:]
    for k, v in state.items():
        if k in _HF_PE_KEYS:
            continue
        new = _rename_hf_key(k, hidden)
        if new in out:  # two HF keys for one official key: keep the first, report the other
            set_aside.append(k)
            continue
        out[new] = v
    return out, set_aside


def _rename_hf_key(key: str, hidden: dict[str, int]) -> str:
    m = _HF_FFN.match(key)
    if m:
        prefix, part, idx, rest = m.groups()
        n = 0 if part == "proj_in" else (hidden.get(prefix, 0) + 1 if part == "proj_out" else int(idx) + 1)
        return f"{prefix}.layers.{n}.{rest}"
    return rename_key(key, _HF_RULES)


# ---------------------------------------------------------------------------------------------
# The checkpoint filter.

_QKV_SPLIT = re.compile(r"^(image_encoder\.blocks\.\d+\.attn)\.([qkv])\.(weight|bias)$")


def merge_split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenates SlimSAM's separate ``attn.q`` / ``attn.k`` / ``attn.v`` into ``attn.qkv`` (rows q, k, v).

    Per head, ``q``/``k``/``v`` rows are contiguous in each projection (``reshape(..., heads, -1)``),
    exactly like the three thirds of segment-anything's ``qkv``; with pruned blocks ``v`` may be
    narrower or wider than ``q``/``k``. Incomplete triples are left as they are.
    """
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _QKV_SPLIT.match(k)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
    out = dict(state)
    for (attn, kind), parts in groups.items():
        if set(parts) == {"q", "k", "v"}:
            for p in "qkv":
                del out[f"{attn}.{p}.{kind}"]
            out[f"{attn}.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return {
        re.sub(r"^(image_encoder|prompt_encoder|mask_decoder)\.module\.", r"\1.", k): v
        for k, v in state.items()
    }


def filter_fn(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Maps any official SlimSAM checkpoint to leansam keys: (state, keys set aside).

    Handles transformers ``SamModel`` keys (HF releases), the ``.module`` of a ``DataParallel``
    image encoder and the split ``q``/``k``/``v`` projections of the global-pruning models.
    A uniform checkpoint in segment-anything layout passes through unchanged.
    """
    set_aside: list[str] = []
    if is_hf_sam_state(state):
        state, set_aside = hf_sam_to_official(state)
    state = merge_split_qkv(_strip_data_parallel(state))
    return state, set_aside


# ---------------------------------------------------------------------------------------------
# Per-block widths of a pruned ViT, read from tensor shapes.


@dataclass(frozen=True)
class PrunedViTArch:
    """Architecture of a (possibly non-uniformly) pruned SAM ViT encoder, inferred from a state_dict.

    ``block_dims[i] = (qk_dim, v_dim, mlp_dim)`` of block i: q and k project to ``qk_dim``
    (``num_heads`` heads of ``qk_dim // num_heads``, the width of the rel-pos tables), v to
    ``v_dim``, the MLP hides ``mlp_dim``. Every block keeps ``embed_dim`` on its residual path.
    """

    img_size: int
    patch_size: int
    embed_dim: int
    num_heads: int
    depth: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int
    qkv_bias: bool
    block_dims: tuple[tuple[int, int, int], ...]

    @property
    def is_uniform(self) -> bool:
        """True when every block has q/k/v width ``embed_dim`` and the same MLP width (plain ``ViTConfig``)."""
        m = self.block_dims[0][2]
        return all(d == (self.embed_dim, self.embed_dim, m) for d in self.block_dims)

    def vit_config(self) -> ViTConfig:
        """The leansam ``ViTConfig``; per-block widths need ``ViTConfig.block_dims`` (see module docs)."""
        kw = dict(
            img_size=self.img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_dim=self.block_dims[0][2],
            out_chans=self.out_chans,
            qkv_bias=self.qkv_bias,
            window_size=self.window_size,
            global_attn_indexes=self.global_attn_indexes,
        )
        if self.is_uniform:
            return ViTConfig(**kw)
        return ViTConfig(**kw, block_dims=self.block_dims)


def infer_pruned_vit_arch(state: dict[str, torch.Tensor], prefix: str = "image_encoder.") -> PrunedViTArch:
    """Reads a SAM ViT encoder's widths from its (leansam-keyed, ``qkv``-merged) state_dict.

    Per block: ``qkv`` rows = 2 qk + v, ``proj`` columns = v, rel-pos width = qk / heads
    (so heads = qk / rel-pos width), ``mlp.lin1`` rows = MLP width; a block whose rel-pos table
    covers the whole grid is global, the others share one window size. Raises ``ValueError``
    when a key is missing or the shapes are inconsistent.
    """

    def get(key: str) -> torch.Tensor:
        if prefix + key not in state:
            raise ValueError(f"no {prefix}{key} in the state_dict")
        return state[prefix + key]

    pos = get("pos_embed")
    if pos.ndim != 4:
        raise ValueError(f"{prefix}pos_embed has shape {tuple(pos.shape)}, expected 1 x g x g x C")
    grid, embed = pos.shape[1], pos.shape[3]
    patch = get("patch_embed.proj.weight").shape[-1]
    idx = sorted(
        {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    )
    if not idx or idx != list(range(len(idx))):
        raise ValueError(f"{prefix}blocks.N are missing or not numbered 0..N-1")
    dims, heads_seen, windows, global_idx = [], set(), set(), []
    for i in idx:
        b = f"blocks.{i}."
        rows = get(b + "attn.qkv.weight").shape[0]
        v = get(b + "attn.proj.weight").shape[1]
        rel = get(b + "attn.rel_pos_h")
        qk2 = rows - v
        if qk2 <= 0 or qk2 % 2 or qk2 // 2 % rel.shape[1]:
            raise ValueError(
                f"block {i}: qkv rows {rows}, proj width {v}, rel-pos width {rel.shape[1]} disagree"
            )
        qk = qk2 // 2
        heads_seen.add(qk // rel.shape[1])
        size = (rel.shape[0] + 1) // 2
        if size == grid:
            global_idx.append(i)
        else:
            windows.add(size)
        dims.append((qk, v, get(b + "mlp.lin1.weight").shape[0]))
    if len(heads_seen) != 1 or len(windows) > 1:
        raise ValueError(f"inconsistent head counts {sorted(heads_seen)} or window sizes {sorted(windows)}")
    heads = heads_seen.pop()
    if any(v % heads for _, v, _ in dims):
        raise ValueError(f"a v width in {dims} is not a multiple of {heads} heads")
    return PrunedViTArch(
        img_size=grid * patch,
        patch_size=patch,
        embed_dim=embed,
        num_heads=heads,
        depth=len(idx),
        window_size=windows.pop() if windows else 0,
        global_attn_indexes=tuple(global_idx),
        out_chans=get("neck.0.weight").shape[0],
        qkv_bias=prefix + "blocks.0.attn.qkv.bias" in state,
        block_dims=tuple(dims),
    )


def _encoder_numel(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for k, v in state.items() if k.startswith("image_encoder."))


def _registered_encoder_numel(cfg: ViTConfig) -> int:
    with torch.device("meta"):
        return _encoder_numel(build_sam_vit(cfg).state_dict())


def _arch_from_state(
    state: dict[str, torch.Tensor], name: str, own: ViTConfig, other: tuple[str, ViTConfig]
) -> Sam | None:
    from ..checkpoints import CheckpointError

    try:
        arch = infer_pruned_vit_arch(state)
    except ValueError:
        return None  # not a SAM ViT state_dict: the default builder's strict load reports it
    if arch.is_uniform:
        return None  # uniform widths: the registered architecture (strict load checks the sizes)
    n = _encoder_numel(state)
    mine, theirs = _registered_encoder_numel(own), _registered_encoder_numel(other[1])
    if abs(math.log(n / theirs)) < abs(math.log(n / mine)):
        raise CheckpointError(
            f"this globally pruned SlimSAM encoder has {n:,} weights, closer to {other[0]!r} "
            f"({theirs:,}) than to {name!r} ({mine:,}): use --model {other[0]}"
        )
    try:
        cfg = arch.vit_config()
    except NotImplementedError as e:
        raise CheckpointError(f"cannot build {name!r} for this checkpoint: {e}") from e
    return build_sam_vit(cfg)


def arch_from_state_50(state: dict[str, torch.Tensor]) -> Sam | None:
    """Registry hook: a SlimSAM-50 whose widths fit a globally pruned state_dict (None: the uniform model)."""
    return _arch_from_state(state, "slimsam_50", SLIMSAM_50, ("slimsam_77", SLIMSAM_77))


def arch_from_state_77(state: dict[str, torch.Tensor]) -> Sam | None:
    """Registry hook: a SlimSAM-77 whose widths fit a globally pruned state_dict (None: the uniform model)."""
    return _arch_from_state(state, "slimsam_77", SLIMSAM_77, ("slimsam_50", SLIMSAM_50))


def read_global_pruned_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], PrunedViTArch]:
    """Reads a global-pruning SlimSAM file (``SlimSAM-50.pth``) safely: (leansam state_dict, its architecture).

    Uses :func:`leansam.pickle_safe.safe_torch_load` (no foreign code runs; only call it on a
    file you chose to trust), flattens the model, applies :func:`filter_fn`, infers the widths,
    and cross-checks them with the attributes the pickle recorded (``num_heads``, ``scale``,
    ``window_size`` of every block): a mismatch raises ``ValueError`` instead of building a
    model that would compute something else.
    """
    from ..pickle_safe import PickledCheckpointError, StubObject, module_state_dict, safe_torch_load

    obj = safe_torch_load(path)
    if not isinstance(obj, StubObject) or not obj.is_module:
        raise PickledCheckpointError(f"{path} does not hold a pickled model")
    state, _ = filter_fn(module_state_dict(obj))
    arch = infer_pruned_vit_arch(state)
    enc = obj.image_encoder
    if "module" in enc.children():
        enc = enc.module
    blocks = enc.blocks.children()
    for i, (qk, _, _) in enumerate(arch.block_dims):
        blk = blocks[str(i)]
        rec = blk.attn.__dict__  # attributes the pickle recorded (absent ones are not checked)
        heads, scale, rel = rec.get("num_heads"), rec.get("scale"), rec.get("use_rel_pos")
        window = blk.__dict__.get("window_size")
        expect_window = 0 if i in arch.global_attn_indexes else arch.window_size
        if heads is not None and heads != arch.num_heads:
            raise ValueError(f"block {i}: the pickle says {heads} heads, the shapes say {arch.num_heads}")
        if window is not None and window != expect_window:
            raise ValueError(f"block {i}: the pickle says window {window}, the shapes say {expect_window}")
        if scale is not None and not math.isclose(scale, (qk // arch.num_heads) ** -0.5, rel_tol=1e-6):
            raise ValueError(
                f"block {i}: attention scale {scale} is not head_dim**-0.5 = {(qk // arch.num_heads) ** -0.5}"
            )
        if rel is False:
            raise ValueError(f"block {i} has use_rel_pos=False but stores rel-pos tables")
    return state, arch


# ---------------------------------------------------------------------------------------------

_SOURCE = "https://github.com/czg1225/SlimSAM"
_PAPER = "0.1% Data Makes Segment Anything Slim (arXiv:2312.05284)"


def _weights(ratio: int) -> Weights:
    # The uniform checkpoints as released by the authors on Hugging Face (transformers format,
    # same weights as the Google-Drive SlimSAM-<ratio>-uniform.pth). Upstream's file name is
    # model.safetensors for both ratios, hence the distinct cache name.
    return Weights(
        url=f"https://huggingface.co/Zigeng/SlimSAM-uniform-{ratio}/resolve/main/model.safetensors",
        file_name=f"SlimSAM-uniform-{ratio}.safetensors",
        sha256=None,  # upstream publishes none; no two independent sources found
        license="Apache-2.0",
        source=_SOURCE,
        paper=_PAPER,
    )


MODELS = (
    ModelInfo(
        name="slimsam_50",
        family="slimsam",
        builder=build_slimsam_50,
        weights=_weights(50),
        checkpoint_filter=filter_fn,
        arch_from_state=arch_from_state_50,
        n_params=27_961_776,
        description="SlimSAM-50: SAM ViT-B encoder pruned to embed 384 / MLP 1536 (also reads SlimSAM-50.pth)",
    ),
    ModelInfo(
        name="slimsam_77",
        family="slimsam",
        builder=build_slimsam_77,
        weights=_weights(77),
        checkpoint_filter=filter_fn,
        arch_from_state=arch_from_state_77,
        n_params=9_723_528,
        description="SlimSAM-77: SAM ViT-B encoder pruned to embed 168 / MLP 696 (also reads SlimSAM-77.pth)",
    ),
)
