"""Fixtures for the export tests: tiny ONNX exports shared by a module, a loopback HTTP server."""

from __future__ import annotations

import http.server
import threading
import warnings
from pathlib import Path

import pytest

from facecraft.export.catalog import SWAP_AND_ENHANCE_MODELS
from facecraft.export.exporter import ExportResult, UntrainedWeightsWarning, export_model


def export_tiny(name: str, repo: Path, seed: int = 0) -> ExportResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return export_model(name, preset="tiny", weights="random", seed=seed, repo=repo, progress=False)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A model repository with tiny random-weight exports (seed 0) of codeformer, u2net and the
    face-swap / frame-enhancer models (which bring their committed config.pbtxt)."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("codeformer", "u2net", *SWAP_AND_ENHANCE_MODELS):
        export_tiny(name, repo)
    return repo


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def file_server(tmp_path):
    """Serve ``tmp_path/www`` on a free 127.0.0.1 port; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
