"""Figures the benches share."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile q (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
