"""Stale temporaries of killed writes are removed; live writers' temporaries are kept."""

from __future__ import annotations

import os
import subprocess
import sys

from facecraft.export.temporaries import remove_stale, temporary_path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_removes_only_temporaries_of_dead_processes(tmp_path):
    final = tmp_path / "model.onnx"
    dead = tmp_path / f".model.onnx.{_dead_pid()}.tmp"
    alive = tmp_path / f".model.onnx.{os.getppid()}.tmp"  # the test runner's parent is alive
    mine = temporary_path(final, "tmp")
    other_suffix = tmp_path / f".model.onnx.{_dead_pid()}.part"
    unrelated = tmp_path / ".other.onnx.1.tmp"
    for path in (dead, alive, mine, other_suffix, unrelated):
        path.write_bytes(b"partial")

    assert remove_stale(final, "tmp") == [dead]
    assert not dead.exists()
    assert alive.exists() and mine.exists() and other_suffix.exists() and unrelated.exists()
    assert mine.name == f".model.onnx.{os.getpid()}.tmp"


def test_missing_folder_is_not_an_error(tmp_path):
    assert remove_stale(tmp_path / "absent" / "model.onnx", "tmp") == []


def test_export_clears_a_killed_exports_temporary(tmp_path):
    from facecraft.export.exporter import export_model

    version_dir = tmp_path / "u2net" / "1"
    version_dir.mkdir(parents=True)
    stale = version_dir / f".model.onnx.{_dead_pid()}.tmp"
    stale.write_bytes(b"x" * 1024)
    export_model("u2net", preset="tiny", weights="random", repo=tmp_path, progress=False)
    assert not stale.exists()
    assert (version_dir / "model.onnx").is_file()
    assert not list(version_dir.glob(".model.onnx.*"))
