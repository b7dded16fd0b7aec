"""Locating the Debian tools the deploy tests run (installed by ``make system-deps``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
PROMETHEUS_DIR = DOCKER_DIR / "prometheus"
DASHBOARD_PATH = DOCKER_DIR / "grafana" / "dashboards" / "facecraft.json"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def require_tool(name: str) -> str:
    """Path of a command-line tool; skips the test with the install hint when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"'{name}' not found: run `make system-deps` (Debian packages prometheus, docker-compose)"
        )
    return path
