"""Triton statistics parsing and per-scenario diffs (queue/compute per request, average batch size)."""

from __future__ import annotations

import pytest

from facecraft.bench.stats import diff_statistics, parse_statistics


def stats(requests, inferences, executions, queue_ns, infer_ns, batch_infer_ns=None):
    """Triton statistics JSON; ``batch_infer_ns`` = per-execution busy time (``batch_stats``)."""
    return {
        "model_stats": [
            {
                "name": "u2net",
                "version": "1",
                "inference_count": inferences,
                "execution_count": executions,
                "inference_stats": {
                    "success": {"count": requests, "ns": 0},
                    "queue": {"count": requests, "ns": queue_ns},
                    "compute_input": {"count": requests, "ns": 1_000_000},
                    "compute_infer": {"count": requests, "ns": infer_ns},
                    "compute_output": {"count": requests, "ns": 1_000_000},
                },
                "batch_stats": [
                    {
                        "batch_size": 4,
                        "compute_infer": {
                            "count": executions,
                            "ns": infer_ns if batch_infer_ns is None else batch_infer_ns,
                        },
                    }
                ],
            },
            {
                "name": "decode",
                "inference_count": 5,
                "execution_count": 5,
                "inference_stats": {"success": {"count": 5}},
            },
        ]
    }


def test_diff_gives_average_batch_and_per_request_times():
    before = parse_statistics(stats(10, 10, 10, 0, 0))
    after = parse_statistics(stats(18, 18, 12, 80_000_000, 400_000_000, batch_infer_ns=400_000_000))
    deltas = diff_statistics(before, after)
    assert [d.model for d in deltas] == ["u2net"]  # decode had no new requests
    delta = deltas[0]
    assert delta.requests == 8
    assert delta.inferences == 8
    assert delta.executions == 2
    assert delta.avg_batch_size == pytest.approx(4.0)
    assert delta.queue_ms_per_request == pytest.approx(10.0)
    assert delta.compute_infer_ms_per_execution == pytest.approx(200.0)
    assert delta.compute_infer_s_total == pytest.approx(0.4)
    # compute = input + infer + output deltas (the input/output counters did not change here)
    assert delta.compute_ms_per_request == pytest.approx(50.0)


def test_new_model_counts_from_zero():
    deltas = diff_statistics({}, parse_statistics(stats(4, 4, 1, 4_000_000, 8_000_000)))
    u2net = next(d for d in deltas if d.model == "u2net")
    assert u2net.avg_batch_size == 4.0
    assert u2net.queue_ms_per_request == pytest.approx(1.0)


def test_busy_time_counts_a_batch_once_not_once_per_request():
    """Measured on Triton 2.51: 12 requests in executions of 1, 2 and 9 → inference_stats charged
    7.51 s (the batch of 9 nine times), batch_stats 1.16 s (what u2net was really busy)."""
    before = parse_statistics(stats(0, 0, 0, 0, 0, batch_infer_ns=0))
    after = parse_statistics(stats(12, 12, 3, 0, 7_505_163_722, batch_infer_ns=1_157_133_507))
    delta = diff_statistics(before, after)[0]
    assert delta.compute_infer_s_total == pytest.approx(1.157, abs=1e-3)
    assert delta.compute_infer_ms_per_execution == pytest.approx(385.7, abs=0.1)
    # the per-request figure stays what each request waited on compute (its batch's duration)
    assert delta.compute_ms_per_request == pytest.approx(7_505_163_722 / 12 / 1e6)
