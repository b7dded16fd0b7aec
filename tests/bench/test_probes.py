"""Probe spread and the disturbed flag on ratios (pure logic; no timing)."""

from __future__ import annotations

import pytest

from facecraft.bench.probes import DISTURBED_SPREAD, ProbeLog, ratio_spread, spread, summary


def test_spread_is_range_over_max():
    assert spread([500.0, 490.0, 505.0]) == pytest.approx(15 / 505)
    assert spread([400.0]) == 0.0
    with pytest.raises(ValueError):
        spread([])


def test_summary_marks_a_burst_as_disturbed():
    quiet = summary([495.0, 502.0, 490.0])
    assert quiet["min"] == 490.0 and quiet["median"] == 495.0 and quiet["max"] == 502.0
    assert not quiet["disturbed"] and quiet["count"] == 3
    burst = summary([500.0, 260.0, 498.0])
    assert burst["disturbed"] and burst["spread"] > DISTURBED_SPREAD


def test_probe_log_indexes_samples_in_order():
    values = iter([500.0, 300.0, 480.0])
    log = ProbeLog(measure=lambda: next(values))
    assert log.last == -1
    assert [log.take(label) for label in ("start", "after a", "after b")] == [0, 1, 2]
    assert [s["label"] for s in log.samples] == ["start", "after a", "after b"]
    assert log.take("given", 123.0) == 3 and log.samples[3]["gflops"] == 123.0


def test_ratio_spread_covers_only_the_probes_around_its_scenarios():
    samples = [{"gflops": g} for g in (500.0, 498.0, 250.0, 495.0, 497.0)]
    a = {"probe_window": (0, 1)}  # quiet: probes 0..1
    b = {"probe_window": (1, 2)}  # a burst during b
    c = {"probe_window": (3, 4)}
    assert ratio_spread(samples, a, a) == pytest.approx(2 / 500)
    assert ratio_spread(samples, a, b) == pytest.approx(250 / 500)
    # a ratio spanning the burst is disturbed even if its own scenarios' probes were quiet
    assert ratio_spread(samples, a, c) == pytest.approx(250 / 500)
    assert ratio_spread(samples, c, c) < DISTURBED_SPREAD
    assert ratio_spread(samples, a, None) is None
    assert ratio_spread(samples, a, {}) is None
