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
from tests.runtime.http_servers import static_http_server
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
    with pytest.raises(ServeError, match="--triton-url HOST:PORT or FACECRAFT_TRITON_URL"):
        serve(ServeOptions(gateway_only=True), wait=lambda *_: 0)


SERVE_ENV = (
    "FACECRAFT_JOB_BACKEND",
    "FACECRAFT_HOST",
    "FACECRAFT_PORT",
    "FACECRAFT_TRITON_URL",
    "FACECRAFT_TRITON_HTTP_PORT",
    "FACECRAFT_TRITON_GRPC_PORT",
    "FACECRAFT_TRITON_METRICS_PORT",
    "FACECRAFT_INSTANCES",
    "FACECRAFT_ONNX_THREADS",
    "FACECRAFT_PYTHON_INSTANCES",
)


@pytest.fixture
def serve_options(monkeypatch):
    """Run ``facecraft serve ARGS`` through the real CLI; return the ServeOptions serve() got."""
    from facecraft.cli import main

    for name in SERVE_ENV:
        monkeypatch.delenv(name, raising=False)
    received = []
    monkeypatch.setattr(serve_module, "serve", lambda options: received.append(options) or 0)

    def run(*argv: str, **env: str) -> ServeOptions:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(["serve", *argv]) == 0
        return received.pop()

    return run


def test_serve_settings_flags_beat_environment_beat_defaults(serve_options):
    defaults = serve_options("--gateway-only", "--triton-url", "t:1")
    assert (defaults.host, defaults.gateway_port, defaults.http_port, defaults.grpc_port) == (
        "0.0.0.0",
        8080,
        8000,
        8001,
    )
    assert defaults.instances is None
    env = {
        "FACECRAFT_HOST": "127.0.0.1",
        "FACECRAFT_PORT": "9180",
        "FACECRAFT_TRITON_URL": "triton.internal:9001",
        "FACECRAFT_TRITON_HTTP_PORT": "9100",
        "FACECRAFT_TRITON_GRPC_PORT": "9101",
        "FACECRAFT_TRITON_METRICS_PORT": "9102",
        "FACECRAFT_INSTANCES": "3",
        "FACECRAFT_ONNX_THREADS": "2",
    }
    # the case: --gateway-only took neither FACECRAFT_TRITON_URL nor FACECRAFT_PORT
    from_env = serve_options("--gateway-only", **env)
    assert from_env.triton_url == "triton.internal:9001"
    assert (from_env.host, from_env.gateway_port) == ("127.0.0.1", 9180)
    assert (from_env.http_port, from_env.grpc_port, from_env.metrics_port) == (9100, 9101, 9102)
    assert (from_env.instances, from_env.onnx_threads, from_env.python_instances) == (3, 2, None)
    flags = serve_options(
        "--gateway-only",
        "--triton-url",
        "flag:1",
        "--gateway-port",
        "9280",
        "--host",
        "::1",
        "--instances",
        "1",
    )
    assert (flags.triton_url, flags.gateway_port, flags.host, flags.instances) == ("flag:1", 9280, "::1", 1)
    assert flags.grpc_port == 9101  # not given as a flag: still the environment's


def test_serve_jobs_backend_from_flag_or_environment_default_local(serve_options, capsys):
    assert serve_options("--gateway-only", "--triton-url", "t:1").jobs == "local"
    from_env = serve_options(
        "--gateway-only", "--triton-url", "t:1", FACECRAFT_JOB_BACKEND="redis://r:6379/0"
    )
    assert from_env.jobs == "redis://r:6379/0"
    assert (
        serve_options("--gateway-only", "--triton-url", "t:1", "--jobs", "redis://f:1/2").jobs
        == "redis://f:1/2"
    )
    from facecraft.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["serve", "--jobs", "amqp://x"])
    assert refused.value.code == 2
    assert "is not 'local' or a Redis URL" in capsys.readouterr().err


def test_serve_ignores_an_environment_triton_url_when_it_runs_triton(serve_options, capsys):
    options = serve_options(FACECRAFT_TRITON_URL="elsewhere:8001")
    assert options.triton_url is None and not options.gateway_only
    assert "FACECRAFT_TRITON_URL=elsewhere:8001 is ignored" in capsys.readouterr().out


def test_a_bad_environment_value_is_an_error_naming_the_variable(monkeypatch, capsys):
    from facecraft.cli import main

    monkeypatch.setenv("FACECRAFT_PORT", "eighty")
    assert main(["serve", "--gateway-only", "--triton-url", "t:1"]) == 2
    assert "environment variable FACECRAFT_PORT='eighty': not an integer" in capsys.readouterr().err
    monkeypatch.setenv("FACECRAFT_PORT", "70000")
    assert main(["serve", "--gateway-only", "--triton-url", "t:1"]) == 2
    assert "not a TCP port (1-65535): 70000" in capsys.readouterr().err


def test_serve_help_names_every_variable_and_the_precedence(capsys):
    from facecraft.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "A flag overrides its FACECRAFT_* environment variable, which overrides the built-in default." in text
    )
    for name in SERVE_ENV:
        assert f"${name}" in text, name
    assert "(default: $FACECRAFT_PORT, else 8080)" in text


@pytest.mark.parametrize(
    ("mode", "role", "hint"),
    [
        ("--gateway-only", "gateway", "--gateway-port or FACECRAFT_PORT"),
        ("--triton-only", "Triton gRPC", "--grpc-port or FACECRAFT_TRITON_GRPC_PORT"),
    ],
)
def test_a_taken_port_stops_serve_before_anything_starts(small_repo, tmp_path, capsys, mode, role, hint):
    import socket

    from facecraft.cli import main

    ports = [free_port() for _ in range(4)]
    taken = ports[3] if role == "gateway" else ports[1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        argv = [
            "serve", mode, "--repo", str(small_repo), "--runtime-dir", str(tmp_path / "rt"),
            "--host", "127.0.0.1", "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
            "--metrics-port", str(ports[2]), "--gateway-port", str(ports[3]),
        ]  # fmt: skip
        if mode == "--gateway-only":
            argv += ["--triton-url", "127.0.0.1:1"]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"port {taken} ({role}) on 127.0.0.1 is already in use (held by pid {os.getpid()}" in err
    assert hint in err
    assert not (tmp_path / "rt").exists(), "nothing was prepared or started"


def test_gateway_only_never_announces_another_process_on_its_port(tmp_path, monkeypatch, capsys):
    """The issue's case with the port check out of the way (a server that binds between the check
    and the gateway's start): another server answers /health with 200 on the port, our gateway
    fails to bind and exits; serve must say so, not print "gateway ready"."""
    if not serve_module.gateway_available():
        pytest.skip("facecraft.gateway is not available")
    (tmp_path / "health").write_text("ok")
    with static_http_server(tmp_path) as (_other, port):
        monkeypatch.setattr(serve_module, "check_ports", lambda _options: None)
        options = ServeOptions(
            gateway_only=True, triton_url="127.0.0.1:1", host="127.0.0.1", gateway_port=port
        )
        with pytest.raises(ServeError, match="the gateway exited during start-up"):
            serve(options, wait=lambda *_: 0)
        assert "gateway ready" not in capsys.readouterr().out


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


def test_repo_configure_precision_flag_and_environment(small_repo, capsys, monkeypatch):
    from facecraft.cli import main

    assert (
        main(["repo", "configure", "--repo", str(small_repo), "--device", "cpu", "--precision", "int8"]) == 2
    )
    assert "facecraft export add_one --precision int8" in capsys.readouterr().err
    (small_repo / "add_one" / "1" / "model.int8.onnx").write_bytes(
        (small_repo / "add_one" / "1" / "model.onnx").read_bytes()
    )
    monkeypatch.setenv("FACECRAFT_PRECISION", "add_one=int8")
    assert main(["repo", "configure", "--repo", str(small_repo), "--device", "cpu"]) == 0
    assert "int8 (model.int8.onnx)" in capsys.readouterr().out
    assert (
        'default_model_filename: "model.int8.onnx"' in (small_repo / "add_one" / "config.pbtxt").read_text()
    )


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


def test_the_restart_budget_allows_a_few_restarts_per_window():
    budget = serve_module.RestartBudget(limit=2, window_s=60.0)
    assert budget.allow(0.0) and budget.allow(10.0)
    assert not budget.allow(20.0)  # a third within 60 s
    assert budget.allow(61.0)  # the first has left the window
    assert not budget.allow(62.0)


@pytest.mark.integration
def test_serve_restarts_a_triton_that_dies_on_the_same_ports(small_repo, tmp_path, capsys):
    """The wait loop of ``serve`` brings a killed Triton back (same ports, ready); it returns only
    when the gateway dies, or when Triton dies past the restart budget."""
    import threading

    from facecraft.runtime.server import TritonServer

    triton = TritonServer(small_repo, runtime_dir=tmp_path / "runtime", host="127.0.0.1", http_port=0,
                          grpc_port=0, metrics_port=0, ready_timeout=300)  # fmt: skip
    triton.start()
    gateway = serve_module.GatewayProcess(triton_url=triton.grpc_url)
    gateway.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    budget = serve_module.RestartBudget(limit=1, window_s=600.0)
    returned: list[int] = []
    loop = threading.Thread(
        target=lambda: returned.append(serve_module._wait_forever(triton, gateway, None, budget))
    )
    try:
        http_url, first_pid = triton.http_url, triton.pid
        loop.start()
        os.kill(first_pid, signal.SIGKILL)
        out, deadline = "", time.monotonic() + 300
        while "Triton is ready again" not in out:  # restart_triton has returned
            assert time.monotonic() < deadline and loop.is_alive(), out
            time.sleep(0.5)
            out += capsys.readouterr().out
        assert "restarting Triton (1 of at most 1 restarts in 600 s" in out
        assert triton.pid != first_pid and triton.http_url == http_url
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=10) as response:
            assert response.status == 200
        os.kill(triton.pid, signal.SIGKILL)  # past the budget of 1: serve gives up
        loop.join(300)
        assert returned == [1]
        out += capsys.readouterr().out
        assert "Triton exited 2 times within 600 s: giving up" in out
    finally:
        gateway.process.kill()
        gateway.process.wait(30)
        loop.join(300)
        triton.stop()


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


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--gateway-only"], {}, "--gateway-only needs Triton's gRPC endpoint"),
        (["--gateway-only", "--triton-url", "127.0.0.1:99999"], {}, "--triton-url: must be HOST:PORT"),
        (["--gateway-only"], {"FACECRAFT_TRITON_URL": "http://t:1"}, "FACECRAFT_TRITON_URL='http://t:1'"),
        (["--gateway-only", "--triton-url", "t:1", "--host", ""], {}, "--host: must not be empty"),
    ],
)
def test_bad_settings_are_usage_errors(argv, env, message, monkeypatch, capsys):
    from facecraft.cli import main

    for name in SERVE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(["serve", *argv])
    except SystemExit as exit_:  # argparse refuses a flag's value itself
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (
            ["--http-port", "{a}", "--gateway-port", "{a}"],
            {},
            "port {a} is given for both Triton HTTP and gateway",
        ),
        (["--host", "bogus.invalid"], {}, "bind address 'bogus.invalid' does not resolve"),
        (
            [],
            {"FACECRAFT_MAX_UPLOAD_MB": "abc"},
            "the gateway's settings are invalid: FACECRAFT_MAX_UPLOAD_MB='abc'",
        ),
    ],
)
def test_serve_refuses_bad_ports_hosts_and_gateway_settings_before_starting(
    small_repo, tmp_path, monkeypatch, capsys, extra, env, message
):
    from facecraft.cli import main

    if not serve_module.gateway_available():
        pytest.skip("facecraft.gateway is not available")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    a, b, c, d = (free_port() for _ in range(4))
    argv = [
        "serve", "--repo", str(small_repo), "--runtime-dir", str(tmp_path / "rt"), "--host", "127.0.0.1",
        "--http-port", str(a), "--grpc-port", str(b), "--metrics-port", str(c), "--gateway-port", str(d),
    ]  # fmt: skip
    argv += [part.format(a=a) for part in extra]
    assert main(argv) == 1
    assert message.format(a=a) in capsys.readouterr().err
    assert not (tmp_path / "rt").exists(), "nothing was prepared or started"


@pytest.mark.integration
def test_serve_with_redis_jobs_runs_a_worker_and_a_gateway_only_serve_joins_the_queue(
    tiny_model_repo, redis_url, tmp_path, astronaut_jpeg
):
    """``facecraft serve --jobs redis://…`` starts a job worker beside its gateway; a second
    ``serve --gateway-only`` with the same setting has none and joins the shared queue: a job it
    accepts is run by the first one's worker."""
    import httpx

    ports = [free_port() for _ in range(5)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FACECRAFT_OUTPUT_DIR": str(tmp_path / "outputs")}
    full = [
        sys.executable, "-m", "facecraft.cli", "serve", "--repo", str(tiny_model_repo),
        "--runtime-dir", str(tmp_path / "runtime"), "--host", "127.0.0.1",
        "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--gateway-port", str(ports[3]), "--ready-timeout", "300", "--jobs", redis_url,
    ]  # fmt: skip
    joined = [
        sys.executable, "-m", "facecraft.cli", "serve", "--gateway-only", "--host", "127.0.0.1",
        "--triton-url", f"127.0.0.1:{ports[1]}", "--gateway-port", str(ports[4]),
    ]  # fmt: skip
    processes = []
    try:
        processes.append(
            subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        )
        _, output = _read_until(processes[0], r"press Ctrl-C to stop", 420)
        assert "job worker started on the shared queue" in output
        # the setting from the environment, as a deployment would give it
        processes.append(
            subprocess.Popen(
                joined,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**env, "FACECRAFT_JOB_BACKEND": redis_url},
            )
        )
        _, output = _read_until(processes[1], r"press Ctrl-C to stop", 120)
        assert "gateway joined the shared job queue" in output and "job worker started" not in output
        base = f"http://127.0.0.1:{ports[4]}"
        submitted = httpx.post(
            f"{base}/api/v1/jobs",
            files={"file": ("a.jpg", astronaut_jpeg, "image/jpeg")},
            data={"width": "128", "height": "128", "enhance_face": "false"},
            timeout=60,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.monotonic() + 180
        while (body := httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json())["status"] not in (
            "completed",
            "failed",
        ):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["status"] == "completed", body
        for process in reversed(processes):
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=120)
            assert process.returncode == 0, rest
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)
