"""The real ``prometheus`` binary scraping the embedded Triton and the real gateway.

Prometheus (Debian package) runs on loopback with a generated config (``scrape_interval: 1s``)
and a temporary storage folder; the test sends real portraits through Triton and the gateway and
reads the counters back through Prometheus' HTTP query API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from facecraft.runtime.http_probe import EXITED, OK, wait_for_http_ok
from facecraft.runtime.ports import free_port
from tests.deploy.tools import PROMETHEUS_DIR, require_tool
from tests.deploy.traffic import BASIC_ENSEMBLE, infer_portrait_basic, process_through_gateway

STARTUP_TIMEOUT_S = 60.0
# Several 1 s scrapes plus slack for a machine shared with other test runs.
INCREASE_TIMEOUT_S = 90.0


class PrometheusProcess:
    """``prometheus`` on 127.0.0.1:<free port> with a temporary config and storage folder."""

    def __init__(self, workdir: Path, triton_target: str, gateway_target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            # The stack's real rules, so their expressions are evaluated against real series too.
            "rule_files": [str(PROMETHEUS_DIR / "rules.yml")],
            "scrape_configs": [
                {"job_name": "triton", "static_configs": [{"targets": [triton_target]}]},
                {"job_name": "gateway", "static_configs": [{"targets": [gateway_target]}]},
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = require_tool("prometheus")
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        ready = wait_for_http_ok(
            f"{self.url}/-/ready", self.process, STARTUP_TIMEOUT_S, interval_s=0.25, request_timeout_s=1.0
        )
        if ready == OK:
            return
        if ready == EXITED:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
        raise AssertionError(f"prometheus not ready after {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def query(self, expr: str) -> list[dict]:
        """Instant query; the ``result`` vector of the HTTP API's answer."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        """The single value of an instant query, ``None`` when it selects nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = INCREASE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; prometheus log:\n{self.log_tail()}"
        )


@pytest.fixture
def prometheus(tmp_path: Path, triton_server, gateway_server) -> Iterator[PrometheusProcess]:
    triton_target = urlsplit(triton_server.metrics_url).netloc
    gateway_target = urlsplit(gateway_server.url).netloc
    server = PrometheusProcess(tmp_path, triton_target, gateway_target)
    try:
        server.start()
        yield server
    finally:
        server.stop()


TRITON_SUCCESS = f'sum(nv_inference_request_success{{job="triton", model="{BASIC_ENSEMBLE}"}})'
GATEWAY_PROCESS_OK = (
    'sum(facecraft_gateway_requests_total{job="gateway", route="/api/v1/process", status="200"})'
)


@pytest.mark.integration
def test_prometheus_sees_triton_and_gateway_counters_increase(
    prometheus, triton_server, gateway_server, astronaut_jpeg
):
    def both_targets_up() -> bool:
        up = {sample["metric"]["job"]: sample["value"][1] for sample in prometheus.query("up")}
        return up.get("triton") == "1" and up.get("gateway") == "1"

    prometheus.wait_for("both scrape targets up", both_targets_up, timeout=STARTUP_TIMEOUT_S)
    # Per-model counters exist from model load on; the gateway's appear with its first request.
    prometheus.wait_for(
        "portrait_basic success counter", lambda: prometheus.scalar(TRITON_SUCCESS) is not None
    )
    triton_before = prometheus.scalar(TRITON_SUCCESS)
    gateway_before = prometheus.scalar(GATEWAY_PROCESS_OK) or 0.0

    outputs = infer_portrait_basic(triton_server.http_url, astronaut_jpeg)
    assert outputs["PNG"].reshape(-1)[0][:8] == b"\x89PNG\r\n\x1a\n"
    process_through_gateway(gateway_server.url, astronaut_jpeg)

    # One direct request + one through the gateway, both on portrait_basic.
    prometheus.wait_for(
        "nv_inference_request_success{model=portrait_basic} to grow by 2",
        lambda: (prometheus.scalar(TRITON_SUCCESS) or 0.0) >= triton_before + 2,
    )
    prometheus.wait_for(
        "facecraft_gateway_requests_total{route=/api/v1/process,status=200} to grow",
        lambda: (prometheus.scalar(GATEWAY_PROCESS_OK) or 0.0) >= gateway_before + 1,
    )
    outcomes = prometheus.query(
        f'facecraft_gateway_inferences_total{{model="{BASIC_ENSEMBLE}", outcome="ok"}}'
    )
    assert outcomes and float(outcomes[0]["value"][1]) >= 1

    # The stack's recording rules evaluate on the real series (every 15 s). Before the inferences
    # above the rate is 0/0 = NaN, which the comparison filters out.
    batch_query = f'facecraft:triton_batch_size:rate5m{{model="{BASIC_ENSEMBLE}"}} >= 1'
    prometheus.wait_for(
        "recording rule facecraft:triton_batch_size:rate5m for portrait_basic",
        lambda: bool(prometheus.query(batch_query)),
    )
    (batch,) = prometheus.query(batch_query)
    assert 1.0 <= float(batch["value"][1]) <= 16.0
