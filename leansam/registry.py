"""The model registry: one frozen record per model, with the metadata of its official weights.

Entries live in the family modules ``leansam/zoo/<family>.py`` (a tuple ``MODELS`` whose entries
all have ``family=<family>``), found by listing the package on first use, so that ``import leansam``
stays cheap and adding a family needs no edit here. Modules whose name starts with ``_`` are helpers
shared by families. A family module that fails to import, has no ``MODELS``, or registers a name
twice raises :class:`RegistryError`: a broken family never makes its models vanish silently.

    >>> import leansam
    >>> leansam.list_models("*sam*")[:3]
    >>> leansam.get_model_info("sam_vit_b").weights.url
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .transforms import ImageTransform

if TYPE_CHECKING:
    from .models.sam import PromptStyle, Sam

#: Package of the family modules.
ZOO_PACKAGE = "leansam.zoo"

#: ``f(official state_dict) -> (state_dict in leansam keys, keys set aside)``.
CheckpointFilter = Callable[[dict], tuple[dict, list[str]]]


@dataclass(frozen=True)
class Weights:
    """Where a model's official checkpoint comes from and what it is.

    Attributes:
        url: official download URL (``package://<file>`` for weights shipped inside leansam).
        file_name: official file name; the cache stores the file under this name.
        sha256: full hex digest of the official file, or None when upstream publishes none
            and no copy could be hashed here (the file is then loaded without a hash check, and
            ``leansam models`` says so).
        license: licence of the weights (SPDX id where one exists).
        source: official repository URL.
        paper: paper title or arXiv id.
        wrappers: keys under which the file may nest the state_dict (e.g. ``("model",)``).
        pickled_module: the official file is a pickled ``nn.Module`` (needs an explicit opt-in).
    """

    url: str
    file_name: str
    sha256: str | None
    license: str
    source: str
    paper: str
    wrappers: tuple[str, ...] = ()
    pickled_module: bool = False


@dataclass(frozen=True)
class EverythingDefaults:
    """A model's own segment-everything defaults for click prompts (grid and hierarchical).

    :class:`leansam.AutomaticMaskGenerator` uses them for the options the caller leaves unset
    (None); a value the caller sets always wins, and a field left None here falls back to
    segment_anything's default (``pred_iou_thresh`` 0.88, ``stability_score_thresh`` 0.95,
    ``stability_score_offset`` 1.0, ``box_nms_thresh`` 0.7). Official models declare none.

    Attributes:
        pred_iou_thresh: keep masks whose predicted IoU is above it.
        stability_score_thresh: keep masks whose stability score is at least it.
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: box-IoU threshold of the NMS within a crop.
        high_score_thresh: hierarchical sampling's confident-logit threshold (TinySAM's 8.5 if None).
        source: where the numbers come from (a results file and the command that writes it).
    """

    pred_iou_thresh: float | None = None
    stability_score_thresh: float | None = None
    stability_score_offset: float | None = None
    box_nms_thresh: float | None = None
    high_score_thresh: float | None = None
    source: str = ""

    def thresholds(self) -> dict[str, float]:
        """The declared options by name (the None fields left out)."""
        names = (
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "high_score_thresh",
        )
        return {n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        name: registry name (``sam_vit_b``).
        family: architecture family (``sam``, ``tiny_vit``, ...).
        builder: function returning the architecture with freshly initialised weights (:class:`Sam`).
        weights: official checkpoint metadata, or None (architecture only).
        transform: pre/post-processing of the family.
        prompt_style: prompt layout of the family (None: SAM's).
        checkpoint_filter: function mapping an official state_dict to leansam keys:
            ``f(state) -> (state, set_aside_keys)``; None when keys already match.
        arch_from_state: function for families whose official files fix the architecture
            themselves (SlimSAM's globally pruned models): ``f(filtered_state) -> Sam | None``;
            None (or a None result) builds ``builder`` as usual.
        n_params: exact parameter count of the official (image-mode) model, checked by the tests.
        description: one line for ``leansam models``.
        default: the model used when none is named.
        everything: the model's segment-everything defaults (None: segment_anything's).
    """

    name: str
    family: str
    builder: Callable[[], Sam]
    weights: Weights | None
    transform: ImageTransform = field(default_factory=ImageTransform)
    prompt_style: PromptStyle | None = None
    checkpoint_filter: CheckpointFilter | None = None
    arch_from_state: Callable[[dict], Sam | None] | None = None
    n_params: int | None = None
    description: str = ""
    default: bool = False
    everything: EverythingDefaults | None = None

    @property
    def input_size(self) -> int:
        return self.transform.encoder_size

    def build(self, state: dict | None = None) -> Sam:
        """The architecture with freshly initialised weights (no checkpoint).

        With ``state`` (a checkpoint's state_dict, official keys) and an ``arch_from_state``
        hook, the architecture is the one that checkpoint describes.
        """
        model = None
        if state is not None and self.arch_from_state is not None:
            model = self.arch_from_state(self.filter_state_dict(dict(state))[0])
        if model is None:
            model = self.builder()
        model.transform = self.transform
        if self.prompt_style is not None:
            model.prompt_style = self.prompt_style
        model.name = self.name
        return model.eval()

    def filter_state_dict(self, state: dict) -> tuple[dict, list[str]]:
        """Applies the family's checkpoint filter: (state in leansam keys, keys set aside)."""
        if self.checkpoint_filter is None:
            return state, []
        return self.checkpoint_filter(state)


class UnknownModelError(KeyError):
    """Raised for a name that is not in the registry; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0])


class RegistryError(RuntimeError):
    """A family module is broken: it has no ``MODELS``, a wrong ``family`` or a name registered twice."""


def family_modules() -> list[str]:
    """Names of the family modules under ``leansam/zoo/`` (helpers, ``_*.py``, excluded), sorted."""
    package = importlib.import_module(ZOO_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


@functools.cache
def _registry() -> dict[str, ModelInfo]:
    out: dict[str, ModelInfo] = {}
    for family in family_modules():
        mod = importlib.import_module(f"{ZOO_PACKAGE}.{family}")  # an import error propagates
        models = getattr(mod, "MODELS", None)
        if not isinstance(models, tuple) or not models:
            raise RegistryError(f"{mod.__name__} must define MODELS, a non-empty tuple of ModelInfo")
        for info in models:
            if not isinstance(info, ModelInfo) or info.family != family:
                raise RegistryError(f"{mod.__name__}: {info!r:.80} is not a ModelInfo of family {family!r}")
            if info.name in out:
                raise RegistryError(f"model {info.name!r} registered twice ({mod.__name__})")
            out[info.name] = info
    return out


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry names matching a shell-style ``pattern`` (``"*sam*"``, ``"efficientvit_*"``)."""
    return sorted(n for n in _registry() if fnmatch.fnmatchcase(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; :class:`UnknownModelError` naming close matches otherwise."""
    reg = _registry()
    if name in reg:
        return reg[name]
    close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (`leansam models` lists them)")


def everything_defaults(name: str | None) -> EverythingDefaults | None:
    """The segment-everything defaults registered for model ``name``; None for official models,
    models outside the registry and ``name`` None."""
    info = _registry().get(name) if isinstance(name, str) else None
    return None if info is None else info.everything


def default_model_name() -> str:
    """The registry's default model (leansam's bundled one when present, else the smallest SAM)."""
    for info in _registry().values():
        if info.default:
            return info.name
    return "sam_vit_b"
