"""Launch and supervise an embedded ``tritonserver`` process.

:class:`TritonServer` starts Triton over a model repository with the assembled backend directory
(Python stub + Python-based ``onnxruntime`` backend), waits until every model is READY, and stops
it cleanly (SIGTERM, wait, SIGKILL). All output goes to one log file whose tail is quoted in every
start-up error.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from facecraft.runtime.backends import assemble_backend_directory
from facecraft.runtime.discovery import TritonInstall, find_tritonserver
from facecraft.runtime.environment import server_environment
from facecraft.runtime.ports import (
    BindAddressError,
    PortConflictError,
    PortInUseError,
    check_ports_free,
    free_port,
    process_listens_on,
)

__all__ = [
    "TritonServer",
    "TritonStartError",
    "free_port",
    "live_group_members",
    "crash_lines",
    "python_backend_config",
    "remove_shm_regions",
    "tail_text",
]

DEFAULT_RUNTIME_DIR = Path(".facecraft")
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
LOG_TAIL_LINES = 60
# Python backend shared memory (docs/architecture.md, docs/reliability.md): every Python-backend
# model instance (our Python models and the Python-based onnxruntime backend) passes its tensors
# through its own /dev/shm region. Triton 2.51's defaults (1 MiB, grown by 1 MiB) are far below
# one decoded photo (a 2048² RGB working image is 12.6 MB, an upload up to 20 MB), so nearly every
# large request grew the region (truncate + remap in both processes). 16 MiB holds one working
# image; more is not free: a region's whole size is allocated in /dev/shm from the start (measured:
# 14 instances × 64 MiB took 0.9 GiB at once, most of compose's `shm_size: 1gb`).
PYTHON_SHM_DEFAULT_MB = 16
PYTHON_SHM_GROWTH_MB = 16
ENV_PYTHON_SHM_DEFAULT_MB = "FACECRAFT_PYTHON_SHM_DEFAULT_MB"
ENV_PYTHON_SHM_GROWTH_MB = "FACECRAFT_PYTHON_SHM_GROWTH_MB"
# Every server's regions carry a prefix of its own (``shm-region-prefix-name``; Triton appends a
# UUID per region), so that ``stop`` can remove what a killed server or stub left in /dev/shm:
# a SIGKILLed Triton never unlinks them, and each held 16 MiB of RAM until removed by hand
# (measured: one `bash .ci/run` left 28 regions, 450 MiB). The launcher's PID in the prefix names
# the owner of anything left behind when the launcher itself is killed.
SHM_REGION_PREFIX = "facecraft_triton_"
SHM_DIR = Path("/dev/shm")
PORT_RETRIES = 3
ERROR_LINE = re.compile(r"^E\d{4} ")
# Logged on every host without a GPU; not the reason anything failed.
HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized",)
# What a crashed Triton or Python stub leaves in the log: Triton's signal handler prints
# "Signal (N) received." and a stack of STACK_LINES lines; an uncaught C++ exception "terminate
# called after throwing …"; the stubs of a dead server "Non-graceful termination detected".
CRASH_MARKERS = (
    "Signal (",
    "terminate called",
    "lock_exception",
    "bad_alloc",
    "Segmentation fault",
    "Non-graceful termination",
    "is not healthy",
)
STACK_LINES = 30


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready in time; the message ends with the log tail."""


def _shm_megabytes(value: int | None, variable: str, default: int) -> int:
    """``value``, else ``$variable``, else ``default``: whole MiB, 0 = Triton's own default.
    Raises ``ValueError`` naming the setting for anything else."""
    source = f"${variable}"
    if value is None:
        text = os.environ.get(variable, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError as error:
            raise ValueError(
                f"{source} must be a whole number of MiB (0 = Triton's default), got {text!r}"
            ) from error
    else:
        source = variable.removeprefix("FACECRAFT_").lower()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{source} must be a whole number of MiB >= 0 (0 = Triton's default), got {value!r}")
    return value


def python_backend_config(default_mb: int, growth_mb: int) -> list[str]:
    """``--backend-config`` flags for the Python backend's shared memory: ``default_mb`` MiB per
    model instance at start (``shm-default-byte-size``), grown ``growth_mb`` MiB at a time
    (``shm-growth-byte-size``); a 0 leaves that one at Triton's default (1 MiB in 2.51)."""
    args = []
    if default_mb:
        args.append(f"--backend-config=python,shm-default-byte-size={default_mb * 1024 * 1024}")
    if growth_mb:
        args.append(f"--backend-config=python,shm-growth-byte-size={growth_mb * 1024 * 1024}")
    return args


def remove_shm_regions(prefix: str, directory: Path = SHM_DIR) -> list[str]:
    """Unlink the POSIX shared-memory regions named ``prefix*`` in ``directory`` (/dev/shm) and
    return their names; a region removed meanwhile is skipped. Only for the regions of a server
    whose every process has exited: a live process keeps its mapping, but could no longer reopen
    the region by name."""
    if not prefix:
        raise ValueError("an empty prefix would match every region")
    removed = []
    for path in sorted(directory.glob(f"{prefix}*")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed


def live_group_members(pgid: int) -> list[int]:
    """PIDs of the processes of group ``pgid`` that still run (zombies excluded: they hold no
    memory, ports or shared memory, and only their parent — init, for orphaned stubs — can reap
    them, on its own schedule)."""
    import psutil

    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved in the parent: the child between fork and exec should do as little as possible.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the launching process dies (Linux ``PR_SET_PDEATHSIG``)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def tail_text(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` from byte offset ``start`` ('' when unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def crash_lines(text: str, limit: int = 80) -> list[str]:
    """The lines of a Triton log that describe a crash (``CRASH_MARKERS``, and the stack Triton
    prints after ``Signal (N) received.``), at most ``limit``."""
    lines = text.splitlines()
    picked: list[str] = []
    index = 0
    while index < len(lines) and len(picked) < limit:
        line = lines[index]
        if any(marker in line for marker in CRASH_MARKERS):
            picked.append(line)
            if "Signal (" in line:
                picked.extend(lines[index + 1 : index + 1 + STACK_LINES])
                index += STACK_LINES
        index += 1
    return picked[:limit]


class TritonServer:
    """An embedded Triton server process.

    ``repo``: model repository. Ports: ``None`` → Triton's defaults (8000/8001/8002), ``0`` → a
    free port outside the ephemeral range (``facecraft.runtime.ports``) chosen at the first start
    and kept across restarts. ``models``: names to
    load (default: every model in the repository, ``--load-model=*``). ``runtime_dir`` holds
    ``backends/`` and ``logs/tritonserver.log`` unless ``backend_dir`` / ``log_path`` are given.
    ``python_shm_default_mb`` / ``python_shm_growth_mb``: the Python backend's shared-memory region
    per model instance and its growth step in MiB (default ``$FACECRAFT_PYTHON_SHM_DEFAULT_MB`` /
    ``$FACECRAFT_PYTHON_SHM_GROWTH_MB``, else 16 / 16; 0 = Triton's own default). Raises
    ``ValueError`` for a negative or non-integer size.
    """

    def __init__(
        self,
        repo: Path | str,
        *,
        runtime_dir: Path | str = DEFAULT_RUNTIME_DIR,
        backend_dir: Path | str | None = None,
        log_path: Path | str | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        models: Sequence[str] | None = None,
        log_verbose: int = 0,
        ready_timeout: float = 300.0,
        exit_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
        install: TritonInstall | None = None,
        env: dict[str, str] | None = None,
        python_shm_default_mb: int | None = None,
        python_shm_growth_mb: int | None = None,
    ):
        self.python_shm_default_mb = _shm_megabytes(
            python_shm_default_mb, ENV_PYTHON_SHM_DEFAULT_MB, PYTHON_SHM_DEFAULT_MB
        )
        self.python_shm_growth_mb = _shm_megabytes(
            python_shm_growth_mb, ENV_PYTHON_SHM_GROWTH_MB, PYTHON_SHM_GROWTH_MB
        )
        self.repo = Path(repo).resolve()
        runtime_dir = Path(runtime_dir).resolve()
        self.backend_dir = Path(backend_dir).resolve() if backend_dir else runtime_dir / "backends"
        self.log_path = Path(log_path).resolve() if log_path else runtime_dir / "logs" / "tritonserver.log"
        self.host = host
        self._requested_ports = {
            "http": DEFAULT_HTTP_PORT if http_port is None else http_port,
            "grpc": DEFAULT_GRPC_PORT if grpc_port is None else grpc_port,
            "metrics": DEFAULT_METRICS_PORT if metrics_port is None else metrics_port,
        }
        self.ports: dict[str, int] = {}
        self.models = list(models) if models is not None else None
        self.log_verbose = log_verbose
        self.ready_timeout = ready_timeout
        self.exit_timeout = exit_timeout
        self.extra_args = list(extra_args)
        self.install = install
        self._base_env = env
        self.shm_region_prefix = f"{SHM_REGION_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"
        self.process: subprocess.Popen | None = None
        self._log_offset = 0
        self._log_handle = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _port(self, kind: str) -> int:
        return self.ports.get(kind) or self._requested_ports[kind]

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (the form ``tritonclient.http`` takes)."""
        return f"{self._client_host}:{self._port('http')}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (the form ``tritonclient.grpc`` takes)."""
        return f"{self._client_host}:{self._port('grpc')}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self._client_host}:{self._port('metrics')}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- life cycle --------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The ``tritonserver`` command line for the current settings."""
        install = self.install or find_tritonserver()
        args = [
            str(install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self._port('http')}",
            f"--grpc-port={self._port('grpc')}",
            f"--metrics-port={self._port('metrics')}",
            "--model-control-mode=explicit",
            "--strict-readiness=true",
            "--exit-on-error=true",
            # same metrics as the NGC container (docker/triton-entrypoint.sh): dashboards use summaries
            "--allow-metrics=true",
            "--allow-cpu-metrics=true",
            "--metrics-config=summary_latencies=true",
            f"--exit-timeout-secs={int(self.exit_timeout)}",
            f"--log-verbose={int(self.log_verbose)}",
            *python_backend_config(self.python_shm_default_mb, self.python_shm_growth_mb),
            f"--backend-config=python,shm-region-prefix-name={self.shm_region_prefix}",
        ]
        args += (
            [f"--load-model={name}" for name in self.models]
            if self.models is not None
            else ["--load-model=*"]
        )
        return args + self.extra_args

    def _choose_ports(self) -> None:
        """Keep the requested ports, fill each 0 with a free port none of the others uses (a port
        requested twice is left to ``check_ports_free``: ``PortConflictError``)."""
        if self.ports:
            return
        used = {port for port in self._requested_ports.values() if port}
        for kind, requested in self._requested_ports.items():
            port = requested
            while not port or (not requested and port in used):
                port = free_port(self._client_host)
            used.add(port)
            self.ports[kind] = port

    def start(
        self,
        wait: bool = True,
        timeout: float | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> TritonServer:
        """Start Triton (no-op if running); with ``wait``, block until all models are READY."""
        if self.is_running():
            return self
        if self.process is not None:
            # Triton died (a crash or an outside SIGKILL): its Python stubs can outlive it in its
            # process group, holding memory and shared-memory regions. Reap them before starting anew.
            self.stop()
        if not self.repo.is_dir():
            raise TritonStartError(f"model repository {self.repo} does not exist")
        self.install = self.install or find_tritonserver()
        assemble_backend_directory(self.install, self.backend_dir)
        first_start = not self.ports
        for attempt in range(PORT_RETRIES + 1):
            self._choose_ports()
            auto_ports = {self.ports[kind] for kind, port in self._requested_ports.items() if port == 0}
            retry = first_start and attempt < PORT_RETRIES
            try:
                check_ports_free(self.host, {f"Triton {kind}": port for kind, port in self.ports.items()})
            except PortInUseError as error:
                if retry and error.port in auto_ports:
                    self.ports = {}
                    continue
                raise TritonStartError(f"cannot start Triton: {error}") from error
            except (BindAddressError, PortConflictError) as error:
                raise TritonStartError(f"cannot start Triton: {error}") from error
            try:
                return self._start_once(wait, timeout, on_wait)
            except TritonStartError as error:
                # An auto-chosen port can be taken between checking and binding: choose again.
                taken = re.search(r"Socket '[^']*:(\d+)' already in use", str(error))
                if not (retry and taken and int(taken.group(1)) in auto_ports):
                    raise
                self.ports = {}
        raise AssertionError("unreachable")

    def _start_once(
        self, wait: bool, timeout: float | None, on_wait: Callable[[float, str], None] | None
    ) -> TritonServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self._log_offset = handle.tell()
        command = self.command()
        handle.write(f"==== facecraft: starting {' '.join(command)}\n".encode())
        handle.flush()
        self._log_handle = handle
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=server_environment(self.install, self._base_env),
            cwd=str(self.repo),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if wait:
            try:
                self.wait_ready(self.ready_timeout if timeout is None else timeout, on_wait=on_wait)
            except BaseException:
                self.stop()
                raise
        return self

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines this server (current start) wrote to its log."""
        return tail_text(self.log_path, lines, self._log_offset)

    def log_errors(self, limit: int = 20) -> list[str]:
        """Error lines of the current start's log (``E...`` lines, models that failed to load)."""
        text = tail_text(self.log_path, lines=1_000_000, start=self._log_offset)
        errors = [
            line
            for line in text.splitlines()
            if ERROR_LINE.match(line) or "failed to load" in line or "UNAVAILABLE:" in line
        ]
        return [line for line in errors if not any(noise in line for noise in HARMLESS_ERRORS)][:limit]

    def crash_evidence(self, limit: int = 80) -> list[str]:
        """Crash lines (:func:`crash_lines`) of the current start's log — after a crash, the dead
        server's, until the next start. The log is appended to across restarts, never truncated."""
        return crash_lines(tail_text(self.log_path, lines=1_000_000, start=self._log_offset), limit)

    def _start_error(self, message: str) -> TritonStartError:
        errors = self.log_errors()
        summary = "\n--- errors in the log ---\n" + "\n".join(errors) if errors else ""
        return TritonStartError(
            f"{message}{summary}\n--- last lines of {self.log_path} ---\n{self.log_tail()}\n--- end of log ---"
        )

    def _get(self, path: str, method: str = "GET", timeout: float = 2.0) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://{self.http_url}{path}", method=method, data=b"{}" if method == "POST" else None
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def model_states(self) -> dict[str, str]:
        """``{model name: state}`` from Triton's repository index (e.g. ``READY``, ``UNAVAILABLE``)."""
        status, body = self._get("/v2/repository/index", method="POST")
        if status != 200:
            return {}
        return {entry["name"]: entry.get("state", "") for entry in json.loads(body or b"[]")}

    def not_ready_models(self) -> dict[str, str]:
        """Models that should be loaded but are not READY, with their state and reason."""
        status, body = self._get("/v2/repository/index", method="POST")
        if status != 200:
            return {"<repository index>": f"HTTP {status}"}
        entries = json.loads(body or b"[]")
        wanted = set(self.models) if self.models is not None else {entry["name"] for entry in entries}
        pending = {}
        for entry in entries:
            if entry["name"] in wanted and entry.get("state") != "READY":
                pending[entry["name"]] = (
                    f"{entry.get('state') or 'not loaded'} {entry.get('reason', '')}".strip()
                )
        for name in wanted - {entry["name"] for entry in entries}:
            pending[name] = "not in repository"
        return pending

    def is_ready(self) -> bool:
        """True when the server reports ready, every wanted model is READY and the answering
        ports are held by this server's process."""
        try:
            status, _ = self._get("/v2/health/ready")
            return status == 200 and not self.not_ready_models() and not self.ports_not_held()
        except (OSError, ValueError):
            return False

    def wait_ready(
        self,
        timeout: float | None = None,
        on_wait: Callable[[float, str], None] | None = None,
        report_every: float = 10.0,
    ) -> None:
        """Block until ready; raise :class:`TritonStartError` with the log tail on exit or timeout.

        ``on_wait(elapsed_seconds, what_is_pending)`` is called every ``report_every`` seconds
        while waiting (progress for long CLI start-ups).
        """
        timeout = self.ready_timeout if timeout is None else timeout
        started = time.monotonic()
        deadline = started + timeout
        next_report = started + report_every
        last_problem = "no answer on the HTTP port yet"
        while True:
            if self.process is None:
                raise self._start_error("Triton is not started")
            code = self.process.poll()
            if code is not None:
                raise self._start_error(f"tritonserver exited with code {code} during start-up")
            try:
                status, _ = self._get("/v2/health/ready")
                pending = self.not_ready_models() if status == 200 else {}
                foreign = self.ports_not_held() if status == 200 and not pending else []
                if status == 200 and not pending and not foreign:
                    return
                if foreign:
                    last_problem = (
                        f"a server answers on port(s) {', '.join(map(str, foreign))} but they are not "
                        f"held by tritonserver pid {self.process.pid} (another server?)"
                    )
                elif pending:
                    last_problem = "models not ready: " + ", ".join(
                        f"{k} ({v})" for k, v in sorted(pending.items())
                    )
                else:
                    last_problem = f"/v2/health/ready answered {status}"
            except (OSError, ValueError) as error:
                last_problem = f"HTTP {self.http_url}: {error}"
            now = time.monotonic()
            if now >= deadline:
                raise self._start_error(f"Triton not ready after {timeout:.0f} s: {last_problem}")
            if on_wait is not None and now >= next_report:
                on_wait(now - started, last_problem)
                next_report = now + report_every
            time.sleep(0.5)

    def ports_not_held(self) -> list[int]:
        """This server's ports on which the started ``tritonserver`` process does not listen
        (another process answers there, or the port is not bound yet); empty when not started."""
        if self.process is None:
            return []
        ports = [self._port(kind) for kind in ("http", "grpc", "metrics")]
        return [port for port in ports if not process_listens_on(self.process.pid, port)]

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default exit_timeout + 20 s), then SIGKILL; then SIGKILL
        whatever is left of its process group (Python stubs) and wait until none of it runs.
        Returns the exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            timeout = self.exit_timeout + 20 if timeout is None else timeout
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
            code = process.returncode
            # Stubs live in Triton's process group; kill any left behind by a hard kill, then
            # remove the regions a hard kill left in /dev/shm (a clean exit leaves none).
            if self._kill_group(process.pid):
                remove_shm_regions(self.shm_region_prefix)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return code

    @staticmethod
    def _kill_group(pgid: int, timeout: float = 10.0) -> bool:
        """SIGKILL process group ``pgid`` and wait until none of its members runs (the signal is
        delivered asynchronously; a restart must not overlap with the old stubs). True when none
        runs, False when some still did after ``timeout`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while live_group_members(pgid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """Crash Triton on purpose (SIGKILL, no clean-up): for reliability tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self, wait: bool = True, timeout: float | None = None) -> TritonServer:
        """Stop (if running) and start again on the same ports."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"TritonServer(repo={self.repo}, http={self.http_url}, grpc={self.grpc_url}, {state})"
