"""Find a ``tritonserver`` binary and the Python backend that goes with it.

Search order: ``$FACECRAFT_TRITONSERVER`` (path to the binary), ``tritonserver`` on ``PATH``,
``/opt/tritonserver/bin`` (NGC container layout), then the ``nvidia-pytriton`` wheel
(``site-packages/pytriton/tritonserver/bin/tritonserver``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_TRITONSERVER = "FACECRAFT_TRITONSERVER"
NGC_ROOT = Path("/opt/tritonserver")


class TritonNotFoundError(RuntimeError):
    """No usable ``tritonserver`` was found; the message lists every place that was searched."""


@dataclass(frozen=True)
class TritonInstall:
    """Where a Triton installation keeps its parts.

    ``root`` holds ``bin/`` and ``backends/``; ``stubs_dir`` (wheel only) holds
    ``<major.minor>/triton_python_backend_stub``; ``libs_dir`` (wheel only) holds the shared
    libraries the wheel's binary links against (``nvidia_pytriton.libs``).
    """

    binary: Path
    root: Path
    python_backend_dir: Path | None
    stubs_dir: Path | None
    libs_dir: Path | None
    source: str

    def stub_for(self, version: tuple[int, int] | None = None) -> Path | None:
        """The ``triton_python_backend_stub`` built for ``version`` (default: this interpreter)."""
        major, minor = version or sys.version_info[:2]
        candidates = []
        if self.stubs_dir is not None:
            candidates.append(self.stubs_dir / f"{major}.{minor}" / "triton_python_backend_stub")
        if self.python_backend_dir is not None:
            candidates.append(self.python_backend_dir / "triton_python_backend_stub")
        return next((path for path in candidates if path.is_file()), None)

    def backend_lib(self, name: str) -> Path | None:
        """``backends/<name>/libtriton_<name>.so`` when this installation ships that native backend."""
        path = self.root / "backends" / name / f"libtriton_{name}.so"
        return path if path.is_file() else None


def _install_from_binary(binary: Path, source: str) -> TritonInstall:
    binary = binary.resolve()
    root = binary.parent.parent
    python_dir = root / "backends" / "python"
    stubs_dir = root / "python_backend_stubs"
    libs_dir = root.parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(
        binary=binary,
        root=root,
        python_backend_dir=python_dir if (python_dir / "libtriton_python.so").is_file() else None,
        stubs_dir=stubs_dir if stubs_dir.is_dir() else None,
        libs_dir=libs_dir if libs_dir.is_dir() else None,
        source=source,
    )


def wheel_binary() -> Path | None:
    """``tritonserver`` inside the installed ``nvidia-pytriton`` wheel, or None."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "tritonserver" / "bin" / "tritonserver"
        if candidate.is_file():
            return candidate
    return None


def find_tritonserver(env: dict[str, str] | None = None) -> TritonInstall:
    """Locate ``tritonserver``; raise :class:`TritonNotFoundError` naming every place searched."""
    env = os.environ if env is None else env
    searched: list[str] = []

    override = env.get(ENV_TRITONSERVER)
    if override:
        path = Path(override).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return _install_from_binary(path, f"${ENV_TRITONSERVER}")
        raise TritonNotFoundError(
            f"${ENV_TRITONSERVER}={override} is not an executable file; unset it to search the defaults"
        )
    searched.append(f"${ENV_TRITONSERVER} (unset)")

    on_path = shutil.which("tritonserver", path=env.get("PATH", ""))
    if on_path:
        return _install_from_binary(Path(on_path), "PATH")
    searched.append("tritonserver on PATH")

    ngc = NGC_ROOT / "bin" / "tritonserver"
    if ngc.is_file():
        return _install_from_binary(ngc, str(NGC_ROOT))
    searched.append(str(ngc))

    wheel = wheel_binary()
    if wheel is not None:
        return _install_from_binary(wheel, "nvidia-pytriton wheel")
    searched.append("the nvidia-pytriton wheel (pip install nvidia-pytriton, part of the `server` extra)")

    raise TritonNotFoundError("tritonserver not found; searched: " + "; ".join(searched))
