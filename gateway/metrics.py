"""Prometheus metrics of the gateway (``GET /metrics``), all named ``facecraft_gateway_*``.

Each app instance owns its own registry, so several apps in one process (tests) do not clash.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from facecraft import __version__

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class GatewayMetrics:
    """The gateway's counters, gauges and histograms on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "facecraft_gateway_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "facecraft_gateway_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "facecraft_gateway_requests_in_flight", "HTTP requests being handled", registry=r
        )
        self.inferences_in_flight = Gauge(
            "facecraft_gateway_inferences_in_flight", "Triton inferences running now", registry=r
        )
        self.inferences_waiting = Gauge(
            "facecraft_gateway_inferences_waiting",
            "requests waiting for a free inference slot (FACECRAFT_MAX_CONCURRENT_JOBS)",
            registry=r,
        )
        self.inference_latency = Histogram(
            "facecraft_gateway_inference_duration_seconds",
            "Triton ensemble inference latency by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_outcomes = Counter(
            "facecraft_gateway_inferences_total",
            "Triton inferences by model and outcome (ok or an error code)",
            ["model", "outcome"],
            registry=r,
        )
        self.processor_requests = Counter(
            "facecraft_gateway_processor_requests_total",
            "processor runs (POST /api/v1/processors/{name}, chain jobs) by processor and outcome "
            "(ok or an error code)",
            ["processor", "outcome"],
            registry=r,
        )
        self.processor_latency = Histogram(
            "facecraft_gateway_processor_duration_seconds",
            "processor run latency (Triton inference of its ensemble) by processor",
            ["processor"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.job_queue_depth = Gauge(
            "facecraft_gateway_job_queue_depth", "async jobs queued, not yet running", registry=r
        )
        self.jobs = Counter(
            "facecraft_gateway_jobs_total",
            "async job events: submitted, completed, failed, cancelled, rejected, requeued "
            "(after a restart or Triton outage)",
            ["outcome"],
            registry=r,
        )
        self.job_states = Gauge(
            "facecraft_gateway_job_states",
            "async jobs in the queue by state: queued, running, retrying (waiting for a retry)",
            ["state"],
            registry=r,
        )
        self.job_workers = Gauge(
            "facecraft_gateway_job_workers",
            "workers taking async jobs (local: worker tasks; Redis: live `facecraft worker` processes)",
            registry=r,
        )
        self.job_duration = Histogram(
            "facecraft_gateway_job_duration_seconds",
            "run time of completed async job attempts by job type (observed where the job ran)",
            ["job_type"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.cleanup_removed = Counter(
            "facecraft_gateway_cleanup_removed_jobs_total", "jobs deleted by the age cleanup", registry=r
        )
        self.triton_ready = Gauge(
            "facecraft_gateway_triton_ready", "1 when the last readiness probe passed", registry=r
        )
        self.stub_recoveries = Counter(
            "facecraft_gateway_triton_stub_recoveries_total",
            "models reloaded because Triton declared one of their Python stubs unhealthy, by outcome "
            "(reloaded | failed; docs/reliability.md)",
            ["model", "outcome"],
            registry=r,
        )
        Info("facecraft_gateway_build", "gateway version", registry=r).info({"version": __version__})
        self.started_at = time.time()

    def count_stub_recovery(self, model: str, outcome: str) -> None:
        """``TritonGateway``'s ``on_recovery``: one model reload after an unhealthy stub."""
        self.stub_recoveries.labels(model, outcome).inc()


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app, metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.requests_in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(template, method, str(status_holder["status"])).inc()
            self.metrics.request_latency.labels(template, method).observe(time.perf_counter() - started)
