"""``run_benchmark``: one benchmark protocol for every registered model.

Per model (all numbers in one :class:`ModelBench`):

* ``params``: parameters of the image encoder, of prompt encoder + mask decoder, in all.
* ``macs``: MACs at the native input size with one box prompt (:mod:`leansam.bench.flops`;
  counted on the ``meta`` device, so no weights are needed).
* ``peak_memory``: peak memory of one end-to-end one-box call (:mod:`leansam.bench.memory`).
* ``encoder_latency``: ``Sam.encode_image`` on a 1 x 3 x S x S input (warm-up excluded; median, p90).
* ``decoder_latency``: prompt encoder + mask decoder for n box prompts in ONE batched call
  (n in ``prompt_counts``, default 1, 10, ..., 50: the survey's per-10-boxes curve), low-res
  logits, one mask per box; ``decoder_ms_per_10_boxes`` is the least-squares slope x 10.
* ``segany_latency``: one box end to end on an H x W RGB image: preprocess + encode + prompt
  layout + decode + upscaling to H x W + threshold (the survey's Table 4 protocol).
* ``throughput``: encoder images/s at each batch size of ``throughput_batches`` (1 and 8).
* ``everything``: :class:`leansam.everything.AutomaticMaskGenerator` wall time for each strategy
  and grid (points per side 16 / 32 / 64; the ``boxes`` strategy gets the ground-truth boxes of
  the synthetic test image, an oracle detector). Skipped, with the reason recorded, when
  ``leansam.everything`` is not installed.

The test image is image 0 of :mod:`leansam.data.synth` resized to ``image_size``.
Weights: speed does not depend on weight values, so random init is fine for latency and
throughput; every row says which weights it used. Segment-everything times DO depend on the
weights (how many masks survive the filters), so with random weights they only bound the
pipeline's cost. With ``interleave`` (default) the encoder and one-box latencies of all models
are measured in alternation (A B C A B C ...), so load drift on a busy machine hits every model
alike and the ratios between models stay meaningful.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..models.sam import Sam
from ..registry import get_model_info, list_models
from .flops import build_meta, model_macs, param_counts
from .memory import peak_memory, segany_peak_subprocess
from .results import BenchResult, ModelBench
from .timing import Timing, machine_fingerprint, measure

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_MODES = ("auto", "random", "official")
RANDOM_LABEL = "random init (speed only; masks meaningless)"


@dataclass
class BenchConfig:
    """What to measure and how.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``fp32``, ``bf16`` or ``fp16`` (weights cast, run under autocast).
        threads: torch CPU threads (None: torch's default).
        runs: timed calls per latency (warm-up calls excluded).
        warmup: untimed calls before each latency.
        prompt_counts: box-prompt counts of the decoder curve.
        throughput_batches: encoder batch sizes for images/s.
        everything_grids: points per side for segment-everything.
        everything_strategies: strategies to time (None: all of ``leansam.everything.STRATEGIES``).
        everything_runs: timed segment-everything calls per setting (after one untimed encoder warm-up).
        image_size: (H, W) of the test image.
        weights: ``auto`` (the cached official checkpoint if present, else random init; never
            downloads), ``random``, or ``official`` (download if needed).
        checkpoints: model name -> checkpoint file, overriding ``weights`` for that model.
        interleave: measure encoder and one-box latency of all models in alternation.
        measure_memory: measure peak memory.
        memory_mode: ``subprocess`` (CPU default: a fresh process per model, random weights, so
            no model inherits another's heap) or ``inprocess`` (this process; on CUDA always,
            since the allocator's peak counter is exact there).
        accuracy: model name -> accuracy (e.g. mIoU in percent from ``leansam eval``), for the plots.
        accuracy_metric: name of that accuracy (``mIoU``).
        seed: seed of the test image and prompts.
        counts_only: only parameters and MACs (meta device: no weights, no timing).
    """

    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    runs: int = 5
    warmup: int = 1
    prompt_counts: tuple[int, ...] = (1, 10, 20, 30, 40, 50)
    throughput_batches: tuple[int, ...] = (1, 8)
    everything_grids: tuple[int, ...] = (16, 32, 64)
    everything_strategies: tuple[str, ...] | None = None
    everything_runs: int = 1
    image_size: tuple[int, int] = (480, 640)
    weights: str = "auto"
    checkpoints: dict[str, str] = field(default_factory=dict)
    interleave: bool = True
    measure_memory: bool = True
    memory_mode: str = "subprocess"
    accuracy: dict[str, float] = field(default_factory=dict)
    accuracy_metric: str = "mIoU"
    seed: int = 0
    counts_only: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.weights not in WEIGHT_MODES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {self.weights!r}")
        if self.runs < 1 or self.warmup < 0 or self.everything_runs < 1:
            raise ValueError("runs and everything_runs must be >= 1, warmup >= 0")
        for name, seq in (
            ("prompt_counts", self.prompt_counts),
            ("throughput_batches", self.throughput_batches),
            ("everything_grids", self.everything_grids),
        ):
            if any(int(v) < 1 for v in seq):
                raise ValueError(f"{name} must be positive integers, got {seq}")
        if self.memory_mode not in ("subprocess", "inprocess"):
            raise ValueError(f"memory_mode must be 'subprocess' or 'inprocess', not {self.memory_mode!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W) > 0, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def resolve_models(models: str | Sequence[str]) -> list[str]:
    """``"all"``, a comma-separated string, shell patterns or a list -> registry names (validated)."""
    items = [m.strip() for m in models.split(",")] if isinstance(models, str) else [str(m) for m in models]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        if item == "all":
            names = list_models()
        elif any(c in item for c in "*?["):
            names = list_models(item)
            if not names:
                raise ValueError(f"no registered model matches {item!r}")
        else:
            get_model_info(item)  # raises UnknownModelError with suggestions
            names = [item]
        out += [n for n in names if n not in out]
    if not out:
        raise ValueError("no models given")
    return out


# --- inputs ---------------------------------------------------------------------------------------
def test_image(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image, K x 4 XYXY ground-truth boxes): synthetic image 0 resized to ``size``."""
    from PIL import Image

    from ..data.synth import render_sample

    sample = render_sample(0, seed)
    h0, w0 = sample.image.shape[:2]
    h, w = size
    image = np.asarray(Image.fromarray(sample.image).resize((w, h), Image.BILINEAR))
    boxes = []
    for m in sample.masks:
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes.append(
                [xs.min() * w / w0, ys.min() * h / h0, (xs.max() + 1) * w / w0, (ys.max() + 1) * h / h0]
            )
    return np.ascontiguousarray(image), np.array(boxes, dtype=np.float32).reshape(-1, 4)


def random_boxes(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """n x 4 XYXY boxes inside an image of ``size`` (H, W)."""
    h, w = size
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(0, w * 0.7, n), rng.uniform(0, h * 0.7, n)
    bw, bh = rng.uniform(16, w * 0.3, n), rng.uniform(16, h * 0.3, n)
    return np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1).astype(np.float32)


# --- models ---------------------------------------------------------------------------------------
def load_bench_model(name: str, config: BenchConfig) -> tuple[Sam, str]:
    """(model on the device in the dtype, weights label) as ``config.weights`` / ``checkpoints`` say."""
    from ..checkpoints import is_cached, load_model

    info = get_model_info(name)
    if name in config.checkpoints:
        model, report = load_model(name, config.checkpoints[name])
        label = f"checkpoint {report.path.rsplit('/', 1)[-1]}" if report else RANDOM_LABEL
    elif config.weights == "official" or (config.weights == "auto" and is_cached(info)):
        model, report = load_model(name)
        label = "official" + (" (sha256 verified)" if report and report.sha256_verified else "")
        if report is None:
            label = RANDOM_LABEL
    else:
        model, label = info.build(), RANDOM_LABEL
    # Cast outside inference mode: parameters must stay normal tensors (caches key on versions).
    model = model.to(device=config.device, dtype=DTYPES[config.dtype]).eval()
    return model, label


def _amp(config: BenchConfig) -> Any:
    if config.dtype == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(config.device).type, dtype=DTYPES[config.dtype])


class _Calls:
    """The timed calls of one model (closures over its inputs)."""

    def __init__(self, model: Sam, config: BenchConfig, image: np.ndarray) -> None:
        self.model = model
        self.config = config
        self.image = image
        self.size = (int(image.shape[0]), int(image.shape[1]))
        self.dtype = DTYPES[config.dtype]
        self.dev = torch.device(config.device)
        s = model.transform.encoder_size
        self.x1 = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(config.seed)).to(
            self.dev, self.dtype
        )
        self.box = torch.tensor(
            [[0.2 * self.size[1], 0.2 * self.size[0], 0.7 * self.size[1], 0.8 * self.size[0]]]
        )
        self.box = self.box.to(self.dev)
        self._features = None

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def encode(self, x: torch.Tensor | None = None) -> Any:
        with torch.inference_mode(), _amp(self.config):
            return self.model.encode_image(self.x1 if x is None else x)

    def features(self) -> Any:
        if self._features is None:
            self._features = self.encode()
        return self._features

    def decode(self, boxes: torch.Tensor) -> Callable[[], object]:
        feats = self.features()

        def fn() -> object:
            with torch.inference_mode(), _amp(self.config):
                pts = self.model.prepare_prompts(None, None, boxes, self.size)
                return self.model.decode(feats, pts, None, False)

        return fn

    def segany(self) -> object:
        """One box end to end: preprocess, encode, prompts, decode, upscale, threshold."""
        m = self.model
        with torch.inference_mode(), _amp(self.config):
            x = m.preprocess(self.image).to(self.dtype)
            feats = m.encode_image(x)
            pts = m.prepare_prompts(None, None, self.box, self.size)
            low, _, _ = m.decode(feats, pts, None, False)
            masks = m.postprocess_masks(low, self.size) > m.mask_threshold
        self.sync()
        return masks


def _timing(t: Timing) -> dict[str, Any]:
    return t.to_dict()


def _slope_per_10(counts: Sequence[int], medians: Sequence[float]) -> float | None:
    if len(counts) < 2:
        return None
    k = np.polyfit(np.asarray(counts, dtype=np.float64), np.asarray(medians, dtype=np.float64), 1)[0]
    return float(k * 10 * 1000)


def _error(e: BaseException) -> str:
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})" if last else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")


def _log(msg: str, progress: bool) -> None:
    if progress:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def _measure(fn: Callable[[], object], config: BenchConfig, runs: int | None = None) -> Timing:
    return measure(fn, runs=runs or config.runs, warmup=config.warmup, device=config.device)


def _measure_interleaved(fns: dict[str, Callable[[], object]], config: BenchConfig) -> dict[str, Timing]:
    """Alternating timing (A B A B ...), synchronising CUDA after each call."""
    dev = torch.device(config.device)

    def synced(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return out

        return run

    for fn in fns.values():
        for _ in range(config.warmup):
            synced(fn)()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(config.runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            synced(fn)()
            times[k].append(time.perf_counter() - t)
    return {k: Timing(tuple(v)) for k, v in times.items()}


# --- stages ---------------------------------------------------------------------------------------
def _static_counts(mb: ModelBench, name: str) -> None:
    """Parameters and MACs, on the meta device (no weights, no memory)."""
    try:
        meta = build_meta(name)
        mb.params = param_counts(meta).to_dict()
        mb.macs = model_macs(meta, n_boxes=1).to_dict()
    except Exception as e:
        mb.errors["macs"] = _error(e)


def _decoder_curve(mb: ModelBench, calls: _Calls, config: BenchConfig) -> None:
    rows = []
    for n in config.prompt_counts:
        boxes = torch.from_numpy(random_boxes(int(n), calls.size, config.seed)).to(calls.dev)
        t = _measure(calls.decode(boxes), config)
        rows.append({"n_boxes": int(n), **_timing(t)})
    mb.decoder_latency = rows
    mb.decoder_ms_per_10_boxes = _slope_per_10([r["n_boxes"] for r in rows], [r["median_s"] for r in rows])


def _throughput(mb: ModelBench, calls: _Calls, config: BenchConfig) -> None:
    s = calls.model.transform.encoder_size
    rows = []
    for b in config.throughput_batches:
        b = int(b)
        if b == 1 and mb.encoder_latency:
            med = mb.encoder_latency["median_s"]
            rows.append({"batch": 1, "images_per_s": 1.0 / med, "median_s": med, "from": "encoder_latency"})
            continue
        x = torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(config.seed)).to(
            calls.dev, calls.dtype
        )
        t = _measure(lambda x=x: calls.encode(x), config)
        rows.append({"batch": b, "images_per_s": b / t.median, **_timing(t)})
    mb.throughput = rows


def _everything(mb: ModelBench, calls: _Calls, config: BenchConfig, gt_boxes: np.ndarray) -> None:
    try:
        from ..everything import STRATEGIES, AutomaticMaskGenerator
        from ..everything.options import SAM_DEFAULTS
    except ImportError as e:
        mb.skipped["everything"] = f"leansam.everything is not available ({e})"
        return
    strategies = config.everything_strategies or STRATEGIES
    rows = []
    for strategy in strategies:
        settings: list[dict[str, Any]]
        if strategy == "boxes":
            settings = [{"boxes": gt_boxes}]
        else:
            # SAM's thresholds for every model (not a model's own defaults): one setting to compare costs at
            settings = [{"points_per_side": int(g), **SAM_DEFAULTS} for g in config.everything_grids]
        for kw in settings:
            row: dict[str, Any] = {
                "strategy": strategy,
                "grid": kw.get("points_per_side"),
                "n_boxes": len(gt_boxes) if strategy == "boxes" else None,
            }
            try:
                gen = AutomaticMaskGenerator(calls.model, strategy, **kw)

                def run(gen: Any = gen) -> object:
                    with _amp(config):
                        out = gen.generate(calls.image)
                    calls.sync()
                    return out

                t = measure(run, runs=config.everything_runs, warmup=0, device=config.device)
                stats = gen.last_stats.to_dict()
                row.update(
                    {
                        **_timing(t),
                        "masks": stats.get("masks_out"),
                        "prompts_decoded": stats.get("prompts_decoded"),
                        "stage_seconds": stats.get("seconds"),
                    }
                )
            except Exception as e:
                row["error"] = _error(e)
            rows.append(row)
    mb.everything = rows


def _check_strategies(config: BenchConfig) -> None:
    """Raises ValueError for a segment-everything strategy the generator does not know."""
    if not config.everything_strategies:
        return
    try:
        from ..everything import STRATEGIES
    except ImportError:
        STRATEGIES = ()
    bad = [s for s in config.everything_strategies if STRATEGIES and s not in STRATEGIES]
    if bad:
        raise ValueError(
            f"unknown segment-everything strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}"
        )


def _interleaved_latencies(
    by_name: dict[str, ModelBench], calls: dict[str, _Calls], config: BenchConfig
) -> None:
    """Encoder and one-box SegAny latency of every model, timed in alternation (A B C A B C ...)."""
    for what, make in (("encoder_latency", lambda c: c.encode), ("segany_latency", lambda c: c.segany)):
        fns = {n: make(c) for n, c in calls.items()}
        try:
            times = _measure_interleaved(fns, config)
            for n, t in times.items():
                setattr(by_name[n], what, _timing(t))
        except Exception:
            # One model failing would stop the alternation: fall back to one model at a time.
            for n, fn in fns.items():
                try:
                    setattr(by_name[n], what, _timing(_measure(fn, config)))
                except Exception as e:
                    by_name[n].errors[what] = _error(e)


def _notes(benches: list[ModelBench], config: BenchConfig) -> list[str]:
    """What a reader of the result must know about how it was measured."""
    notes = []
    if any(b.weights == RANDOM_LABEL for b in benches):
        notes.append(
            "Models marked 'random init' ran with random weights: latency, throughput, memory and MACs "
            "do not depend on weight values, but segment-everything times do (fewer masks survive the filters)."
        )
    if config.interleave and len(benches) > 1 and not config.counts_only:
        notes.append(
            "Encoder and one-box latencies were measured interleaved across models (A B C A B C ...)."
        )
    return notes


def run_benchmark(
    models: str | Sequence[str], config: BenchConfig | None = None, progress: bool = False
) -> BenchResult:
    """Benchmarks ``models`` (names, patterns, ``"all"``) under ``config``; see the module docstring.

    A measurement that fails for a model is recorded in that model's ``errors`` and the run goes on.

    Raises:
        ValueError / UnknownModelError: no or unknown models, bad config.
    """
    from .. import __version__

    config = config or BenchConfig()
    names = resolve_models(models)
    dev = torch.device(config.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    _check_strategies(config)
    load_start = _loadavg()
    image, gt_boxes = test_image(tuple(config.image_size), config.seed)
    benches: list[ModelBench] = []
    calls: dict[str, _Calls] = {}

    for name in names:
        info = get_model_info(name)
        mb = ModelBench(
            name=name, family=info.family, weights="", input_size=info.input_size, dtype=config.dtype
        )
        _log(f"[{name}] counting parameters and MACs", progress)
        _static_counts(mb, name)
        if name in config.accuracy:
            mb.accuracy = float(config.accuracy[name])
        benches.append(mb)
        if config.counts_only:
            mb.weights = "none (counts only)"
            mb.skipped["timing"] = "counts only"
            continue
        try:
            model, mb.weights = load_bench_model(name, config)
            calls[name] = _Calls(model, config, image)
        except Exception as e:
            mb.errors["load"] = _error(e)
        if not config.interleave:
            _measure_model(mb, calls.pop(name, None), config, gt_boxes, progress, latency=True)

    if config.interleave and calls:
        _log(f"timing encoders and one-box SegAny of {len(calls)} model(s) interleaved", progress)
        by_name = {b.name: b for b in benches}
        _interleaved_latencies(by_name, calls, config)
        for n in list(calls):
            _measure_model(by_name[n], calls.pop(n), config, gt_boxes, progress, latency=False)
    return BenchResult(
        config=config.to_dict(),
        machine=machine_fingerprint(config.device).to_dict(),
        models=benches,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        leansam_version=__version__,
        notes=_notes(benches, config),
        load_average={"start": load_start, "end": _loadavg()},
    )


def _loadavg() -> list[float]:
    """The 1 / 5 / 15-minute load averages (how busy the machine was: timing noise); [] if unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return []


def _measure_model(
    mb: ModelBench,
    calls: _Calls | None,
    config: BenchConfig,
    gt_boxes: np.ndarray,
    progress: bool,
    latency: bool,
) -> None:
    """The per-model measurements (latencies too unless they were taken interleaved)."""
    if calls is None:
        mb.skipped.setdefault("timing", "model could not be loaded")
        return
    c = calls

    def enc() -> None:
        mb.encoder_latency = _timing(_measure(c.encode, config))

    def segany() -> None:
        mb.segany_latency = _timing(_measure(c.segany, config))

    def memory() -> None:
        if config.memory_mode == "subprocess" and c.dev.type == "cpu":
            peak = segany_peak_subprocess(
                mb.name, config.device, config.dtype, config.threads, tuple(config.image_size), config.seed
            )
        else:
            peak = peak_memory(c.segany, config.device)
        mb.peak_memory = peak.to_dict()

    stages: list[tuple[str, Callable[[], None]]] = [("encoder_latency", enc), ("segany_latency", segany)]
    if not latency:
        stages = []
    if config.measure_memory:
        stages.append(("peak_memory", memory))
    else:
        mb.skipped["peak_memory"] = "disabled"
    stages += [
        ("decoder_latency", lambda: _decoder_curve(mb, c, config)),
        ("throughput", lambda: _throughput(mb, c, config)),
    ]
    wants_boxes = bool(config.everything_strategies and "boxes" in config.everything_strategies)
    if config.everything_grids or wants_boxes:
        stages.append(("everything", lambda: _everything(mb, c, config, gt_boxes)))
    else:
        mb.skipped["everything"] = "disabled"
    for what, stage in stages:
        _log(f"[{mb.name}] {what}", progress)
        try:
            stage()
        except Exception as e:
            mb.errors[what] = _error(e)
