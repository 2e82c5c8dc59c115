"""ONNX files for a registry model, exported once into the cache: ``cached_onnx_model("mobile_sam")``.

The export of ``NAME`` from a checkpoint file goes to
``$LEANSAM_HOME/onnx/NAME-<key>/{encoder,decoder}.onnx`` where ``key`` hashes the checkpoint's
path, size and modification time and the leansam / file-format versions, so a changed
checkpoint or a new leansam exports again. NanoSAM is the exception: its official weights *are*
an ONNX file (``resnet18_image_encoder.onnx`` in ``$LEANSAM_HOME/checkpoints``, put there by
hand), paired with NanoSAM's ``mobile_sam_mask_decoder.onnx`` when it sits next to it, else with
MobileSAM's decoder exported from ``mobile_sam.pt``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..checkpoints import cache_dir, checkpoint_path, resolve_checkpoint
from ..registry import get_model_info
from .onnx import FORMAT_VERSION, OnnxExportConfig, export_onnx
from .runtime import DECODER_FILE, ENCODER_FILE, OnnxModelError, OnnxSam, load_onnx_model


def _key(checkpoint: Path) -> str:
    from .. import __version__

    st = checkpoint.stat()
    ident = [str(checkpoint.resolve()), st.st_size, st.st_mtime_ns, __version__, FORMAT_VERSION]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]


def cached_export(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    decoder_only: bool = False,
    trust_pickle: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The folder holding ``NAME``'s exported files (exported now if not cached yet).

    ``checkpoint`` None means the official weights (cached, or downloaded, as for the torch backend).
    """
    info = get_model_info(name)
    if checkpoint is None:
        if info.weights is None:
            raise OnnxModelError(
                f"model {name!r} has no published weights: pass --checkpoint PATH to export it"
            )
        checkpoint, _ = resolve_checkpoint(info)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise OnnxModelError(f"checkpoint file not found: {checkpoint}")
    folder = cache_dir() / "onnx" / f"{name}-{_key(checkpoint)}"
    wanted = [folder / DECODER_FILE] if decoder_only else [folder / ENCODER_FILE, folder / DECODER_FILE]
    if not all(p.is_file() for p in wanted):
        if log:
            log(f"exporting {name} ({checkpoint.name}) to ONNX in {folder} (once)")
        export_onnx(
            name,
            folder,
            checkpoint=checkpoint,
            config=OnnxExportConfig(encoder=not decoder_only),
            trust_pickle=trust_pickle,
        )
    return folder


def cached_onnx_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    providers: list[str] | None = None,
    threads: int | None = None,
    trust_pickle: bool = False,
    log: Callable[[str], None] | None = None,
) -> OnnxSam:
    """An :class:`OnnxSam` for registry model ``name``, exporting its files once into the cache."""
    info = get_model_info(name)
    if info.weights is not None and info.weights.file_name.endswith(".onnx"):
        if checkpoint is not None:
            raise OnnxModelError(
                f"{name}'s weights are ONNX files: pass them with --onnx ENCODER [--onnx-decoder DECODER], "
                "not --checkpoint"
            )
        return _official_onnx_model(name, providers=providers, threads=threads, log=log)
    folder = cached_export(name, checkpoint, trust_pickle=trust_pickle, log=log)
    return load_onnx_model(folder, providers=providers, expect_model=name, threads=threads)


def _official_onnx_model(
    name: str, *, providers: list[str] | None, threads: int | None, log: Callable[[str], None] | None
) -> OnnxSam:
    """NanoSAM: the official encoder from the cache, with its own or MobileSAM's exported decoder."""
    from ..zoo import nanosam

    info = get_model_info(name)
    encoder = checkpoint_path(info)
    if not encoder.is_file():
        raise OnnxModelError(
            f"{name}'s official encoder is not in the cache: download {info.weights.file_name} from "
            f"{info.weights.url} and put it at {encoder} (or pass --onnx PATH)"
        )
    official_decoder = encoder.parent / nanosam.DECODER_FILE
    if official_decoder.is_file():
        decoder = official_decoder
    else:
        source = nanosam.DECODER_SOURCES[name][0]
        decoder = cached_export(source, decoder_only=True, log=log) / DECODER_FILE
    return load_onnx_model(encoder, providers=providers, expect_model=name, decoder=decoder, threads=threads)
