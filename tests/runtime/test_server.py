"""The embedded Triton launcher against a real tritonserver over small models built here.

Covers the Python-based ``onnxruntime`` backend (real batching, CPU provider), the server
environment seen by a Python stub, readiness errors quoting the log, SIGTERM shutdown and restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from facecraft.runtime.server import TritonServer, TritonStartError
from tests.runtime.small_models import build_small_repository

pytestmark = pytest.mark.integration


def _server(repo, runtime_dir, **kwargs) -> TritonServer:
    kwargs.setdefault("ready_timeout", 300)
    return TritonServer(
        repo, runtime_dir=runtime_dir, http_port=0, grpc_port=0, metrics_port=0, exit_timeout=2, **kwargs
    )


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    repo = build_small_repository(tmp_path_factory.mktemp("small") / "repo")
    server = _server(repo, tmp_path_factory.mktemp("small-runtime"))
    server.start()
    yield server
    server.stop()


def _add_one(url: str, batch: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        tensor = httpclient.InferInput("x", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        return client.infer("add_one", [tensor]).as_numpy("y")
    finally:
        client.close()


def _stats(url: str, model: str) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()


def test_onnxruntime_python_backend_serves_and_batches(small_server):
    before = _stats(small_server.http_url, "add_one")
    inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda x: _add_one(small_server.http_url, x), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x + 1)
    after = _stats(small_server.http_url, "add_one")
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 8
    # the dynamic batcher merged concurrent requests and the backend ran them as one ONNX batch
    assert executions < inferences


def test_request_with_its_own_batch_of_rows(small_server):
    batch = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(_add_one(small_server.http_url, batch), batch + 1)


def test_log_names_cpu_provider_and_unknown_provenance(small_server):
    log = small_server.log_path.read_text()
    assert "onnxruntime backend: add_one v1:" in log
    assert "on CPUExecutionProvider (instance kind CPU" in log
    assert "weights provenance unknown" in log


def test_python_stub_runs_in_this_environment(small_server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(small_server.http_url)
    try:
        dummy = httpclient.InferInput("DUMMY", [1], "INT32")
        dummy.set_data_from_numpy(np.zeros(1, dtype=np.int32))
        facts = json.loads(client.infer("env_probe", [dummy]).as_numpy("FACTS")[0])
    finally:
        client.close()
    assert facts["pipeline_import"] == "ok"
    assert facts["version"] == list(os.sys.version_info[:2])
    assert facts["prefix"] == os.sys.prefix


def test_metrics_url_serves_prometheus_text(small_server):
    import urllib.request

    with urllib.request.urlopen(small_server.metrics_url, timeout=10) as response:
        body = response.read().decode()
    assert 'nv_inference_request_success{model="add_one"' in body
    assert "nv_inference_request_summary_us" in body  # summary latencies, as in the NGC container


MIB = 1024 * 1024


def test_command_sizes_the_python_backend_shared_memory(tmp_path, monkeypatch):
    """16 / 16 MiB by default (Triton 2.51's 1 MiB / 1 MiB made almost every photo grow the region);
    the environment or the arguments change it, 0 leaves Triton's default, garbage is an error."""
    from facecraft.runtime.server import ENV_PYTHON_SHM_DEFAULT_MB, ENV_PYTHON_SHM_GROWTH_MB

    monkeypatch.delenv(ENV_PYTHON_SHM_DEFAULT_MB, raising=False)
    monkeypatch.delenv(ENV_PYTHON_SHM_GROWTH_MB, raising=False)

    def shm_flags(**kwargs) -> list[str]:
        command = TritonServer(tmp_path, runtime_dir=tmp_path, **kwargs).command()
        return [
            arg
            for arg in command
            if arg.startswith(("--backend-config=python,shm-default", "--backend-config=python,shm-growth"))
        ]

    assert shm_flags() == [
        f"--backend-config=python,shm-default-byte-size={16 * MIB}",
        f"--backend-config=python,shm-growth-byte-size={16 * MIB}",
    ]
    assert shm_flags(python_shm_default_mb=256, python_shm_growth_mb=0) == [
        f"--backend-config=python,shm-default-byte-size={256 * MIB}"
    ]
    monkeypatch.setenv(ENV_PYTHON_SHM_DEFAULT_MB, "0")
    monkeypatch.setenv(ENV_PYTHON_SHM_GROWTH_MB, "32")
    assert shm_flags() == [f"--backend-config=python,shm-growth-byte-size={32 * MIB}"]
    monkeypatch.setenv(ENV_PYTHON_SHM_GROWTH_MB, "lots")
    with pytest.raises(ValueError, match=ENV_PYTHON_SHM_GROWTH_MB):
        shm_flags()
    with pytest.raises(ValueError, match="python_shm_default_mb"):
        shm_flags(python_shm_default_mb=-1, python_shm_growth_mb=1)


def test_python_stubs_run_with_the_configured_shared_memory(small_server):
    """The real server hands every Python-backend stub the sizes (its argv: model, region name,
    default byte size, growth byte size, …; python_backend r24.10 stub_launcher.cc)."""
    import psutil

    stubs = [
        child.cmdline()
        for child in psutil.Process(small_server.pid).children()
        if child.name().startswith("triton_python")
    ]
    assert stubs, "the small repository has Python-backend models"
    for argv in stubs:
        assert argv[3:5] == [str(16 * MIB), str(16 * MIB)], argv


def test_a_crash_is_kept_in_the_log_and_quoted_by_the_restart_warning(small_server):
    """A server that took a signal: its crash lines (Triton's ``Signal (11) received.`` and stack)
    stay in the log across the restart and are quoted in the session fixture's warning."""
    from tests.fixtures.triton import restart_if_unhealthy

    os.kill(small_server.pid, signal.SIGSEGV)
    small_server.process.wait(60)
    evidence = small_server.crash_evidence()
    assert any("Signal (11) received" in line for line in evidence), small_server.log_tail()
    with pytest.warns(UserWarning, match=r"dead \(exit code -?\d+\) before this test(.|\n)*Signal \(11\)"):
        restart_if_unhealthy(small_server, "this test")
    assert small_server.is_ready()
    log = small_server.log_path.read_text()
    crash_at = log.index("Signal (11) received")
    assert log.rindex("==== facecraft: starting") > crash_at, "the restart appends, the crash stays"
    assert small_server.crash_evidence() == [], "the new start's section has no crash"


def test_untrained_weights_are_announced(tmp_path):
    repo = build_small_repository(tmp_path / "repo")
    (repo / "add_one" / "1" / "export.json").write_text(
        json.dumps({"trained": False, "weights": "random", "seed": 0})
    )
    server = _server(repo, tmp_path / "runtime", models=["add_one"])
    with server:
        np.testing.assert_array_equal(
            _add_one(server.http_url, np.zeros((1, 4), np.float32)), np.ones((1, 4))
        )
    assert "add_one: UNTRAINED weights (seeded random" in server.log_path.read_text()


FAILING_MODEL = textwrap.dedent(
    """
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError("deliberately broken model for the launcher test")

        def execute(self, requests):
            return []
    """
)

SLOW_MODEL = textwrap.dedent(
    """
    import time

    class TritonPythonModel:
        def initialize(self, args):
            time.sleep(60)

        def execute(self, requests):
            return []
    """
)

PY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN", data_type: TYPE_INT32, dims: [ 1 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_INT32, dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def _python_model(repo, name, source):
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(source)
    (repo / name / "config.pbtxt").write_text(PY_CONFIG.format(name=name))


def test_model_that_fails_to_load_reports_the_log_tail(tmp_path):
    repo = tmp_path / "repo"
    _python_model(repo, "broken", FAILING_MODEL)
    server = _server(repo, tmp_path / "runtime")
    with pytest.raises(TritonStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with code" in message
    assert "--- errors in the log ---" in message and "failed to load 'broken'" in message
    assert "--- last lines of" in message
    assert "deliberately broken model for the launcher test" in message
    assert not server.is_running()


def test_readiness_timeout_reports_pending_models_and_log_tail(tmp_path):
    repo = tmp_path / "repo"
    _python_model(repo, "slow", SLOW_MODEL)
    server = _server(repo, tmp_path / "runtime", ready_timeout=4)
    with pytest.raises(TritonStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "not ready after 4 s" in message
    assert "--- last lines of" in message and "tritonserver" in message
    assert not server.is_running()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs. Zombies do not count: an orphaned stub killed
    by ``stop()`` is reaped by init on init's own schedule (seen: 1.5 s on these machines), and a
    zombie holds no memory, port or shared memory. ``os.killpg(pgid, 0)`` counts zombies, which
    made this check race init's reaping."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_sigterm_shutdown_is_clean_and_restart_keeps_ports(tmp_path):
    repo = build_small_repository(tmp_path / "repo")
    server = _server(repo, tmp_path / "runtime")
    server.start()
    first_pid, urls = server.pid, (server.http_url, server.grpc_url, server.metrics_url)
    assert server.stop() == 0  # SIGTERM, graceful exit
    assert not server.is_running() and not _group_alive(first_pid)  # stubs gone too
    assert "Signal (15) received." in server.log_path.read_text()

    server.start()
    try:
        assert server.pid != first_pid
        assert (server.http_url, server.grpc_url, server.metrics_url) == urls
        np.testing.assert_array_equal(
            _add_one(server.http_url, np.zeros((1, 4), np.float32)), np.ones((1, 4))
        )
        # a crash (SIGKILL) followed by start() also recovers ...
        crashed_pid = server.pid
        # ... and reaps the Python stubs the crashed server left in its process group. A frozen
        # stub stands for a busy one that does not notice its parent died (seen under fault
        # injection): without the reaping it would outlive the restart.
        stubs = _children(crashed_pid)
        assert stubs, "the small repository should have one Python stub"
        for stub in stubs:
            os.kill(stub, signal.SIGSTOP)
        regions = _shm_regions(server)
        assert len(regions) == 2, "one region per Python-backend instance (add_one, env_probe)"
        server.kill()
        assert not server.is_running() and all(_alive(stub) for stub in stubs)
        assert _shm_regions(server) == regions, "a SIGKILLed Triton leaves its regions behind"
        server.start()
        assert server.pid != crashed_pid and server.is_ready()
        assert not any(_alive(stub) for stub in stubs)
        assert not _group_alive(crashed_pid)
        # ... and removes the regions the crash left (only the new server's own remain)
        assert not regions & _shm_regions(server) and len(_shm_regions(server)) == 2
    finally:
        server.stop()
    assert _shm_regions(server) == set()


def _shm_regions(server: TritonServer) -> set[str]:
    """Names of the /dev/shm regions carrying ``server``'s own prefix."""
    return {path.name for path in Path("/dev/shm").glob(f"{server.shm_region_prefix}*")}


def test_remove_shm_regions_removes_only_the_prefix(tmp_path):
    from facecraft.runtime.server import remove_shm_regions

    for name in ("facecraft_triton_1_ab_x", "facecraft_triton_1_ab_y", "facecraft_triton_2_cd_x", "other"):
        (tmp_path / name).write_bytes(b"")
    assert remove_shm_regions("facecraft_triton_1_ab_", tmp_path) == [
        "facecraft_triton_1_ab_x",
        "facecraft_triton_1_ab_y",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["facecraft_triton_2_cd_x", "other"]
    with pytest.raises(ValueError, match="every region"):
        remove_shm_regions("", tmp_path)


def test_every_server_has_its_own_region_prefix(tmp_path):
    first, second = (TritonServer(tmp_path, runtime_dir=tmp_path) for _ in range(2))
    assert first.shm_region_prefix != second.shm_region_prefix
    assert first.shm_region_prefix.startswith(f"facecraft_triton_{os.getpid()}_")
    assert f"--backend-config=python,shm-region-prefix-name={first.shm_region_prefix}" in first.command()


def test_sigint_to_the_process_also_stops_it(tmp_path):
    repo = build_small_repository(tmp_path / "repo")
    server = _server(repo, tmp_path / "runtime", models=["add_one"])
    server.start()
    try:
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(30) == 0
    finally:
        server.stop()


@pytest.mark.parametrize("taken_when", ["at the check", "between check and bind"])
def test_auto_port_taken_before_bind_is_chosen_again(tmp_path, monkeypatch, taken_when):
    import socket

    from facecraft.runtime import server as server_module

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real_free_port = server_module.free_port
    handed_out = []

    def first_a_taken_port(host="127.0.0.1"):
        port = taken if not handed_out else real_free_port(host)
        handed_out.append(port)
        return port

    monkeypatch.setattr(server_module, "free_port", first_a_taken_port)
    if taken_when == "between check and bind":
        # the port passes the check and is taken before Triton binds it: Triton's own error
        monkeypatch.setattr(server_module, "check_ports_free", lambda *_args, **_kwargs: None)
    repo = build_small_repository(tmp_path / "repo")
    server = _server(repo, tmp_path / "runtime", models=["add_one"])
    try:
        server.start()
        assert taken in handed_out and taken not in server.ports.values()
        assert ("already in use" in server.log_path.read_text()) == (taken_when == "between check and bind")
        assert server.is_ready()
    finally:
        server.stop()
        blocker.close()


def test_fixed_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        repo = build_small_repository(tmp_path / "repo")
        server = TritonServer(
            repo, runtime_dir=tmp_path / "runtime", http_port=port, grpc_port=0, metrics_port=0
        )
        with pytest.raises(TritonStartError) as caught:
            server.start()
        assert f"port {port} (Triton http) on 127.0.0.1 is already in use (held by pid {os.getpid()}" in str(
            caught.value
        )
        assert not server.is_running()


def test_restart_onto_a_port_taken_meanwhile_is_a_clear_error_then_recovers(tmp_path):
    """Ports are kept across restarts (clients know them): one taken while Triton was down is a
    clear error naming it, never a server half up on other ports, and start() works once it is free."""
    import socket

    repo = build_small_repository(tmp_path / "repo")
    server = _server(repo, tmp_path / "runtime", models=["add_one"])
    server.start()
    try:
        grpc_port = server.ports["grpc"]
        server.stop()
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", grpc_port))
            blocker.listen()
            with pytest.raises(TritonStartError, match=rf"port {grpc_port} \(Triton grpc\).*already in use"):
                server.start()
            assert not server.is_running()
        server.start()
        assert server.ports["grpc"] == grpc_port and server.is_ready()
    finally:
        server.stop()


def test_ready_needs_the_ports_held_by_the_started_process(tmp_path):
    """is_ready() is False while another process answers on the ports (proved from the sockets)."""
    repo = build_small_repository(tmp_path / "repo")
    server = _server(repo, tmp_path / "runtime", models=["add_one"])
    server.start()
    try:
        assert server.is_ready() and server.ports_not_held() == []
        impostor = TritonServer(repo, runtime_dir=tmp_path / "impostor", http_port=server.ports["http"])
        impostor.ports = dict(server.ports)
        impostor.process = subprocess.Popen(["sleep", "30"])  # a child that holds none of them
        try:
            assert not impostor.is_ready()
            assert sorted(impostor.ports_not_held()) == sorted(server.ports.values())
        finally:
            impostor.process.kill()
            impostor.process.wait()
    finally:
        server.stop()


RAGGED_CONFIG = """\
name: "add_one_ragged"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ], allow_ragged_batch: true } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500000 }
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""


def test_ragged_requests_batched_together_are_run_one_by_one(tmp_path):
    """Different-length requests in one batch cannot be concatenated: each runs alone, all succeed."""
    import tritonclient.http as httpclient

    from tests.runtime.small_models import write_add_one_onnx

    repo = tmp_path / "repo"
    write_add_one_onnx(repo / "add_one_ragged" / "1" / "model.onnx", width=None)
    (repo / "add_one_ragged" / "config.pbtxt").write_text(RAGGED_CONFIG)

    def call(length: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            tensor = httpclient.InferInput("x", [1, length], "FP32")
            tensor.set_data_from_numpy(np.full((1, length), length, np.float32))
            return client.infer("add_one_ragged", [tensor]).as_numpy("y")
        finally:
            client.close()

    with _server(repo, tmp_path / "runtime") as server:
        with ThreadPoolExecutor(max_workers=4) as pool:
            outputs = list(pool.map(call, (3, 5, 7, 9)))
        stats = _stats(server.http_url, "add_one_ragged")
    for length, output in zip((3, 5, 7, 9), outputs, strict=True):
        np.testing.assert_array_equal(output, np.full((1, length), length + 1, np.float32))
    assert stats["inference_count"] == 4 and stats["execution_count"] < 4


LAUNCHER_SCRIPT = """
import sys, time
from facecraft.runtime.server import TritonServer
server = TritonServer(sys.argv[1], runtime_dir=sys.argv[2], http_port=0, grpc_port=0, metrics_port=0,
                      models=["add_one"], ready_timeout=300)
server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


def test_triton_dies_with_a_killed_launcher(tmp_path):
    """A launcher killed with SIGKILL (no clean-up) must not leave an orphaned Triton behind."""
    import sys
    import time

    repo = build_small_repository(tmp_path / "repo")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_SCRIPT, str(repo), str(tmp_path / "runtime")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        triton_pid = int(launcher.stdout.readline())
        assert _group_alive(triton_pid)
        launcher.kill()
        launcher.wait(30)
        deadline = time.monotonic() + 60
        while _group_alive(triton_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_alive(triton_pid)
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_one_port_for_two_roles_is_an_error_not_a_silent_move(tmp_path):
    """An explicit port given twice used to be replaced by a random one for the second role, so
    clients of the port they asked for reached nothing; now nothing starts."""
    from facecraft.runtime.ports import free_port

    port = free_port()
    repo = build_small_repository(tmp_path / "repo")
    server = TritonServer(
        repo, runtime_dir=tmp_path / "runtime", http_port=port, grpc_port=port, metrics_port=0
    )
    with pytest.raises(TritonStartError, match=f"port {port} is given for both Triton http and Triton grpc"):
        server.start()
    assert not server.is_running() and server.process is None
