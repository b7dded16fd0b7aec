"""Throw-away local HTTP servers and idle children for the probe, port and serve tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facecraft.runtime.ports import free_port


@contextmanager
def static_http_server(directory: Path, *, ready: bool = True) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python -m http.server`` on 127.0.0.1 and a free port, serving ``directory`` (a file
    ``health`` there answers ``/health`` with 200); yields ``(process, port)``, killed on exit.
    With ``ready``, waits until it answers (facecraft.runtime.http_probe)."""
    from facecraft.runtime.http_probe import OK, wait_for_http_ok

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if ready:
            assert wait_for_http_ok(f"http://127.0.0.1:{port}/", process, 30) == OK
        yield process, port
    finally:
        process.kill()
        process.wait()


@contextmanager
def idle_child(seconds: float = 30) -> Iterator[subprocess.Popen]:
    """A child process that only sleeps (it listens on nothing); killed on exit."""
    process = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()
