"""docker/*.Dockerfile, docker/requirements-triton.txt and the Triton container entrypoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facecraft.runtime.model_config import ModelInstanceGroup, load_config
from tests.deploy.tools import DOCKER_DIR, REPO_ROOT

TRITON_DOCKERFILE = DOCKER_DIR / "triton.Dockerfile"
GATEWAY_DOCKERFILE = DOCKER_DIR / "gateway.Dockerfile"
ENTRYPOINT = DOCKER_DIR / "triton-entrypoint.sh"
# NGC 24.10 ships Triton 2.51, the version of the nvidia-pytriton wheel's embedded server.
NGC_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# Provided by the NGC image itself: its own tritonserver and native ONNX Runtime backend.
NOT_NEEDED_IN_NGC_IMAGE = {"nvidia-pytriton", "onnxruntime"}


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def base_images(path: Path) -> list[str]:
    """FROM images with ARG defaults substituted (stage references excluded)."""
    lines = dockerfile_lines(path)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), flags=re.M))
    stages, images = set(), []
    for line in lines:
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, flags=re.I)
        if not match:
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
        if image not in stages:
            images.append(image)
        if match.group(2):
            stages.add(match.group(2))
    return images


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("dockerfile", [TRITON_DOCKERFILE, GATEWAY_DOCKERFILE], ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile):
    images = base_images(dockerfile)
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{image} is not pinned"


def test_triton_image_is_ngc_24_10_with_exporter_runtime_and_baked_stages():
    assert NGC_TRITON_IMAGE in base_images(TRITON_DOCKERFILE)
    stages = re.findall(
        r"^FROM\s+\S+\s+AS\s+(\S+)", "\n".join(dockerfile_lines(TRITON_DOCKERFILE)), flags=re.M | re.I
    )
    assert stages == ["exporter", "export", "runtime", "baked"]
    text = "\n".join(dockerfile_lines(TRITON_DOCKERFILE))
    assert "facecraft export all" in text
    assert "COPY --from=export /src/model_repository /models" in text
    assert "pip install -r requirements-triton.txt" in text
    assert "torch==2.13.0" in text and "download.pytorch.org/whl/cpu" in text


def test_triton_requirements_match_pyproject_server_extra():
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    expected = {
        requirement
        for requirement in [*project["dependencies"], *project["optional-dependencies"]["server"]]
        if requirement_name(requirement) not in NOT_NEEDED_IN_NGC_IMAGE
    }
    lines = (DOCKER_DIR / "requirements-triton.txt").read_text().splitlines()
    listed = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert listed == expected


def test_gateway_image_runs_unprivileged_with_a_health_check():
    lines = dockerfile_lines(GATEWAY_DOCKERFILE)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and not users[-1].startswith(("root", "0")), "the gateway must not run as root"
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "/health" in healthcheck
    assert lines[-1] == 'CMD ["python", "-m", "facecraft.gateway"]'
    assert any('pip install ".[gateway]"' in line for line in lines)


# --- the Triton container entrypoint, run here with a stand-in tritonserver -----------------

FAKE_TRITONSERVER = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_ARGS_FILE"
"""


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    """A copy of the committed model repository with placeholder model.onnx files."""
    from tests.fixtures.triton import copy_model_repository

    repo = copy_model_repository(tmp_path / "models")
    onnx_configs = [config for config in repo.glob("*/config.pbtxt") if '"onnxruntime"' in config.read_text()]
    if not onnx_configs:
        pytest.skip("model_repository/ has no ONNX Runtime models yet")
    for config in onnx_configs:
        (config.parent / "1").mkdir(exist_ok=True)
        (config.parent / "1" / "model.onnx").write_bytes(b"placeholder")
    return repo


def run_entrypoint(
    tmp_path: Path, repo: Path, device: str, *extra: str, plan: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = tmp_path / "tritonserver"
    fake.write_text(FAKE_TRITONSERVER)
    fake.chmod(0o755)
    args_file = tmp_path / "tritonserver.args"
    env = {
        **os.environ,
        "FACECRAFT_MODEL_REPOSITORY": str(repo),
        "FACECRAFT_WORK_REPOSITORY": str(tmp_path / "work" / "model_repository"),
        "FACECRAFT_DEVICE": device,
        **({"FACECRAFT_INSTANCES": "2"} if plan is None else plan),
        "FACECRAFT_TRITONSERVER": str(fake),
        "FACECRAFT_CLI": str(Path(sys.executable).parent / "facecraft"),
        "FAKE_ARGS_FILE": str(args_file),
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *extra], env=env, capture_output=True, text=True, timeout=120
    )
    args = args_file.read_text().splitlines() if args_file.exists() else []
    return result, args


def instance_kind(config: Path) -> str:
    (group,) = load_config(config).instance_group
    return ModelInstanceGroup.Kind.Name(group.kind)


@pytest.mark.parametrize(("device", "onnx_kind"), [("cpu", "KIND_CPU"), ("gpu", "KIND_GPU")])
def test_entrypoint_configures_a_runtime_copy_and_starts_triton(tmp_path, model_repo, device, onnx_kind):
    before = {path: path.read_text() for path in model_repo.glob("*/config.pbtxt")}
    result, args = run_entrypoint(tmp_path, model_repo, device, "--log-verbose=1")
    assert result.returncode == 0, result.stderr

    work = tmp_path / "work" / "model_repository"
    assert f"--model-repository={work}" in args
    for flag in (
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--metrics-port=8002",
        "--metrics-config=summary_latencies=true",
        f"--allow-gpu-metrics={'true' if device == 'gpu' else 'false'}",
    ):
        assert flag in args
    assert args[-1] == "--log-verbose=1", "extra arguments go to tritonserver"
    # ONNX models get the device's instance kind in the runtime copy; the source is untouched.
    assert instance_kind(work / "u2net" / "config.pbtxt") == onnx_kind
    assert [group.count for group in load_config(work / "u2net" / "config.pbtxt").instance_group] == [2]
    assert (work / "u2net" / "1").resolve() == (model_repo / "u2net" / "1").resolve()
    assert {path: path.read_text() for path in model_repo.glob("*/config.pbtxt")} == before


def test_entrypoint_applies_the_instance_plan_variables(tmp_path, model_repo):
    result, _ = run_entrypoint(
        tmp_path, model_repo, "cpu", plan={"FACECRAFT_INSTANCES": "3", "FACECRAFT_ONNX_THREADS": "2"}
    )
    assert result.returncode == 0, result.stderr
    u2net = load_config(tmp_path / "work" / "model_repository" / "u2net" / "config.pbtxt")
    assert [group.count for group in u2net.instance_group] == [3]
    assert u2net.parameters["intra_op_thread_count"].string_value == "2"
    assert u2net.max_batch_size == 1


def test_entrypoint_without_plan_variables_uses_the_automatic_plan(tmp_path, model_repo):
    from facecraft.runtime.instance_plan import plan_instances

    result, _ = run_entrypoint(tmp_path, model_repo, "cpu", plan={})
    assert result.returncode == 0, result.stderr
    assert "automatic instance plan" in result.stdout
    expected = plan_instances("cpu")
    u2net = load_config(tmp_path / "work" / "model_repository" / "u2net" / "config.pbtxt")
    assert [group.count for group in u2net.instance_group] == [expected.onnx_instances]
    assert u2net.parameters["intra_op_thread_count"].string_value == str(expected.onnx_threads)


def test_entrypoint_refuses_a_repository_without_exported_onnx(tmp_path, model_repo):
    (model_repo / "u2net" / "1" / "model.onnx").unlink()
    result, args = run_entrypoint(tmp_path, model_repo, "cpu")
    assert result.returncode == 2
    assert "model.onnx missing for: u2net" in result.stderr
    assert args == [], "tritonserver must not start"


def test_entrypoint_rejects_an_unknown_device(tmp_path, model_repo):
    result, args = run_entrypoint(tmp_path, model_repo, "tpu")
    assert result.returncode == 2
    assert "FACECRAFT_DEVICE must be cpu or gpu" in result.stderr
    assert args == []


def test_entrypoint_flags_exist_in_the_real_tritonserver():
    """Every flag the entrypoint passes is one Triton 2.51 (the wheel's binary) knows."""
    from facecraft.runtime.discovery import TritonNotFoundError, find_tritonserver
    from facecraft.runtime.environment import server_environment

    try:
        install = find_tritonserver()
    except TritonNotFoundError as error:
        pytest.skip(str(error))
    result = subprocess.run(
        [str(install.binary), "--help"],
        env=server_environment(install),
        capture_output=True,
        text=True,
        timeout=60,
    )
    known = set(re.findall(r"(--[a-z][a-z0-9-]+)", result.stdout + result.stderr))
    used = set(re.findall(r"^\s+(--[a-z][a-z0-9-]+)=", ENTRYPOINT.read_text(), flags=re.M))
    assert used and used <= known, f"unknown to tritonserver: {sorted(used - known)}"


def test_entrypoint_sizes_the_python_backend_shared_memory_like_the_embedded_server(tmp_path, model_repo):
    """The NGC entrypoint passes the same shm-default/growth sizes as TritonServer (16 / 16 MiB)."""
    from facecraft.runtime.server import PYTHON_SHM_DEFAULT_MB, PYTHON_SHM_GROWTH_MB, python_backend_config

    result, args = run_entrypoint(tmp_path, model_repo, "cpu", "--log-verbose=1")
    assert result.returncode == 0, result.stderr
    expected = python_backend_config(PYTHON_SHM_DEFAULT_MB, PYTHON_SHM_GROWTH_MB)
    assert len(expected) == 2 and all(flag in args for flag in expected)
    assert args[-1] == "--log-verbose=1"


@pytest.mark.parametrize(
    ("default_mb", "growth_mb", "expected"),
    [
        ("128", "0", ["--backend-config=python,shm-default-byte-size=134217728"]),
        ("0", "0", []),
    ],
)
def test_entrypoint_python_shm_variables(tmp_path, model_repo, default_mb, growth_mb, expected):
    plan = {"FACECRAFT_PYTHON_SHM_DEFAULT_MB": default_mb, "FACECRAFT_PYTHON_SHM_GROWTH_MB": growth_mb}
    result, args = run_entrypoint(tmp_path, model_repo, "cpu", plan=plan)
    assert result.returncode == 0, result.stderr
    assert [arg for arg in args if arg.startswith("--backend-config=python,shm-")] == expected


def test_entrypoint_rejects_a_non_integer_shm_size(tmp_path, model_repo):
    result, args = run_entrypoint(
        tmp_path, model_repo, "cpu", plan={"FACECRAFT_PYTHON_SHM_DEFAULT_MB": "1.5"}
    )
    assert result.returncode == 2
    assert "FACECRAFT_PYTHON_SHM_DEFAULT_MB" in result.stderr
    assert args == []
