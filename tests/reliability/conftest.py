"""Options and fixtures of the reliability suite.

``--load-seconds`` sets how long the load test runs (default: a short run that fits ``make test``;
``make load-test`` passes 120).
"""

from __future__ import annotations

import pytest

DEFAULT_LOAD_SECONDS = 15.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--load-seconds",
        type=float,
        default=None,
        help=f"duration of the reliability load test in seconds (default {DEFAULT_LOAD_SECONDS:g})",
    )


@pytest.fixture(scope="session")
def load_seconds(request: pytest.FixtureRequest) -> float:
    """Duration of the load test; the option may be unknown when this conftest loads late."""
    value = request.config.getoption("--load-seconds", default=None)
    return float(value) if value else DEFAULT_LOAD_SECONDS


@pytest.fixture(scope="session")
def reliability_gateway(triton_server, tmp_path_factory: pytest.TempPathFactory):
    """A real uvicorn gateway subprocess against the session Triton (shared by the bad-input,
    schemathesis and load tests; the fault tests start their own so they can kill it)."""
    from tests.reliability.processes import GatewayProcess

    gateway = GatewayProcess(
        tmp_path_factory.mktemp("reliability-gateway"), triton_server.grpc_url, triton_server.repo
    )
    gateway.start()
    yield gateway
    gateway.stop()
