"""A Python-backend stub that stalls past Triton's 1-second health check, and the gateway's answer.

Triton 2.51's Python backend (r24.10) gives up on a request when the stub's health thread misses a
1-second check (``Stub process '<instance>' is not healthy``), yet the stub still runs it and answers
later; the instance is then one answer behind its stub. Freezing the stub (SIGSTOP) for longer than
a second reproduces it every time on a private server with one tiny Python model (``echo``):

- without recovery, the next request of that instance takes the stale answer or aborts Triton
  (``boost::interprocess::lock_exception``) — the crash the suite and a user trial met under load;
- with the gateway's recovery (``TritonGateway.recover_stub``: reload the model, a new stub), the
  stalled request is a 503 ``triton_unavailable`` and every later request gets its own answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.triton import TritonGateway
from tests.reliability.processes import python_stubs

pytestmark = pytest.mark.integration

ECHO_CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "VALUE", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "ECHO", data_type: TYPE_INT32, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

ECHO_MODEL = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("ECHO", pb_utils.get_input_tensor_by_name(request, "VALUE").as_numpy())]
                )
                for request in requests
            ]
    """
)


@pytest.fixture
def echo_triton(tmp_path: Path):
    """A private embedded Triton serving only ``echo`` (it may be left crashed: never shared)."""
    from facecraft.runtime.server import TritonServer

    repo = tmp_path / "repo"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (repo / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    server = TritonServer(
        repo,
        runtime_dir=tmp_path / "runtime",
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        ready_timeout=300,
        exit_timeout=3,
    )
    server.start()
    # As in a deployment (facecraft serve links the committed version folders): a load of the
    # loaded model must find its files unchanged, and Triton then skips it. Here the first stub
    # wrote 1/__pycache__ after the start-up load, which Triton would count as a change: one
    # load now records the folder as it is.
    _http(server, "POST", "/v2/repository/models/echo/load")
    try:
        yield server
    finally:
        for pid in python_stubs(server.pid) if server.is_running() else ():
            os.kill(pid, signal.SIGCONT)
        server.stop()


def _http(server, method: str, path: str) -> None:
    import urllib.request

    with urllib.request.urlopen(
        urllib.request.Request(f"http://{server.http_url}{path}", method=method), timeout=120
    ):
        pass


def echo_stub(server) -> int:
    """The pid of echo's Python stub, once a replaced one has exited (a reload starts the new
    stub before the old one ends)."""
    deadline = time.monotonic() + 60
    while len(stubs := list(python_stubs(server.pid))) != 1:
        assert time.monotonic() < deadline, f"stubs: {stubs}"
        time.sleep(0.05)
    return stubs[0]


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel shows it stopped (state T)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"stub {pid} did not stop"
        time.sleep(0.01)


async def echo(gateway: TritonGateway, value: int) -> int:
    tensor = grpcclient.InferInput("VALUE", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    result = await gateway.infer("echo", [tensor])
    return int(result.as_numpy("ECHO")[0])


async def stall_one_request(gateway: TritonGateway, server) -> int:
    """Answer 1 normally, then send 2 while the stub is frozen; returns the frozen stub's pid once
    the gateway has the 503 and the stub runs again (it then answers the abandoned request)."""
    assert await echo(gateway, 1) == 1
    stub = echo_stub(server)
    freeze(stub)
    try:
        with pytest.raises(GatewayError) as stalled:
            await echo(gateway, 2)
    finally:
        os.kill(stub, signal.SIGCONT)
    assert (stalled.value.status_code, stalled.value.error) == (503, "triton_unavailable")
    assert "is not healthy" in stalled.value.message
    return stub


def test_a_stub_stalled_past_the_health_check_is_replaced_and_no_request_gets_a_stale_answer(echo_triton):
    reloads: list[tuple[str, str]] = []

    async def scenario() -> None:
        gateway = TritonGateway(
            echo_triton.grpc_url, 60.0, recover_stubs=True, on_recovery=lambda *a: reloads.append(a)
        )
        try:
            stub = await stall_one_request(gateway, echo_triton)
            assert await gateway.wait_recoveries(timeout_s=240)
            assert reloads == [("echo", "reloaded")]
            assert [await echo(gateway, value) for value in (3, 4, 5, 6)] == [3, 4, 5, 6]
            assert echo_stub(echo_triton) != stub  # a new stub serves the model
        finally:
            await gateway.close()

    asyncio.run(scenario())
    assert echo_triton.is_running(), echo_triton.log_tail()


def test_without_recovery_the_instance_answers_out_of_step_or_triton_aborts(echo_triton):
    """The defect the recovery exists for (Triton 2.51): after the abandoned request the instance
    gives a stale answer, an error, no answer (timeout) or aborts Triton. If this starts failing, a
    newer Triton fixed it and the recovery can be reconsidered (docs/reliability.md)."""

    async def scenario() -> list:
        gateway = TritonGateway(echo_triton.grpc_url, 20.0, recover_stubs=False)
        try:
            await stall_one_request(gateway, echo_triton)
            answers = []
            for value in range(3, 9):  # until the first wrong answer
                try:
                    answers.append(await echo(gateway, value))
                except GatewayError as error:
                    answers.append(error.error)
                if answers[-1] != value:
                    break
            return answers
        finally:
            await gateway.close()

    answers = asyncio.run(scenario())
    crashed = not echo_triton.is_running() or "lock_exception" in echo_triton.log_tail(200)
    assert crashed or answers != list(range(3, 9)), (answers, echo_triton.log_tail(40))
