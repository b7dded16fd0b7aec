"""docker/prometheus: config and rules checked by promtool, alert rules unit-tested, rule semantics."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.metric_names import promql_metric_names, recording_rules
from tests.deploy.tools import PROMETHEUS_DIR, require_tool

REQUIRED_ALERTS = {
    "FacecraftModelFailureRatioHigh",
    "FacecraftQueueTimeGrowing",
    "FacecraftModelStalled",
    "FacecraftGateway5xxRatioHigh",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_tool("promtool")
    return subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


def test_promtool_check_config():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules():
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests_pass():
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_cover_every_required_alert():
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert tested >= REQUIRED_ALERTS


def test_required_alerts_exist_with_severity_and_summary():
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name


def test_stall_rule_needs_pending_requests_and_no_success():
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    stall = next(
        rule for group in groups for rule in group["rules"] if rule.get("alert") == "FacecraftModelStalled"
    )
    assert promql_metric_names(stall["expr"]) == {
        "nv_inference_pending_request_count",
        "nv_inference_request_success",
    }


def test_scrape_targets_cover_triton_metrics_port_and_gateway():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [target for static in job.get("static_configs", []) for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["triton"] == ["triton:8002"]
    assert targets["gateway"] == ["gateway:8080"]
    (worker,) = [job for job in config["scrape_configs"] if job["job_name"] == "worker"]
    assert worker["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": 9100}], "every replica"
    assert config["rule_files"] == ["rules.yml"]


def test_recording_rules_are_named_level_metric_operation():
    records = recording_rules(PROMETHEUS_DIR / "rules.yml")
    assert records
    for name in records:
        level, metric, operation = name.split(":")
        assert level == "facecraft" and metric and operation, name


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (model) (rate(nv_inference_count{model=~"$model"}[$__rate_interval]))',
            {"nv_inference_count"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, route) (rate(facecraft_gateway_request_duration_seconds_bucket[5m])))",
            {"facecraft_gateway_request_duration_seconds_bucket"},
        ),
        ("a:b:c > 2 * (a:b:c offset 30m) and on (model) up == 0", {"a:b:c", "up"}),
        ('max by (model) (x{quantile="0.95", model=~"a|b"}) / 1000', {"x"}),
    ],
)
def test_promql_metric_name_extraction(expr, expected):
    assert promql_metric_names(expr) == expected
