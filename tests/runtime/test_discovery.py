"""Finding tritonserver: env var override, PATH, the nvidia-pytriton wheel, clear failure."""

from __future__ import annotations

import sys

import pytest

from facecraft.runtime import discovery
from facecraft.runtime.discovery import ENV_TRITONSERVER, TritonNotFoundError, find_tritonserver


def _fake_binary(root):
    binary = root / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def test_env_var_overrides_everything(tmp_path):
    binary = _fake_binary(tmp_path / "triton")
    install = find_tritonserver({ENV_TRITONSERVER: str(binary), "PATH": ""})
    assert install.binary == binary.resolve()
    assert install.source == f"${ENV_TRITONSERVER}"
    assert install.root == (tmp_path / "triton").resolve()


def test_env_var_pointing_nowhere_is_an_error(tmp_path):
    missing = tmp_path / "nope" / "tritonserver"
    with pytest.raises(TritonNotFoundError, match=str(missing)):
        find_tritonserver({ENV_TRITONSERVER: str(missing)})


def test_found_on_path(tmp_path):
    binary = _fake_binary(tmp_path / "onpath")
    install = find_tritonserver({"PATH": str(binary.parent)})
    assert install.source == "PATH" and install.binary == binary.resolve()


def test_wheel_install_has_python_backend_and_stub_for_this_python(monkeypatch, tmp_path):
    monkeypatch.setattr(discovery, "NGC_ROOT", tmp_path / "no-ngc")
    install = find_tritonserver({"PATH": ""})
    assert install.source == "nvidia-pytriton wheel"
    assert install.binary.name == "tritonserver" and install.binary.is_file()
    assert (install.python_backend_dir / "libtriton_python.so").is_file()
    stub = install.stub_for()
    assert stub is not None and stub.parent.name == "{}.{}".format(*sys.version_info[:2])
    assert install.libs_dir is not None and install.libs_dir.name == "nvidia_pytriton.libs"
    # the wheel has no native ONNX Runtime backend: the Python-based one is needed
    assert install.backend_lib("onnxruntime") is None


def test_not_found_lists_every_place_searched(monkeypatch, tmp_path):
    monkeypatch.setattr(discovery, "NGC_ROOT", tmp_path / "no-ngc")
    monkeypatch.setattr(discovery, "wheel_binary", lambda: None)
    with pytest.raises(TritonNotFoundError) as caught:
        find_tritonserver({"PATH": str(tmp_path)})
    message = str(caught.value)
    for place in (ENV_TRITONSERVER, "PATH", str(tmp_path / "no-ngc"), "nvidia-pytriton"):
        assert place in message
