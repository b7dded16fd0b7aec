"""Environment composed for the tritonserver process."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from facecraft.runtime.discovery import TritonInstall
from facecraft.runtime.environment import server_environment


def _install(libs_dir: Path | None) -> TritonInstall:
    return TritonInstall(
        binary=Path("/x/bin/tritonserver"),
        root=Path("/x"),
        python_backend_dir=None,
        stubs_dir=None,
        libs_dir=libs_dir,
        source="test",
    )


def test_library_path_has_wheel_libs_and_interpreter_libdir():
    env = server_environment(_install(Path("/wheel/nvidia_pytriton.libs")), {"LD_LIBRARY_PATH": "/keep/me"})
    entries = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert entries[0] == "/wheel/nvidia_pytriton.libs"
    assert str(sysconfig.get_config_var("LIBDIR")) in entries
    assert entries[-1] == "/keep/me"


def test_interpreter_bin_is_first_on_path():
    env = server_environment(_install(None), {"PATH": "/usr/bin:/bin"})
    entries = env["PATH"].split(os.pathsep)
    assert entries[0] == str(Path(sys.prefix) / "bin")
    assert entries[1:] == ["/usr/bin", "/bin"]


def test_pythonhome_dropped_and_base_not_mutated():
    base = {"PATH": "/bin", "PYTHONHOME": "/elsewhere"}
    env = server_environment(_install(None), base)
    assert "PYTHONHOME" not in env
    assert base == {"PATH": "/bin", "PYTHONHOME": "/elsewhere"}


def test_no_duplicate_entries():
    bin_dir = str(Path(sys.prefix) / "bin")
    env = server_environment(_install(None), {"PATH": f"{bin_dir}:/bin"})
    assert env["PATH"].split(os.pathsep).count(bin_dir) == 1
