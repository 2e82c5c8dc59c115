"""``OnnxSam``: a SAM-family model whose encoder and decoder run on ONNX Runtime.

    from leansam.export import load_onnx_model
    model = load_onnx_model("onnx/mobile_sam", expect_model="mobile_sam")   # encoder.onnx + decoder.onnx
    predictor = leansam.SamPredictor(model)                                # same API and outputs as torch
    gen = leansam.AutomaticMaskGenerator(model)

:class:`OnnxSam` satisfies :class:`leansam.interface.PromptableModel`, the interface
:class:`leansam.SamPredictor` and :class:`leansam.AutomaticMaskGenerator` use; encoded features are
:class:`ImageFeatures` of CPU tensors. Pre/post-processing and the prompt layout are leansam's
shared code; only the two networks run in ONNX Runtime.

Accepted files:

* decoders exported by :func:`leansam.export.export_onnx` (metadata ``leansam.role = decoder``),
  and segment-anything-style decoders (inputs ``image_embeddings``, ``point_coords``,
  ``point_labels``, ``mask_input``, ``has_mask_input``; outputs ``iou_predictions`` and
  ``low_res_masks`` for all mask tokens) such as NanoSAM's ``mobile_sam_mask_decoder.onnx``;
  those take boxes as corner points (labels 2, 3) and one prompt per call;
* encoders exported by leansam, or any graph with one B x 3 x S x S input and a
  B x C x h x w first output that fits the decoder (e.g. NanoSAM's ``resnet18_image_encoder.onnx``,
  quantized leansam encoders whose metadata was dropped).

Files that do not fit raise :class:`OnnxModelError` naming the file and the mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..interface import ImageFeatures, Prompts, PromptStyle, keep_confident, layout_prompts
from ..io import InputError
from ..models.mask_decoder import dynamic_multimask
from ..transforms import ImageTransform, postprocess_logits, preprocess
from .onnx import FORMAT_VERSION, ONNX_HINT

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
_SAM_ONNX_INPUTS = {"image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"}
_SAM_ONNX_OUTPUTS = {"iou_predictions", "low_res_masks"}


class OnnxModelError(InputError):
    """An ONNX file is missing, unreadable, or does not fit (other model, other export, wrong role)."""


def _ort() -> object:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"the ONNX Runtime backend needs onnxruntime: {ONNX_HINT}") from e
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA (when this onnxruntime build has it) then CPU. TensorRT is opt-in: its engines take minutes to build."""
    available = _ort().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(threads: int | None = None, spinning: bool | None = None) -> object:
    """ORT session options: all graph optimisations, ``threads`` intra-op threads, optional no-spin.

    Spinning threads busy-wait between operators; on a machine shared with other work (or with
    torch threads) ``spinning=False`` avoids stealing the cores.
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def _open(path: Path, role: str, providers: list[str], options: object) -> object:
    ort = _ort()
    _check_file(path, role)
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise OnnxModelError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available here "
            f"(available: {', '.join(ort.get_available_providers())})"
        )
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        reason = " ".join(str(e).split())[:300]
        raise OnnxModelError(
            f"cannot load ONNX {role} file {path}: not a valid ONNX model ({reason})"
        ) from None


def _without_upscaling(session: object, path: Path, providers: list[str], options: object) -> object:
    """The decoder session without its in-graph upscaling (``upscale=True`` exports).

    ONNX Runtime runs every node whatever outputs are requested, and the predictor upscales
    (after optional hole filling) itself, so the ``upscale/*`` nodes would be pure waste.
    """
    if "orig_im_size" not in {i.name for i in session.get_inputs()}:
        return session
    if _meta(session).get("leansam.role") != "decoder":
        return session  # a foreign graph: left as it is (fed a small orig_im_size)
    from .onnx import require_onnx

    onnx = require_onnx()
    proto = onnx.load(str(path))
    keep = [n for n in proto.graph.node if not n.name.startswith("upscale/")]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    inits = [t for t in proto.graph.initializer if not t.name.startswith("upscale/")]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)
    for field_name, drop in (("input", "orig_im_size"), ("output", "masks")):
        items = getattr(proto.graph, field_name)
        kept = [v for v in items if v.name != drop]
        del items[:]
        items.extend(kept)
    return _ort().InferenceSession(proto.SerializeToString(), sess_options=options, providers=providers)


def _check_file(path: Path, role: str) -> None:
    if not path.exists():
        raise OnnxModelError(f"no such ONNX {role} file: {path}")
    if not path.is_file():
        raise OnnxModelError(f"ONNX {role} path is not a file: {path}")
    if path.stat().st_size == 0:
        raise OnnxModelError(f"ONNX {role} file {path} is empty (0 bytes): truncated download?")


def _meta(session: object) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def _decoder_sources(name: str) -> set[str]:
    """Models whose exported decoder ``name`` may use (NanoSAM runs MobileSAM's decoder)."""
    from ..zoo import nanosam

    return {name, *nanosam.DECODER_SOURCES.get(name, ())}


class OnnxSam:
    """A SAM-family model on ONNX Runtime with the interface the predictor and mask generator use.

    Build it with :func:`load_onnx_model`. Attributes: ``name``, ``transform``
    (:class:`ImageTransform`), ``prompt_style``, ``encoder_path``, ``decoder_path``,
    ``metadata`` (``{"encoder": {...}, "decoder": {...}}``), ``providers``.
    """

    def __init__(
        self,
        encoder: object | None,
        decoder: object,
        *,
        name: str,
        transform: ImageTransform,
        prompt_style: PromptStyle,
        decoder_info: dict,
        encoder_path: Path | None,
        decoder_path: Path,
        metadata: dict[str, dict[str, str]],
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.name = name
        self.transform = transform
        self.prompt_style = prompt_style
        self.encoder_path = encoder_path
        self.decoder_path = decoder_path
        self.metadata = metadata
        self._dec = decoder_info
        self._dec_inputs = {i.name: i for i in decoder.get_inputs()}
        self._enc_input = encoder.get_inputs()[0] if encoder is not None else None
        self._enc_outputs = [o.name for o in encoder.get_outputs()] if encoder is not None else []
        self._has_boxes_input = "boxes" in self._dec_inputs
        # Official segment-anything-style decoders are exported with a batch of one prompt.
        batch_dim = self._dec_inputs["point_coords"].shape[0]
        self._decoder_batch_one = batch_dim == 1

    # --- the interface of Sam ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Features and outputs are CPU tensors (whatever provider runs the graphs)."""
        return torch.device("cpu")

    @property
    def mask_threshold(self) -> float:
        return 0.0

    @property
    def providers(self) -> list[str]:
        return list(self.decoder.get_providers())

    def eval(self) -> OnnxSam:
        return self

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> 1 x 3 x S x S encoder input (leansam's shared pre-processing)."""
        return preprocess(image, self.transform)

    def encode_image(self, x: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S encoder input -> :class:`ImageFeatures` (CPU tensors)."""
        if self.encoder is None:
            raise OnnxModelError(
                "this OnnxSam has only a decoder (load_onnx_decoder): give features with "
                "SamPredictor.set_features, or load an encoder with load_onnx_model"
            )
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        fixed = self._enc_input.shape[0]
        if isinstance(fixed, int) and fixed != arr.shape[0]:
            # Encoders exported with a fixed batch (NanoSAM's: 1) run image by image.
            parts = [self._run_encoder(arr[i : i + fixed]) for i in range(0, arr.shape[0], fixed)]
            outs = [np.concatenate(p, axis=0) for p in zip(*parts)]
        else:
            outs = self._run_encoder(arr)
        tensors = [torch.from_numpy(o) for o in outs]
        if self._dec["high_res"]:
            return ImageFeatures(tensors[0], tensors[1:3])
        return ImageFeatures(tensors[0])

    def _run_encoder(self, arr: np.ndarray) -> list[np.ndarray]:
        names = ["image_embeddings" if "image_embeddings" in self._enc_outputs else self._enc_outputs[0]]
        if self._dec["high_res"]:
            names += ["high_res_feats_0", "high_res_feats_1"]
        return self.encoder.run(names, {self._enc_input.name: arr})

    def prepare_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> Prompts | None:
        """:func:`~leansam.interface.layout_prompts` with this model's prompt style and transform."""
        return layout_prompts(
            self.prompt_style, self.transform, point_coords, point_labels, boxes, original_size
        )

    def decode(
        self,
        features: ImageFeatures,
        points: Prompts | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes N prompts against one image's features (see :meth:`Sam.decode`).

        Returns low-res logits N x M x h' x w', IoU predictions N x M and object-score logits N x 1
        (M = 3 with ``multimask_output``, else 1), as CPU tensors.
        """
        if mask_input is not None and not self._dec["mask_prompt"]:
            raise ValueError("this model has no mask-prompt input (EfficientSAM); pass mask_input=None")
        n = (
            points[0].shape[0]
            if points is not None
            else (mask_input.shape[0] if mask_input is not None else 1)
        )
        if points is None:
            points = (torch.zeros((n, 0, 2)), torch.zeros((n, 0)))
        feeds = {"image_embeddings": _np(features.embed)}
        if self._dec["high_res"]:
            if features.high_res is None:
                raise ValueError("this decoder needs the image encoder's high-resolution features (SAM 2)")
            feeds["high_res_feats_0"] = _np(features.high_res[0])
            feeds["high_res_feats_1"] = _np(features.high_res[1])
        if self._dec["mask_prompt"]:
            mh, mw = self._dec["mask_input_size"]
            if mask_input is None:
                feeds["mask_input"] = np.zeros((n, 1, mh, mw), np.float32)
                feeds["has_mask_input"] = np.zeros(1, np.float32)
            else:
                m = _np(mask_input)
                feeds["mask_input"] = np.ascontiguousarray(np.broadcast_to(m, (n, *m.shape[1:])))
                feeds["has_mask_input"] = np.ones(1, np.float32)
        # The laid-out prompts already hold the box corners (labels 2, 3) in the family's order; a
        # graph with a ``boxes`` input gets none there, so it embeds exactly this list.
        feeds["point_coords"], feeds["point_labels"] = _np(points[0]), _np(points[1])
        if self._has_boxes_input:
            feeds["boxes"] = np.zeros((n, 0, 4), np.float32)
        return self._select(*self._run_decoder(feeds, n), multimask_output)

    def decode_confident(
        self, features: ImageFeatures, points: Prompts, multimask_output: bool, iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` then :func:`~leansam.interface.keep_confident` (masks K x h' x w', IoU K, prompt K)."""
        low, iou, _ = self.decode(features, points, None, multimask_output)
        return keep_confident(low, iou, iou_thresh)

    def _run_decoder(self, feeds: dict[str, np.ndarray], n: int) -> tuple[torch.Tensor, ...]:
        if self._has_boxes_input:
            low, iou, obj = self.decoder.run(
                ["low_res_logits", "iou_predictions", "object_score_logits"], feeds
            )
            return torch.from_numpy(low), torch.from_numpy(iou), torch.from_numpy(obj)
        if "orig_im_size" in self._dec_inputs:  # segment-anything's export always upscales; unused here
            kind = self._dec_inputs["orig_im_size"].type
            side = float(self.transform.prompt_frame)
            feeds["orig_im_size"] = np.array([side, side], np.int64 if "int64" in kind else np.float32)
        if not self._decoder_batch_one:
            low, iou = self.decoder.run(["low_res_masks", "iou_predictions"], feeds)
        else:
            per = ("point_coords", "point_labels", "mask_input")
            outs = [
                self.decoder.run(
                    ["low_res_masks", "iou_predictions"],
                    {k: (v[i : i + 1] if k in per else v) for k, v in feeds.items()},
                )
                for i in range(n)
            ]
            low = np.concatenate([o[0] for o in outs])
            iou = np.concatenate([o[1] for o in outs])
        low_t, iou_t = torch.from_numpy(low), torch.from_numpy(iou)
        return low_t, iou_t, iou_t.new_full((n, 1), 10.0)  # no object-score head: "object present"

    def _select(
        self, low: torch.Tensor, iou: torch.Tensor, obj: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Picks the mask tokens the torch decoder returns (see :meth:`MaskDecoder.forward`)."""
        if low.shape[1] == 1:
            if multimask_output:
                raise ValueError("this ONNX decoder returns one mask per prompt; use multimask_output=False")
            return low, iou, obj
        if multimask_output:
            return low[:, 1:], iou[:, 1:], obj
        dyn = self._dec.get("dynamic_multimask")
        if dyn:
            masks, scores = dynamic_multimask(low, iou, dyn["delta"], dyn["thresh"])
            return masks, scores, obj
        return low[:, :1], iou[:, :1], obj

    def postprocess_masks(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """B x M x h' x w' low-res logits -> B x M x H x W logits (leansam's shared post-processing)."""
        return postprocess_logits(low_res, self.transform, original_size)

    def __repr__(self) -> str:
        return (
            f"OnnxSam({self.name!r}, encoder={str(self.encoder_path)!r}, decoder={str(self.decoder_path)!r}, "
            f"providers={self.providers})"
        )


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


# --- loading ---------------------------------------------------------------------------------------


def _resolve_paths(path_or_dir: str | Path, decoder: str | Path | None) -> tuple[Path, Path]:
    p = Path(path_or_dir)
    if p.is_dir():
        enc = p / ENCODER_FILE
        dec = Path(decoder) if decoder is not None else p / DECODER_FILE
        if not enc.exists():
            raise OnnxModelError(f"no {ENCODER_FILE} in {p} (export one with `leansam export onnx`)")
        return enc, dec
    if not p.exists():
        raise OnnxModelError(f"no such ONNX file or folder: {p}")
    if decoder is None:
        decoder = p.parent / DECODER_FILE
        if not decoder.exists():
            raise OnnxModelError(f"no decoder given for encoder {p}, and no {DECODER_FILE} next to it")
    return p, Path(decoder)


def _check_leansam_meta(meta: dict[str, str], path: Path, role: str) -> None:
    if meta.get("leansam.format") != FORMAT_VERSION:
        raise OnnxModelError(
            f"{path} was exported by leansam format {meta.get('leansam.format')!r}; this leansam reads "
            f"format {FORMAT_VERSION}: export it again"
        )
    if meta.get("leansam.role") != role:
        other = meta.get("leansam.role")
        raise OnnxModelError(f"{path} is a leansam {other} file, given where the {role} was expected")


def _decoder_info(
    session: object, meta: dict[str, str], path: Path, expect_model: str | None
) -> tuple[dict, str]:
    """(decoder description, model name) from a leansam decoder's metadata or a SAM-style decoder's I/O."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if "leansam.role" in meta:
        _check_leansam_meta(meta, path, "decoder")
        dec = json.loads(meta["leansam.decoder"])
        emb = json.loads(meta["leansam.embedding"])
        info = {
            "mask_prompt": dec["mask_prompt"],
            "mask_input_size": dec["mask_input_size"],
            "dynamic_multimask": dec["dynamic_multimask"],
            "high_res": bool(emb["high_res"]),
            "embedding": [emb["channels"], *emb["size"]],
            "transform": ImageTransform(**_tuples(json.loads(meta["leansam.transform"]))),
            "prompt_style": PromptStyle(**json.loads(meta["leansam.prompt_style"])),
            "weights": meta.get("leansam.weights"),
        }
        return info, meta["leansam.model"]
    if set(inputs) >= _SAM_ONNX_INPUTS and set(outputs) >= _SAM_ONNX_OUTPUTS:
        if expect_model is None:
            raise OnnxModelError(
                f"{path} is a segment-anything-style decoder without leansam metadata: name the model it "
                f"belongs to (expect_model=..., --model NAME)"
            )
        from ..registry import get_model_info

        reg = get_model_info(expect_model)
        shape = inputs["image_embeddings"].shape
        mask_shape = inputs["mask_input"].shape
        return {
            "mask_prompt": True,
            "mask_input_size": [d if isinstance(d, int) else 256 for d in mask_shape[2:]],
            "dynamic_multimask": None,
            "high_res": False,
            "embedding": [d if isinstance(d, int) else None for d in shape[1:]],
            "transform": reg.transform,
            "prompt_style": reg.prompt_style or PromptStyle(),
            "weights": None,
        }, expect_model
    raise OnnxModelError(
        f"{path} is not a SAM mask decoder: inputs {sorted(inputs)}, outputs {sorted(outputs)} "
        f"(export one with `leansam export onnx`)"
    )


def _tuples(d: dict) -> dict:
    """JSON turns tuples into lists; the frozen config dataclasses want tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _check_encoder(
    session: object, meta: dict[str, str], path: Path, dec: dict, dec_model: str, dec_path: Path
) -> str | None:
    """Checks that the encoder fits the decoder; returns the encoder's model name when it has metadata."""
    if "leansam.role" in meta:
        _check_leansam_meta(meta, path, "encoder")
        enc_model = meta["leansam.model"]
        if dec_model not in _decoder_sources(enc_model):
            raise OnnxModelError(
                f"encoder {path} was exported from model {enc_model!r} but decoder {dec_path} from "
                f"{dec_model!r}: use the two files of one export"
            )
        if dec["weights"] and meta.get("leansam.weights") and meta["leansam.weights"] != dec["weights"]:
            raise OnnxModelError(
                f"encoder {path} and decoder {dec_path} are both {enc_model!r} but come from different weights "
                f"(fingerprints {meta['leansam.weights']} vs {dec['weights']}): use the two files of one export"
            )
    else:
        enc_model = None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    s = dec["transform"].encoder_size
    ishape = inputs[0].shape if len(inputs) == 1 else None
    if (
        ishape is None
        or len(ishape) != 4
        or any(isinstance(d, int) and d != e for d, e in zip(ishape[1:], (3, s, s)))
    ):
        raise OnnxModelError(
            f"{path} does not look like an image encoder for this decoder: expected one input "
            f"B x 3 x {s} x {s}, got {[(i.name, i.shape) for i in inputs]}"
        )
    names = [o.name for o in outputs]
    first = outputs[names.index("image_embeddings")] if "image_embeddings" in names else outputs[0]
    want = dec["embedding"]
    got = first.shape[1:]
    if len(first.shape) != 4 or any(
        isinstance(g, int) and w is not None and g != w for g, w in zip(got, want)
    ):
        raise OnnxModelError(
            f"encoder {path} outputs {first.name} of shape {first.shape}, but decoder {dec_path} expects "
            f"image embeddings B x {' x '.join(str(w) for w in want)}: the files belong to different models"
        )
    if dec["high_res"] and not {"high_res_feats_0", "high_res_feats_1"} <= set(names):
        raise OnnxModelError(
            f"decoder {dec_path} needs the encoder's high-resolution features, but encoder {path} has only "
            f"the outputs {names}"
        )
    return enc_model


def load_onnx_model(
    path_or_dir: str | Path,
    providers: list[str] | None = None,
    expect_model: str | None = None,
    *,
    decoder: str | Path | None = None,
    threads: int | None = None,
    spinning: bool | None = None,
) -> OnnxSam:
    """Loads an encoder/decoder pair as an :class:`OnnxSam`.

    Args:
        path_or_dir: a folder holding ``encoder.onnx`` and ``decoder.onnx`` (as written by
            :func:`~leansam.export.export_onnx`), or the encoder file itself (any name, e.g. a
            quantized ``encoder.int8.onnx`` or NanoSAM's ``resnet18_image_encoder.onnx``).
        providers: ONNX Runtime execution providers, in order of preference; default
            :func:`default_providers` (CUDA when available, then CPU).
        expect_model: the registry name the caller means; files exported from another model
            raise :class:`OnnxModelError`. Needed for decoders without leansam metadata.
        decoder: the decoder file (default: ``decoder.onnx`` in the folder / next to the encoder).
        threads: intra-op threads per session (default: ONNX Runtime's choice, one per core).
        spinning: allow (True) or forbid (False) busy-waiting worker threads (default: ORT's).

    Raises:
        OnnxModelError: missing, corrupt or mismatched files; ImportError: onnxruntime missing.
    """
    enc_path, dec_path = _resolve_paths(path_or_dir, decoder)
    providers = list(providers) if providers else default_providers()
    opts = session_options(threads, spinning)
    dec_sess = _open(dec_path, "decoder", providers, opts)
    dec_meta = _meta(dec_sess)
    dec, dec_model = _decoder_info(dec_sess, dec_meta, dec_path, expect_model)
    if expect_model is not None and dec_model not in _decoder_sources(expect_model):
        raise OnnxModelError(
            f"decoder {dec_path} was exported from model {dec_model!r}, not {expect_model!r}"
        )
    dec_sess = _without_upscaling(dec_sess, dec_path, providers, opts)
    enc_sess = _open(enc_path, "encoder", providers, opts)
    enc_meta = _meta(enc_sess)
    enc_model = _check_encoder(enc_sess, enc_meta, enc_path, dec, dec_model, dec_path)
    if expect_model is not None and enc_model is not None and enc_model != expect_model:
        raise OnnxModelError(
            f"encoder {enc_path} was exported from model {enc_model!r}, not {expect_model!r}"
        )
    name = enc_model or expect_model or dec_model
    transform, style = dec["transform"], dec["prompt_style"]
    if enc_model is None and expect_model is not None:
        # An encoder without metadata (NanoSAM's official file) is pre-processed as its registry entry says.
        from ..registry import UnknownModelError, get_model_info

        try:
            reg = get_model_info(expect_model)
            transform, style = reg.transform, reg.prompt_style or style
        except UnknownModelError:
            pass  # a model outside the registry: the decoder's metadata is all there is
    return OnnxSam(
        enc_sess,
        dec_sess,
        name=name,
        transform=transform,
        prompt_style=style,
        decoder_info=dec,
        encoder_path=enc_path,
        decoder_path=dec_path,
        metadata={"encoder": enc_meta, "decoder": dec_meta},
    )


def load_onnx_decoder(
    path: str | Path,
    providers: list[str] | None = None,
    expect_model: str | None = None,
    *,
    threads: int | None = None,
    spinning: bool | None = None,
) -> OnnxSam:
    """An :class:`OnnxSam` with only the prompt encoder + mask decoder on ONNX Runtime.

    For image features computed elsewhere (another process, a GPU server, a cache of embeddings):
    ``predictor.set_features(features, original_size)`` then ``predict`` as usual. Arguments as in
    :func:`load_onnx_model`.
    """
    dec_path = Path(path)
    providers = list(providers) if providers else default_providers()
    opts = session_options(threads, spinning)
    session = _open(dec_path, "decoder", providers, opts)
    meta = _meta(session)
    dec, dec_model = _decoder_info(session, meta, dec_path, expect_model)
    if expect_model is not None and dec_model not in _decoder_sources(expect_model):
        raise OnnxModelError(
            f"decoder {dec_path} was exported from model {dec_model!r}, not {expect_model!r}"
        )
    session = _without_upscaling(session, dec_path, providers, opts)
    return OnnxSam(
        None,
        session,
        name=expect_model or dec_model,
        transform=dec["transform"],
        prompt_style=dec["prompt_style"],
        decoder_info=dec,
        encoder_path=None,
        decoder_path=dec_path,
        metadata={"encoder": {}, "decoder": meta},
    )
