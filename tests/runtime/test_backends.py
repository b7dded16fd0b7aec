"""Backend directory assembly: Python backend + stub for this Python + Python-based onnxruntime."""

from __future__ import annotations

import os

import pytest

from facecraft.runtime.backends import (
    BackendAssemblyError,
    assemble_backend_directory,
    onnxruntime_backend_source,
    uses_python_onnxruntime_backend,
)
from facecraft.runtime.discovery import TritonInstall, find_tritonserver


@pytest.fixture(scope="module")
def wheel_install() -> TritonInstall:
    install = find_tritonserver({"PATH": ""})
    assert install.backend_lib("onnxruntime") is None
    return install


def test_assembles_python_backend_with_matching_stub(wheel_install, tmp_path):
    target = assemble_backend_directory(wheel_install, tmp_path / "backends")
    python_dir = target / "python"
    assert (python_dir / "libtriton_python.so").is_file()
    assert (python_dir / "triton_python_backend_utils.py").is_file()
    stub = python_dir / "triton_python_backend_stub"
    assert stub.read_bytes() == wheel_install.stub_for().read_bytes()
    assert os.access(stub, os.X_OK)


def test_provides_python_based_onnxruntime_backend(wheel_install, tmp_path):
    target = assemble_backend_directory(wheel_install, tmp_path / "backends")
    model_py = target / "onnxruntime" / "model.py"
    assert model_py.read_text() == onnxruntime_backend_source().read_text()
    assert "class TritonPythonModel" in model_py.read_text()
    assert not (target / "onnxruntime" / "libtriton_onnxruntime.so").exists()
    assert uses_python_onnxruntime_backend(target)


def test_reassembly_is_idempotent_and_repairs(wheel_install, tmp_path):
    target = assemble_backend_directory(wheel_install, tmp_path / "backends")
    (target / "onnxruntime" / "model.py").write_text("broken")
    assemble_backend_directory(wheel_install, target)
    assert (target / "onnxruntime" / "model.py").read_text() == onnxruntime_backend_source().read_text()


def _fake_install(root, *, stub_version="3.11", native_ort=False):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("")
    python_dir = root / "backends" / "python"
    python_dir.mkdir(parents=True)
    (python_dir / "libtriton_python.so").write_bytes(b"so")
    (python_dir / "triton_python_backend_utils.py").write_text("# utils")
    stubs = root / "python_backend_stubs" / stub_version
    stubs.mkdir(parents=True)
    (stubs / "triton_python_backend_stub").write_bytes(b"stub")
    if native_ort:
        ort_dir = root / "backends" / "onnxruntime"
        ort_dir.mkdir(parents=True)
        (ort_dir / "libtriton_onnxruntime.so").write_bytes(b"ort")
        (ort_dir / "libonnxruntime.so").write_bytes(b"lib")
    return TritonInstall(
        binary=root / "bin" / "tritonserver",
        root=root,
        python_backend_dir=python_dir,
        stubs_dir=root / "python_backend_stubs",
        libs_dir=None,
        source="test",
    )


def test_native_onnxruntime_backend_is_used_when_present(tmp_path, monkeypatch):
    import sys

    install = _fake_install(
        tmp_path / "triton", stub_version="{}.{}".format(*sys.version_info[:2]), native_ort=True
    )
    target = assemble_backend_directory(install, tmp_path / "backends")
    assert (target / "onnxruntime" / "libtriton_onnxruntime.so").read_bytes() == b"ort"
    assert (target / "onnxruntime" / "libonnxruntime.so").is_file()
    assert not (target / "onnxruntime" / "model.py").exists()
    assert not uses_python_onnxruntime_backend(target)


def test_missing_stub_for_this_python_is_a_clear_error(tmp_path):
    install = _fake_install(tmp_path / "triton", stub_version="2.7")
    with pytest.raises(BackendAssemblyError, match="no triton_python_backend_stub for Python"):
        assemble_backend_directory(install, tmp_path / "backends")
