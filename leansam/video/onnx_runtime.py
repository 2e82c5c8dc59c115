"""Tracking on ONNX Runtime: the four graphs of :mod:`leansam.video.onnx` behind ``VideoPredictor``.

    model = load_onnx_video_model("onnx/efficienttam_ti")
    predictor = leansam.VideoPredictor(model)          # same calls, same tracks as with torch

:class:`OnnxVideoModel` has the methods :class:`~leansam.video.predictor.VideoPredictor` calls on a
:class:`~leansam.video.model.VideoModel`; the networks run in ONNX Runtime, the selection logic is
the torch model's own code. Memories and pointers are packed into the export's fixed slots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..export.runtime import OnnxModelError, _ort, default_providers, session_options
from ..models.mask_decoder import dynamic_multimask
from .config import VIDEO_CONFIGS
from .model import FrameFeatures, HeadOutput, VideoModel, head_inputs
from .onnx import FILES, FORMAT


class OnnxVideoModel:
    """A tracking model whose image encoder, memory attention, heads and memory encoder run in ORT.

    Args:
        folder: the output folder of :func:`~leansam.video.onnx.export_video_onnx`.
        providers: ONNX Runtime execution providers (default: CUDA when available, then CPU).
        threads: CPU threads per session (default: ONNX Runtime's).
    """

    def __init__(
        self, folder: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        ort = _ort()
        folder = Path(folder)
        options = session_options(threads)
        providers = providers or default_providers()
        self.sessions = {}
        meta: dict[str, str] = {}
        for role, file in FILES.items():
            path = folder / file
            if not path.is_file():
                raise OnnxModelError(
                    f"{path}: missing (export with `leansam export onnx --video` or export_video_onnx)"
                )
            try:
                sess = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as e:
                raise OnnxModelError(f"{path}: cannot be loaded by ONNX Runtime: {e}") from None
            m = sess.get_modelmeta().custom_metadata_map
            if m.get("leansam.format") != FORMAT or m.get("leansam.role") != role:
                raise OnnxModelError(f"{path}: not a leansam {role} graph of format {FORMAT}")
            if meta and m.get("leansam.model") != meta["leansam.model"]:
                raise OnnxModelError(f"{path} is for {m.get('leansam.model')}, not {meta['leansam.model']}")
            meta = m
            self.sessions[role] = sess
        self.name = meta["leansam.model"]
        self.cfg = VIDEO_CONFIGS[self.name]
        self.memory_slots, self.pointer_slots = (
            int(meta["leansam.memory_slots"]),
            int(meta["leansam.pointer_slots"]),
        )
        c = self.cfg.hidden_dim
        self.no_mem_embed = torch.tensor(json.loads(meta["leansam.no_mem_embed"])).view(1, 1, c)
        self.no_obj_ptr = torch.tensor(json.loads(meta["leansam.no_obj_ptr"])).view(1, c)
        conv = json.loads(meta["leansam.mask_downsample"])
        self._down_w = torch.tensor(conv["weight"]).view(1, 1, 4, 4)
        self._down_b = torch.tensor(conv["bias"])
        self._dynamic = json.loads(meta["leansam.dynamic_multimask"])
        self._high_res = "high_res_feats_0" in [o.name for o in self.sessions["image_encoder"].get_outputs()]

    device = torch.device("cpu")

    def eval(self) -> OnnxVideoModel:
        return self

    def to(self, device: str | torch.device) -> OnnxVideoModel:
        if torch.device(device).type != "cpu":
            raise ValueError("OnnxVideoModel keeps its tensors on the CPU (choose the device by providers)")
        return self

    def _run(self, role: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        sess = self.sessions[role]
        # The exporter drops inputs a model does not use (EfficientTAM's memory encoder: the score).
        names = {i.name for i in sess.get_inputs()}
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feeds.items() if k in names}
        return [torch.from_numpy(a) for a in sess.run(None, arrays)]

    # --- the VideoModel interface ------------------------------------------------------------------
    def encode_frame(self, x: torch.Tensor) -> FrameFeatures:
        """1 x 3 x S x S -> :class:`FrameFeatures`."""
        out = self._run("image_encoder", {"image": x.float()})
        return FrameFeatures(out[0], out[1:] if self._high_res else None)

    def mask_downsample(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask prompt's 4 x 4 stride-4 convolution (B x 1 x S x S -> B x 1 x S/4 x S/4)."""
        return F.conv2d(mask, self._down_w, self._down_b, stride=4)

    def sam_heads(self, feats, high_res, points, mask_input, multimask: bool) -> HeadOutput:
        """As :meth:`VideoModel.sam_heads` (batch 1)."""
        side = self.cfg.image_size // 4
        coords, labels, mask_input = head_inputs(feats, points, mask_input, (side, side))
        feeds = {"features": feats}
        if self._high_res:
            feeds.update(high_res_feats_0=high_res[0], high_res_feats_1=high_res[1])
        feeds.update(
            point_coords=coords.float(),
            point_labels=labels.float(),
            mask_input=mask_input.float() if mask_input is not None else torch.zeros(1, 1, side, side),
            has_mask_input=torch.ones(1) if mask_input is not None else torch.zeros(1),
        )
        masks, iou, score, ptrs = self._run("heads", feeds)
        rows = torch.arange(feats.shape[0])
        return VideoModel.finish_heads(self, masks, iou, score, lambda t: ptrs[rows, t], multimask)

    def select_masks(self, masks: torch.Tensor, iou: torch.Tensor, multimask: bool):
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        if self._dynamic:
            return dynamic_multimask(masks, iou, *self._dynamic)
        return masks[:, :1], iou[:, :1]

    def mask_as_output(self, feats, high_res, mask: torch.Tensor) -> HeadOutput:
        return VideoModel.mask_as_output(self, feats, high_res, mask)

    def encode_memory(self, vision, high_res_mask, score, binarize: bool) -> torch.Tensor:
        """As :meth:`VideoModel.encode_memory`."""
        feeds = {
            "vision": vision,
            "mask": high_res_mask.float(),
            "object_score_logits": score.float(),
            "binarize": torch.ones(1) if binarize else torch.zeros(1),
        }
        return self._run("memory_encoder", feeds)[0]

    def attend_memory(self, vision, memories, pointers, ptr_window: int) -> torch.Tensor:
        """As :meth:`VideoModel.attend_memory` (batch 1), the bank packed into the export's slots."""
        if len(memories) > self.memory_slots or len(pointers) > self.pointer_slots:
            raise ValueError(
                f"this frame reads {len(memories)} memories and {len(pointers)} pointers; the ONNX export "
                f"holds {self.memory_slots} and {self.pointer_slots} (export_video_onnx(memory_slots=..., "
                "pointer_slots=...))"
            )
        m, p = self.memory_slots, self.pointer_slots
        side = vision.shape[-1]
        mems = torch.zeros(m, self.cfg.mem_dim, side, side)
        slots, mem_valid = torch.zeros(m, dtype=torch.int64), torch.zeros(m)
        for i, (t, mem) in enumerate(memories):
            mems[i], slots[i], mem_valid[i] = mem[0].float(), t, 1.0
        ptrs, offsets, ptr_valid = torch.zeros(p, self.cfg.hidden_dim), torch.zeros(p), torch.zeros(p)
        if pointers:
            offs = torch.tensor([o for o, _ in pointers], dtype=torch.float32) / (ptr_window - 1)
            offsets[: len(pointers)] = offs
            ptrs[: len(pointers)] = torch.cat([x for _, x in pointers])
            ptr_valid[: len(pointers)] = 1.0
        feeds = {
            "vision": vision,
            "memories": mems,
            "memory_slots": slots,
            "memory_valid": mem_valid,
            "pointers": ptrs,
            "pointer_offsets": offsets,
            "pointer_valid": ptr_valid,
        }
        return self._run("memory_attention", feeds)[0]


def load_onnx_video_model(
    folder: str | os.PathLike,
    providers: list[str] | None = None,
    threads: int | None = None,
    expect_model: str | None = None,
) -> OnnxVideoModel:
    """The :class:`OnnxVideoModel` of an export folder (for :class:`~leansam.video.VideoPredictor`).

    ``expect_model``: the registry name the caller means; graphs exported from another model raise
    :class:`~leansam.export.runtime.OnnxModelError`.
    """
    model = OnnxVideoModel(folder, providers, threads)
    if expect_model is not None and model.name != expect_model:
        raise OnnxModelError(
            f"{folder} holds {model.name}'s graphs, not {expect_model}'s: name {model.name} as the model to use them"
        )
    return model
