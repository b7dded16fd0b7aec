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


def python_backend_shm_at_start_mib() -> int:
    """/dev/shm (MiB) the committed repository's Python-backend model instances take at start:
    instances of every ``backend: "python"`` or ``"onnxruntime"`` model (the Python-based backend
    here; an upper bound for the NGC image, whose ONNX Runtime backend is native) × the region each
    gets at start (``PYTHON_SHM_DEFAULT_MB``, allocated whole; docs/reliability.md)."""
    from facecraft.runtime.model_config import load_config
    from facecraft.runtime.server import PYTHON_SHM_DEFAULT_MB

    instances = 0
    for path in sorted((REPO_ROOT / "model_repository").glob("*/config.pbtxt")):
        config = load_config(path)
        if config.backend in ("python", "onnxruntime"):
            instances += sum(group.count or 1 for group in config.instance_group) or 1
    return instances * PYTHON_SHM_DEFAULT_MB
