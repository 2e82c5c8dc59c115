"""Models and image embeddings for the server: loaded once, cached by (content hash, model).

An embedding is computed once per (image content, model weights) and kept in a bounded in-memory
LRU and on disk under ``$LEANSAM_HOME/serve/features/``, so a second prompt, a page reload or a
server restart costs only the decoder. The disk key includes a fingerprint of the model's weights,
so retrained weights under the same name never reuse stale embeddings.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import leansam

from ..checkpoints import cache_dir
from ..io import atomic_path
from ..models.sam import ImageFeatures


@dataclass
class LoadedModel:
    """A model ready to serve: the module, its registry name and a fingerprint of its weights."""

    name: str
    model: leansam.Sam
    fingerprint: str
    lock: threading.Lock


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hex digest of every parameter and buffer (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ModelPool:
    """Builds registered models on first use (no downloads) and keeps them for the server's life.

    ``models``: models to serve under the given names besides the registry's (e.g. built from
    your own checkpoints); a name there takes precedence over the registry entry.
    """

    def __init__(
        self, default: str | None = None, device: str = "cpu", models: dict[str, leansam.Sam] | None = None
    ) -> None:
        from ..registry import default_model_name, get_model_info

        self.device = device
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        for name, model in (models or {}).items():
            model = model.to(device).eval()
            self._models[name] = LoadedModel(name, model, weights_fingerprint(model), threading.Lock())
        self.custom = sorted(self._models)
        self.default = default or default_model_name()
        if self.default not in self._models:
            get_model_info(self.default)  # unknown names fail at start-up, not at the first click

    def get(self, name: str | None, allow_download: bool = False) -> LoadedModel:
        """The model ``name`` (None: the default). Raises UnknownModelError / CheckpointError.

        Requests never download weights (``allow_download`` False); the CLI does for its --model.
        """
        from ..registry import get_model_info

        name = name or self.default
        with self._lock:
            if name in self._models:
                return self._models[name]
        get_model_info(name)
        with self._lock:
            if name not in self._models:
                model = leansam.build_model(
                    name, device=self.device, allow_download=allow_download, progress=allow_download
                )
                self._models[name] = LoadedModel(name, model, weights_fingerprint(model), threading.Lock())
            return self._models[name]

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)


def _nbytes(features: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in features.values())


class FeatureCache:
    """Image features keyed by (image id, model name, weights fingerprint).

    In memory: an LRU bounded by ``max_bytes``. On disk (``root``, None to disable): one
    ``<model>-<fingerprint>/<image id>.pt`` file of tensors per entry, written atomically and
    read with ``torch.load(weights_only=True)``; an unreadable file is recomputed and replaced.
    """

    def __init__(self, root: Path | None = None, max_bytes: int = 1 << 30) -> None:
        self.root = root if root is not None else cache_dir() / "serve" / "features"
        self.max_bytes = max_bytes
        self._mem: OrderedDict[tuple[str, str, str], dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.encoder_calls = 0  # how many embeddings were computed (not found in a cache)

    def _path(self, key: tuple[str, str, str]) -> Path:
        image_id, name, fp = key
        return self.root / f"{name}-{fp}" / f"{image_id}.pt"

    def _remember(self, key: tuple[str, str, str], feats: dict[str, torch.Tensor]) -> None:
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                return
            self._mem[key] = feats
            self._bytes += _nbytes(feats)
            while self._bytes > self.max_bytes and len(self._mem) > 1:
                _, old = self._mem.popitem(last=False)
                self._bytes -= _nbytes(old)

    def _recall(self, key: tuple[str, str, str]) -> dict[str, torch.Tensor] | None:
        with self._lock:
            feats = self._mem.get(key)
            if feats is not None:
                self._mem.move_to_end(key)
            return feats

    def _read_disk(self, key: tuple[str, str, str]) -> dict[str, torch.Tensor] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: recompute and overwrite it
            return None
        if not isinstance(feats, dict) or "embed" not in feats or "size" not in feats:
            return None
        return feats

    def _write_disk(self, key: tuple[str, str, str], feats: dict[str, torch.Tensor]) -> None:
        try:
            with atomic_path(self._path(key)) as tmp:
                torch.save(feats, tmp)
        except OSError:  # a read-only or full cache folder: keep serving from memory
            pass

    def predictor(self, lm: LoadedModel, image_id: str, image: np.ndarray) -> leansam.SamPredictor:
        """A fresh :class:`SamPredictor` on ``lm`` with the features of ``image`` (H x W x 3 uint8 RGB).

        Each request gets its own predictor (they hold per-image state), sharing the model.
        """
        key = (image_id, lm.name, lm.fingerprint)
        feats = self._recall(key) or self._read_disk(key)
        if feats is None:
            with lm.lock:  # one encoder run at a time per model: concurrent clicks wait, not recompute
                feats = self._recall(key) or self._read_disk(key)
                if feats is None:
                    feats = self._encode(lm, image)
                    self.encoder_calls += 1
                    if self.root is not None:
                        self._write_disk(key, feats)
        self._remember(key, feats)
        pred = leansam.SamPredictor(lm.model)
        dev = lm.model.device
        high_res = [feats[f"high_res_{i}"].to(dev) for i in range(_n_high_res(feats))] or None
        size = tuple(int(v) for v in feats["size"].tolist())
        pred.set_features(ImageFeatures(feats["embed"].to(dev), high_res), size)
        return pred

    @staticmethod
    def _encode(lm: LoadedModel, image: np.ndarray) -> dict[str, torch.Tensor]:
        pred = leansam.SamPredictor(lm.model)
        with torch.inference_mode():
            pred.set_image(image)
        f = pred.features
        out = {"embed": f.embed.cpu().clone(), "size": torch.tensor(image.shape[:2], dtype=torch.int64)}
        for i, t in enumerate(f.high_res or []):
            out[f"high_res_{i}"] = t.cpu().clone()
        return out


def _n_high_res(feats: dict[str, torch.Tensor]) -> int:
    return sum(1 for k in feats if k.startswith("high_res_"))
