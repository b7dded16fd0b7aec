"""The Grafana dashboard: structure, provisioning, and every query against REAL metric scrapes.

The integration test scrapes the embedded Triton (after a real ``portrait_basic`` inference) and
the real gateway (after a real request), then checks that every metric a panel queries — recording
rules expanded — is one those exporters actually expose. Metrics that only exist on other builds or
flags are listed explicitly below.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml

from tests.deploy.metric_names import exporter_metric_names, recording_rules, scraped_metric_names
from tests.deploy.tools import DASHBOARD_PATH, DOCKER_DIR, PROMETHEUS_DIR
from tests.deploy.traffic import infer_portrait_basic, process_through_gateway

# Triton exports these only on hosts with an NVIDIA GPU (NVML/DCGM); panels using them must be
# labelled GPU in their title.
GPU_ONLY_METRICS = frozenset(
    {
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
    }
)
# Triton exports latency summaries (quantiles) only with --metrics-config=summary_latencies=true,
# which docker/triton-entrypoint.sh passes; the embedded test server may run without it.
SUMMARY_LATENCY_METRICS = frozenset(
    {
        "nv_inference_request_summary_us",
        "nv_inference_queue_summary_us",
        "nv_inference_compute_input_summary_us",
        "nv_inference_compute_infer_summary_us",
        "nv_inference_compute_output_summary_us",
    }
)
SUMMARY_FLAG = "--metrics-config=summary_latencies=true"
# What the brief requires the dashboard to show, by the metric that shows it.
REQUIRED_METRICS = {
    "requests per model": "nv_inference_request_success",
    "failures per model": "nv_inference_request_failure",
    "queue time per step": "nv_inference_queue_duration_us",
    "compute time per step": "nv_inference_compute_infer_duration_us",
    "batch size (inferences)": "nv_inference_count",
    "batch size (executions)": "nv_inference_exec_count",
    "p95 latency": "nv_inference_request_summary_us",
    "CPU utilisation": "nv_cpu_utilization",
    "CPU memory": "nv_cpu_memory_used_bytes",
    "GPU utilisation": "nv_gpu_utilization",
    "GPU memory": "nv_gpu_memory_used_bytes",
    "gateway latency": "facecraft_gateway_request_duration_seconds_bucket",
    "gateway job outcomes": "facecraft_gateway_jobs_total",
    "processor runs and errors": "facecraft_gateway_processor_requests_total",
    "processor latency": "facecraft_gateway_processor_duration_seconds_bucket",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_PATH.read_text())


@pytest.fixture(scope="module")
def records() -> dict[str, str]:
    return recording_rules(PROMETHEUS_DIR / "rules.yml")


def query_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def panel_metrics(panel: dict, records: dict[str, str]) -> set[str]:
    return set().union(*(exporter_metric_names(target["expr"], records) for target in panel["targets"]))


def test_panels_have_unique_ids_and_queries(dashboard):
    panels = query_panels(dashboard)
    assert len(panels) >= 15
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_panels_use_the_provisioned_datasource(dashboard):
    provisioned = yaml.safe_load((DOCKER_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for panel in query_panels(dashboard):
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"]), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_dashboard_provider_points_at_the_mounted_folder():
    provider = yaml.safe_load((DOCKER_DIR / "grafana/provisioning/dashboards/facecraft.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_shows_everything_required(dashboard, records):
    used = set().union(*(panel_metrics(panel, records) for panel in query_panels(dashboard)))
    missing = {what: metric for what, metric in REQUIRED_METRICS.items() if metric not in used}
    assert not missing


def test_gpu_only_metrics_are_in_gpu_labelled_panels(dashboard, records):
    for panel in query_panels(dashboard):
        if panel_metrics(panel, records) & GPU_ONLY_METRICS:
            assert "GPU" in panel["title"], f"panel {panel['title']!r} uses GPU-only metrics"


def test_summary_latency_panels_need_the_flag_the_container_sets(dashboard, records):
    entrypoint = (DOCKER_DIR / "triton-entrypoint.sh").read_text()
    assert SUMMARY_FLAG in entrypoint
    for panel in query_panels(dashboard):
        if panel_metrics(panel, records) & SUMMARY_LATENCY_METRICS:
            assert "summary_latencies=true" in panel["description"], panel["title"]


@pytest.mark.integration
def test_every_dashboard_and_rule_metric_is_exported(
    dashboard, records, triton_server, gateway_server, astronaut_jpeg
):
    outputs = infer_portrait_basic(triton_server.http_url, astronaut_jpeg)
    assert int(outputs["FACE_COUNT"].reshape(-1)[0]) == 1
    process_through_gateway(gateway_server.url, astronaut_jpeg)

    triton_text = httpx.get(triton_server.metrics_url, timeout=10).text
    gateway_text = httpx.get(f"{gateway_server.url}/metrics", timeout=10).text
    triton_names = scraped_metric_names(triton_text)
    gateway_names = scraped_metric_names(gateway_text)
    # The inference above created the per-model series this test relies on.
    assert 'nv_inference_request_success{model="portrait_basic"' in triton_text
    assert "facecraft_gateway_requests_total{" in gateway_text
    exported = triton_names | gateway_names

    gpu_host = bool(triton_names & GPU_ONLY_METRICS)
    # The summaries are only excused when the server under test was started without the flag.
    with_summaries = SUMMARY_FLAG in triton_server.command()
    allowed_absent = (set() if gpu_host else GPU_ONLY_METRICS) | (
        set() if with_summaries else SUMMARY_LATENCY_METRICS
    )

    if with_summaries:
        # The dashboard's p95 panel reads this exact quantile.
        assert re.search(
            r'nv_inference_request_summary_us\{[^}]*model="portrait_basic"[^}]*quantile="0\.95"', triton_text
        )

    unknown = {}
    for panel in query_panels(dashboard):
        for metric in panel_metrics(panel, records) - exported - allowed_absent:
            unknown.setdefault(metric, []).append(panel["title"])
    assert not unknown, f"dashboard queries metrics no exporter exposes: {unknown}"

    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        # `up` is written by Prometheus itself for every target.
        missing = exporter_metric_names(rule["expr"], records) - exported - {"up"}
        assert not missing, f"rule {rule.get('alert') or rule.get('record')} uses unexported {missing}"
