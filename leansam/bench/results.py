"""What a ``leansam bench`` run produces: one :class:`ModelBench` per model in a :class:`BenchResult`.

Times are in seconds; the measurements are described in :mod:`leansam.bench.protocol`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ModelBench:
    """Every measurement of one model (times in seconds; see the module docstring).

    ``skipped`` maps a measurement to the reason it was not taken; ``errors`` maps it to the
    error it raised (the benchmark goes on with the next measurement).
    """

    name: str
    family: str
    weights: str
    input_size: int
    dtype: str
    params: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    peak_memory: dict[str, Any] = field(default_factory=dict)
    encoder_latency: dict[str, Any] = field(default_factory=dict)
    segany_latency: dict[str, Any] = field(default_factory=dict)
    decoder_latency: list[dict[str, Any]] = field(default_factory=list)
    decoder_ms_per_10_boxes: float | None = None
    throughput: list[dict[str, Any]] = field(default_factory=list)
    everything: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    """A benchmark run: config, machine fingerprint, one :class:`ModelBench` per model."""

    config: dict[str, Any]
    machine: dict[str, Any]
    models: list[ModelBench]
    created: str = ""
    leansam_version: str = ""
    notes: list[str] = field(default_factory=list)
    load_average: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "machine": self.machine,
            "created": self.created,
            "leansam_version": self.leansam_version,
            "load_average": dict(self.load_average),
            "notes": list(self.notes),
            "models": [m.to_dict() for m in self.models],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        models = [ModelBench(**m) for m in d.get("models", [])]
        return cls(
            d.get("config", {}),
            d.get("machine", {}),
            models,
            d.get("created", ""),
            d.get("leansam_version", ""),
            list(d.get("notes", [])),
            dict(d.get("load_average", {})),
        )
