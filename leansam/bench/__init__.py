"""Benchmark utilities: timing loops that exclude warm-up, machine fingerprints."""

from .timing import Timing, machine_fingerprint, measure

__all__ = ["Timing", "machine_fingerprint", "measure"]
