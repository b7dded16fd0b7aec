"""``facecraft serve`` steps (unit) and the command end to end over small models (integration)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from facecraft.runtime import serve as serve_module
from facecraft.runtime.instance_plan import plan_instances
from facecraft.runtime.serve import (
    ServeError,
    ServeOptions,
    missing_onnx_models,
    prepare_repository,
    report_weights,
    serve,
)
from facecraft.runtime.server import free_port
from tests.runtime.small_models import build_small_repository


@pytest.fixture
def small_repo(tmp_path) -> Path:
    return build_small_repository(tmp_path / "repo")


def test_missing_onnx_models(small_repo):
    assert missing_onnx_models(small_repo) == []
    (small_repo / "add_one" / "1" / "model.onnx").unlink()
    assert missing_onnx_models(small_repo) == ["add_one"]


def test_export_missing_calls_the_exporter_for_each_missing_model(small_repo, monkeypatch):
    pytest.importorskip("facecraft.export.exporter")
    calls = []

    def fake_export(name, **kwargs):
        calls.append((name, kwargs))
        (kwargs["repo"] / name / "1" / "model.onnx").write_bytes(b"x")

    monkeypatch.setattr("facecraft.export.exporter.export_model", fake_export)
    (small_repo / "add_one" / "1" / "model.onnx").unlink()
    assert serve_module.export_missing(small_repo, "tiny") == ["add_one"]
    assert calls == [("add_one", {"preset": "tiny", "weights": "auto", "repo": small_repo, "progress": True})]


def test_report_weights_flags_untrained(small_repo, capsys):
    (small_repo / "add_one" / "1" / "export.json").write_text(json.dumps({"trained": False, "seed": 0}))
    assert report_weights(small_repo) == ["add_one"]
    assert "add_one has UNTRAINED weights" in capsys.readouterr().out


def test_prepare_repository_writes_a_runtime_copy_with_the_plan(small_repo, tmp_path):
    before = (small_repo / "add_one" / "config.pbtxt").read_text()
    served = prepare_repository(small_repo, tmp_path / "rt", plan_instances("cpu", cores=2))
    assert served == tmp_path / "rt" / "model_repository"
    config = (served / "add_one" / "config.pbtxt").read_text()
    assert "count: 2" in config and 'string_value: "1"' in config
    assert (small_repo / "add_one" / "config.pbtxt").read_text() == before, "committed config untouched"
    # a second run replaces the previous copy
    served = prepare_repository(small_repo, tmp_path / "rt", plan_instances("gpu", cores=2, instances=3))
    assert "count: 3" in (served / "add_one" / "config.pbtxt").read_text()
    assert "KIND_GPU" in (served / "add_one" / "config.pbtxt").read_text()


def test_gateway_only_needs_a_triton_url():
    with pytest.raises(ServeError, match="--triton-url"):
        serve(ServeOptions(gateway_only=True), wait=lambda *_: 0)


def test_not_a_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ServeError, match="not a model repository"):
        serve(ServeOptions(repo=tmp_path, triton_only=True), wait=lambda *_: 0)


def test_repo_configure_command(small_repo, tmp_path, capsys):
    from facecraft.cli import main

    assert main(["repo", "configure", "--repo", str(small_repo), "--device", "gpu", "--instances", "2"]) == 0
    assert "add_one          2 x KIND_GPU" in capsys.readouterr().out
    assert "KIND_GPU" in (small_repo / "add_one" / "config.pbtxt").read_text()
    assert main(["repo", "configure", "--repo", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    assert "not a model repository" in capsys.readouterr().err


def _read_until(process: subprocess.Popen, pattern: str, timeout: float) -> tuple[re.Match, str]:
    """Read the process' stdout line by line until ``pattern`` matches; return the match and the text."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match, "".join(seen)
    raise AssertionError(f"{pattern!r} not printed; output so far:\n{''.join(seen)}")


@pytest.mark.integration
@pytest.mark.parametrize("with_gateway", [False, True], ids=["triton-only", "with-gateway"])
def test_serve_command_runs_and_stops_on_sigint(small_repo, tmp_path, with_gateway):
    if with_gateway and not serve_module.gateway_available():
        pytest.skip("facecraft.gateway is not available")
    ports = [free_port() for _ in range(4)]
    command = [
        sys.executable, "-m", "facecraft.cli", "serve", "--repo", str(small_repo),
        "--runtime-dir", str(tmp_path / "runtime"), "--host", "127.0.0.1",
        "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--gateway-port", str(ports[3]), "--ready-timeout", "300",
    ]  # fmt: skip
    if not with_gateway:
        command.append("--triton-only")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _, output = _read_until(process, r"Triton ready in", 300)
        _, more = _read_until(process, r"press Ctrl-C to stop", 120)
        output += more
        assert f"HTTP    127.0.0.1:{ports[0]}" in output and f"gRPC    127.0.0.1:{ports[1]}" in output
        assert f"metrics http://127.0.0.1:{ports[2]}/metrics" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready", timeout=10) as response:
            assert response.status == 200
        if with_gateway:
            assert f"gateway ready: http://127.0.0.1:{ports[3]} (Triton gRPC 127.0.0.1:{ports[1]})" in output
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[3]}/health", timeout=10) as response:
                assert response.status == 200
        else:
            assert "gateway" not in output
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        assert process.returncode == 0, rest
        assert "Triton stopped (exit code 0)" in rest
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/live", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_wait_returns_1_when_the_gateway_exits(capsys):
    gateway = serve_module.GatewayProcess(triton_url="127.0.0.1:1")
    gateway.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert serve_module._wait_forever(None, gateway) == 1
    assert "the gateway exited with code 3" in capsys.readouterr().out


def test_gateway_process_stop_terminates_a_running_child():
    gateway = serve_module.GatewayProcess(triton_url="127.0.0.1:1")
    gateway.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert gateway.stop(timeout=10) == -signal.SIGTERM
    assert gateway.process is None


def test_gateway_process_tells_the_gateway_where_the_models_are(monkeypatch, tmp_path):
    """/status can only label untrained weights when the gateway can read each export.json."""
    seen = {}
    real_popen = subprocess.Popen

    def fake_popen(command, env, **kwargs):
        seen["env"] = env
        return real_popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(serve_module.subprocess, "Popen", fake_popen)
    gateway = serve_module.GatewayProcess(triton_url="127.0.0.1:1", port=1, model_repository=tmp_path)
    gateway.start().process.wait(30)
    assert seen["env"]["FACECRAFT_MODEL_REPOSITORY"] == str(tmp_path)
    assert seen["env"]["FACECRAFT_TRITON_URL"] == "127.0.0.1:1"
