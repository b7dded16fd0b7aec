"""Real processes for the reliability tests: a uvicorn gateway subprocess that can be killed and
restarted, /proc readings (open fds, RSS) and file-tree snapshots.

Everything binds to 127.0.0.1 on free ephemeral ports; every process started here is stopped by
the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from facecraft.runtime.http_probe import EXITED, OK, wait_for_http_ok
from facecraft.runtime.ports import free_port
from facecraft.runtime.serve import GATEWAY_STOP_TIMEOUT_S

LOG_ARCHIVE = Path(__file__).resolve().parents[2] / ".facecraft" / "reliability" / "logs"


# --------------------------------------------------------------------------- /proc readings


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (entries of /proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def python_stubs(triton_pid: int) -> dict[int, list[str]]:
    """``triton_python_backend_stub`` children of Triton: pid -> command line.

    The stub's command line names the model instance's shared-memory region, which contains the
    model name (e.g. ``.../compose/1/model.py ... compose_0_0 ...``), so a test can pick one model.
    """
    return {
        pid: args
        for pid in children(triton_pid)
        if (args := cmdline(pid)) and "triton_python_backend_stub" in args[0]
    }


PYTHON_MODELS = ("decode", "detect", "enhance_pre", "enhance_post", "segment_pre", "compose", "onnxruntime")


def stub_model(args: list[str]) -> str:
    """The model a stub serves, from its command line (the model.py path or the instance name)."""
    for arg in args[1:]:
        for part in reversed(arg.replace("\\", "/").split("/")):
            for model in ("codeformer", "u2net", *PYTHON_MODELS):
                if part == model or part.startswith(f"{model}_"):
                    return model
    return "?"


@dataclass
class ProcessReading:
    """fds and RSS of a set of processes at one moment."""

    fds: dict[str, int] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)


def read_processes(pids: dict[str, int]) -> ProcessReading:
    reading = ProcessReading()
    for label, pid in pids.items():
        reading.fds[label] = fd_count(pid)
        reading.rss[label] = rss_bytes(pid)
    return reading


# --------------------------------------------------------------------------- file trees


def tree_snapshot(root: Path) -> set[str]:
    """Every file and folder under ``root``, as paths relative to it."""
    root = Path(root)
    return {str(path.relative_to(root)) for path in root.rglob("*")}


# --------------------------------------------------------------------------- the gateway


class GatewayProcess:
    """``python -m facecraft.gateway`` as a real uvicorn subprocess on a free loopback port.

    ``root`` holds ``outputs/`` (FACECRAFT_OUTPUT_DIR), ``tmp/`` (TMPDIR of the process, so any
    temporary file it makes is visible to the test) and ``gateway.log``.
    """

    def __init__(self, root: Path, triton_grpc_url: str, model_repository: Path | None = None, **settings):
        self.root = Path(root)
        self.output_dir = self.root / "outputs"
        self.tmp_dir = self.root / "tmp"
        self.log_path = self.root / "gateway.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "FACECRAFT_HOST": "127.0.0.1",
                "FACECRAFT_PORT": str(self.port),
                "FACECRAFT_TRITON_URL": triton_grpc_url,
                "FACECRAFT_OUTPUT_DIR": str(self.output_dir),
                "FACECRAFT_READY_CACHE_S": "0",
                "FACECRAFT_LOG_LEVEL": "warning",
                "TMPDIR": str(self.tmp_dir),
            }
        )
        if model_repository is not None:
            self.env["FACECRAFT_MODEL_REPOSITORY"] = str(model_repository)
        for key, value in settings.items():
            self.env[f"FACECRAFT_{key.upper()}"] = str(value)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facecraft.gateway"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()
        health = wait_for_http_ok(f"{self.url}/health", self.process, timeout)
        if health == OK:
            return
        if health == EXITED:
            raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
        raise RuntimeError(f"gateway not healthy after {timeout}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run (what a crash or OOM kill does)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=GATEWAY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # Keep the log after pytest rotates its temporary folders (git-ignored .facecraft/).
        if self.log_path.is_file():
            LOG_ARCHIVE.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, LOG_ARCHIVE / f"gateway-{self.port}.log")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float) -> float:
        """Poll ``/ready`` until 200; returns the seconds it took. Raises on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if httpx.get(f"{self.url}/ready", timeout=30).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"gateway /ready not 200 within {timeout}s:\n{self.log_tail()}")
