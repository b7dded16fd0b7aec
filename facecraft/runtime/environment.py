"""Environment for the ``tritonserver`` process.

Two gotchas on these machines: the wheel's binary and the Python stub need
``site-packages/nvidia_pytriton.libs`` *and* the running interpreter's ``LIBDIR`` on
``LD_LIBRARY_PATH`` (else the stub can pick a system libpython that does not match the venv's
stdlib), and the venv's ``bin`` must come first on ``PATH`` so the stub's interpreter resolves the
venv's ``site-packages`` (where ``facecraft`` is installed, editable).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from facecraft.runtime.discovery import TritonInstall


def _prepend(entries: list[str], existing: str | None) -> str:
    parts: list[str] = []
    for entry in [*entries, *(existing or "").split(os.pathsep)]:
        if entry and entry not in parts:
            parts.append(entry)
    return os.pathsep.join(parts)


def interpreter_bin_dir() -> Path:
    """The ``bin`` folder of the running interpreter's environment (the venv when one is active)."""
    return Path(sys.prefix) / "bin"


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) fixed up to run ``install``'s server."""
    env = dict(os.environ if base is None else base)
    library_dirs: list[str] = []
    if install.libs_dir is not None:
        library_dirs.append(str(install.libs_dir))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        library_dirs.append(str(libdir))
    env["LD_LIBRARY_PATH"] = _prepend(library_dirs, env.get("LD_LIBRARY_PATH"))
    env["PATH"] = _prepend([str(interpreter_bin_dir())], env.get("PATH"))
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    # A PYTHONHOME inherited from elsewhere would point the stub at the wrong stdlib.
    env.pop("PYTHONHOME", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
