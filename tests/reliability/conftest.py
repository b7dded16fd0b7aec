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
