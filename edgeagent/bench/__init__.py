"""Stage benchmarks used by scripts/bench-stages."""

from __future__ import annotations

from collections.abc import Sequence


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
