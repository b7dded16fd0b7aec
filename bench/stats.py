"""Triton per-model statistics for the benchmark: snapshot before/after a scenario and diff them.

From ``GET v2/models/stats`` (tritonclient's ``get_inference_statistics``): per model, requests
(``success.count``), inferences (``inference_count``, images) and executions (``execution_count``,
batches), with cumulative queue / compute times. The diff of two snapshots gives the scenario's
average queue and compute time per request and average batch size = inferences / executions.

Triton accumulates ``inference_stats`` per *request*: every request of a batch of 8 is charged
the whole batch's compute time, so their sum is 8 × what the model was busy. The model's real busy
time comes from ``batch_stats``, whose counters are per *execution*; achieved throughput (GFLOP/s)
must be computed from that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model (times in nanoseconds)."""

    requests: int = 0
    inferences: int = 0
    executions: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    execution_infer_ns: int = 0  # from batch_stats: each execution counted once


@dataclass(frozen=True)
class ModelDelta:
    """One model's activity during one scenario."""

    model: str
    requests: int
    inferences: int
    executions: int
    avg_batch_size: float
    queue_ms_per_request: float
    compute_ms_per_request: float
    compute_infer_ms_per_execution: float
    compute_infer_s_total: float  # the model's busy time (per execution, not per request)

    def to_dict(self) -> dict:
        return asdict(self)


def _ns(section: dict | None) -> int:
    return int((section or {}).get("ns", 0))


def parse_statistics(stats: dict) -> dict[str, ModelCounters]:
    """``{model: ModelCounters}`` from the JSON of ``v2/models/stats`` (HTTP client ``get_inference_statistics``)."""
    counters = {}
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        counters[entry["name"]] = ModelCounters(
            requests=int(inference.get("success", {}).get("count", 0)),
            inferences=int(entry.get("inference_count", 0)),
            executions=int(entry.get("execution_count", 0)),
            queue_ns=_ns(inference.get("queue")),
            compute_input_ns=_ns(inference.get("compute_input")),
            compute_infer_ns=_ns(inference.get("compute_infer")),
            compute_output_ns=_ns(inference.get("compute_output")),
            execution_infer_ns=sum(_ns(batch.get("compute_infer")) for batch in entry.get("batch_stats", [])),
        )
    return counters


def diff_statistics(before: dict[str, ModelCounters], after: dict[str, ModelCounters]) -> list[ModelDelta]:
    """Per-model activity between two snapshots; models with no new requests are left out."""
    deltas = []
    for model, end in sorted(after.items()):
        start = before.get(model, ModelCounters())
        requests = end.requests - start.requests
        if requests <= 0:
            continue
        inferences = end.inferences - start.inferences
        executions = end.executions - start.executions
        queue = end.queue_ns - start.queue_ns
        infer = end.compute_infer_ns - start.compute_infer_ns
        busy = end.execution_infer_ns - start.execution_infer_ns
        compute = (
            infer
            + (end.compute_input_ns - start.compute_input_ns)
            + (end.compute_output_ns - start.compute_output_ns)
        )
        deltas.append(
            ModelDelta(
                model=model,
                requests=requests,
                inferences=inferences,
                executions=executions,
                avg_batch_size=inferences / executions if executions else 0.0,
                queue_ms_per_request=queue / requests / 1e6,
                compute_ms_per_request=compute / requests / 1e6,
                compute_infer_ms_per_execution=busy / executions / 1e6 if executions else 0.0,
                compute_infer_s_total=busy / 1e9,
            )
        )
    return deltas


def snapshot(http_url: str) -> dict[str, ModelCounters]:
    """Current counters of every model from a Triton HTTP endpoint (``host:port``)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    try:
        return parse_statistics(client.get_inference_statistics())
    finally:
        client.close()
