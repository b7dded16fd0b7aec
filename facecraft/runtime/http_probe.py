"""Wait for a child process's HTTP endpoint to answer 200 (the gateway's ``/health``, Prometheus'
``/-/ready``), noticing when the process exits first."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import time
import urllib.request

OK = "ok"
EXITED = "exited"
TIMED_OUT = "timed out"


def wait_for_http_ok(
    url: str,
    process: subprocess.Popen | None,
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    request_timeout_s: float = 2.0,
) -> str:
    """Poll ``GET url`` every ``interval_s`` until it answers 200 (``OK``), ``process`` has exited
    (``EXITED``; its ``returncode`` is then set) or ``timeout_s`` has passed (``TIMED_OUT``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is None or process.poll() is not None:
            return EXITED
        with (
            contextlib.suppress(OSError, http.client.HTTPException),
            urllib.request.urlopen(url, timeout=request_timeout_s) as response,
        ):
            if response.status == 200:
                return OK
        time.sleep(interval_s)
    return TIMED_OUT
