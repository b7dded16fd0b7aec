"""wait_for_http_ok: 200 → OK, the process gone → EXITED, nothing answering → TIMED_OUT."""

from __future__ import annotations

import subprocess
import sys

from facecraft.runtime.http_probe import EXITED, OK, TIMED_OUT, wait_for_http_ok
from facecraft.runtime.server import free_port
from tests.runtime.http_servers import idle_child, static_http_server


def test_ok_once_the_endpoint_answers_200(tmp_path):
    with static_http_server(tmp_path, ready=False) as (process, port):
        assert wait_for_http_ok(f"http://127.0.0.1:{port}/", process, 30) == OK


def test_exited_when_the_process_dies_first():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert wait_for_http_ok(f"http://127.0.0.1:{free_port()}/", process, 30) == EXITED
    assert process.returncode == 3


def test_timed_out_when_nothing_answers():
    with idle_child() as process:
        assert wait_for_http_ok(f"http://127.0.0.1:{free_port()}/", process, 0.6, interval_s=0.1) == TIMED_OUT


def test_another_server_answering_on_the_port_is_not_ok(tmp_path):
    """A 200 from a server that is not ``process`` never counts: the probe waits, and reports
    EXITED when the child (which could not bind the port) exits."""
    with static_http_server(tmp_path) as (_other, port), idle_child() as child:
        assert wait_for_http_ok(f"http://127.0.0.1:{port}/", child, 1.0, interval_s=0.1) == TIMED_OUT
        child.kill()
        child.wait()
        assert wait_for_http_ok(f"http://127.0.0.1:{port}/", child, 5) == EXITED
