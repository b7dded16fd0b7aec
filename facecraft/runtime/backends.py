"""Assemble the ``--backend-directory`` for the embedded server.

Layout written under ``target``::

    python/libtriton_python.so            the Python backend (from the Triton installation)
    python/triton_python_backend_utils.py
    python/triton_python_backend_stub     the stub built for the running Python version
    onnxruntime/model.py                  Python-based ONNX Runtime backend, when the
                                          installation has no native libtriton_onnxruntime.so

Triton loads a *Python-based backend* for ``backend: "onnxruntime"`` when
``<backend-dir>/onnxruntime/`` has ``model.py`` but no ``libtriton_onnxruntime.so``; it runs that
file through the Python backend, so one ``config.pbtxt`` works here and in the NGC container.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from facecraft.runtime.discovery import TritonInstall

ONNXRUNTIME_BACKEND = "onnxruntime"


class BackendAssemblyError(RuntimeError):
    """The backend directory cannot be built from this Triton installation."""


def onnxruntime_backend_source() -> Path:
    """Path of the packaged Python-based ONNX Runtime backend (``onnxruntime_backend/model.py``)."""
    return Path(str(resources.files("facecraft.runtime").joinpath("onnxruntime_backend", "model.py")))


def _copy_if_changed(source: Path, destination: Path) -> None:
    if destination.exists():
        same = destination.stat().st_size == source.stat().st_size and (
            destination.read_bytes() == source.read_bytes()
        )
        if same:
            return
    temporary = destination.with_name(destination.name + ".tmp")
    shutil.copy2(source, temporary)
    temporary.replace(destination)


def assemble_backend_directory(install: TritonInstall, target: Path) -> Path:
    """Create or refresh ``target`` as a Triton backend directory for ``install``; return it."""
    if install.python_backend_dir is None:
        raise BackendAssemblyError(
            f"{install.binary} has no Python backend (expected {install.root}/backends/python/libtriton_python.so)"
        )
    stub = install.stub_for()
    if stub is None:
        version = "{}.{}".format(*sys.version_info[:2])
        raise BackendAssemblyError(
            f"no triton_python_backend_stub for Python {version} in {install.stubs_dir or install.python_backend_dir}; "
            "use a Python version the nvidia-pytriton wheel ships a stub for"
        )
    target = Path(target)
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _copy_if_changed(install.python_backend_dir / name, python_dir / name)
    _copy_if_changed(stub, python_dir / "triton_python_backend_stub")
    (python_dir / "triton_python_backend_stub").chmod(0o755)

    native_ort = install.backend_lib(ONNXRUNTIME_BACKEND)
    ort_dir = target / ONNXRUNTIME_BACKEND
    if native_ort is not None:
        ort_dir.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(native_ort, ort_dir / native_ort.name)
        for sibling in native_ort.parent.iterdir():
            if sibling.is_file() and sibling != native_ort:
                _copy_if_changed(sibling, ort_dir / sibling.name)
    else:
        ort_dir.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(onnxruntime_backend_source(), ort_dir / "model.py")
    return target


def uses_python_onnxruntime_backend(backend_dir: Path) -> bool:
    """True when ``backend_dir`` serves ``onnxruntime`` with the Python-based backend."""
    ort_dir = Path(backend_dir) / ONNXRUNTIME_BACKEND
    return (ort_dir / "model.py").is_file() and not (ort_dir / "libtriton_onnxruntime.so").is_file()
