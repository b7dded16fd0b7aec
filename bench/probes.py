"""Conv-throughput probes taken between benchmark scenarios, and which ratios they call disturbed.

On a shared machine the cores a scenario gets change from minute to minute. The harness probes
the conv throughput (``facecraft.bench.machine.conv_probe``) at the start, after every scenario
and at the end; each scenario record carries ``probe_window`` = (index of the probe before it,
index of the probe after it). A ratio of two scenarios is only as trustworthy as the machine was
steady from the first probe before one to the last probe after the other: its **probe spread**
(max − min) / max over that window above ``DISTURBED_SPREAD`` marks it disturbed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# 10 %: the quiet 2-core machine's repeated probes agree within ~3 % (490–505 GFLOP/s, issue #12);
# a neighbour's burst moves them by 30-70 % (166 vs 95 in the 2026-11-21 reference run).
DISTURBED_SPREAD = 0.10


def spread(values: Sequence[float]) -> float:
    """(max − min) / max of positive GFLOP/s values; 0.0 for fewer than two. Raises ``ValueError``
    for an empty sequence or a non-positive maximum."""
    if not values:
        raise ValueError("spread of no probes")
    top = max(values)
    if top <= 0:
        raise ValueError(f"probe values must be positive, got {list(values)}")
    return (top - min(values)) / top


def summary(values: Sequence[float], threshold: float = DISTURBED_SPREAD) -> dict:
    """``{"min", "median", "max", "spread", "disturbed", "count"}`` of GFLOP/s probe values."""
    s = spread(values)
    return {
        "count": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "spread": s,
        "disturbed": s > threshold,
    }


def window_values(samples: Sequence[dict], windows: Sequence[Sequence[int]]) -> list[float]:
    """GFLOP/s of every probe from the first index to the last index of ``windows`` (each a pair
    of probe indices, as in a scenario's ``probe_window``)."""
    first = min(w[0] for w in windows)
    last = max(w[1] for w in windows)
    return [sample["gflops"] for sample in samples[first : last + 1]]


def ratio_spread(samples: Sequence[dict], *scenarios: dict | None) -> float | None:
    """The probe spread over the minutes a ratio of ``scenarios`` spans; None when a scenario is
    missing or carries no ``probe_window``."""
    windows = [s.get("probe_window") for s in scenarios if s]
    if len(windows) != len(scenarios) or not all(windows):
        return None
    return spread(window_values(samples, windows))


@dataclass
class ProbeLog:
    """Probes taken so far: ``samples`` = [{"label", "gflops"}]; ``measure()`` returns GFLOP/s."""

    measure: Callable[[], float]
    samples: list[dict] = field(default_factory=list)

    def take(self, label: str, gflops: float | None = None) -> int:
        """Probe now (or record ``gflops`` measured just before); returns the new sample's index."""
        value = self.measure() if gflops is None else gflops
        self.samples.append({"label": label, "gflops": float(value)})
        return len(self.samples) - 1

    @property
    def last(self) -> int:
        """Index of the latest probe (-1 before the first)."""
        return len(self.samples) - 1
