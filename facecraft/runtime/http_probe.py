"""Wait for a child process's HTTP endpoint to answer 200 (the gateway's ``/health``, Prometheus'
``/-/ready``), noticing when the process exits first, and proving that the answer comes from that
process (not from another server that already held the port)."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import time
import urllib.parse
import urllib.request

from facecraft.runtime.ports import process_listens_on

OK = "ok"
EXITED = "exited"
TIMED_OUT = "timed out"


def url_port(url: str) -> int:
    """The TCP port of an ``http://`` / ``https://`` URL (80 / 443 when none is written)."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def wait_for_http_ok(
    url: str,
    process: subprocess.Popen | None,
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    request_timeout_s: float = 2.0,
) -> str:
    """Poll ``GET url`` every ``interval_s`` until it answers 200 **and** ``process`` (or one of its
    children) is the one listening on the URL's port (``OK``), ``process`` has exited (``EXITED``;
    its ``returncode`` is then set) or ``timeout_s`` has passed (``TIMED_OUT``).

    A 200 from another process holding the port does not count: the child that cannot bind it
    exits, and the caller sees ``EXITED`` instead of announcing a server that is not its own."""
    port = url_port(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is None or process.poll() is not None:
            return EXITED
        with (
            contextlib.suppress(OSError, http.client.HTTPException),
            urllib.request.urlopen(url, timeout=request_timeout_s) as response,
        ):
            if response.status == 200 and process_listens_on(process.pid, port):
                return OK
        time.sleep(interval_s)
    return TIMED_OUT
