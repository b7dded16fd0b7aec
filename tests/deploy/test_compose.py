"""docker-compose.yml, validated by Debian's ``docker-compose config`` (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.deploy.tools import COMPOSE_FILE, REPO_ROOT, python_backend_shm_at_start_mib, require_tool

PINNED_TAG = re.compile(r"^[\w./-]+:(?!latest$)[\w.-]*\d[\w.-]*$")


def compose_config(*profiles: str) -> dict:
    """The resolved compose model for the given profiles (validated by docker-compose itself)."""
    binary = require_tool("docker-compose")
    args = [binary, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "FACECRAFT_"))}
    result = subprocess.run([*args, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    # docker-compose 1.29's `config` validates every service but does not drop inactive ones;
    # `up` starts the services with no profile or an active one, which is what we keep here.
    config["services"] = {
        name: service
        for name, service in config["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }
    return config


def volumes(service: dict) -> list[dict]:
    """A service's volumes as dicts (docker-compose 1.29 prints the short "source:target:mode" form)."""
    parsed = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            parsed.append(volume)
            continue
        source, target, *mode = volume.split(":")
        parsed.append(
            {
                "type": "bind" if source.startswith("/") else "volume",
                "source": source,
                "target": target,
                "read_only": mode == ["ro"],
            }
        )
    return parsed


@pytest.fixture(scope="module")
def cpu_stack() -> dict:
    return compose_config("cpu")


@pytest.fixture(scope="module")
def gpu_stack() -> dict:
    return compose_config("gpu")


def test_no_profile_starts_only_monitoring():
    assert set(compose_config()["services"]) == {"prometheus", "grafana"}


def test_cpu_profile_services_and_ports(cpu_stack):
    services = cpu_stack["services"]
    assert set(services) == {"triton", "gateway", "prometheus", "grafana"}
    published = {int(port["published"]) for service in services.values() for port in service.get("ports", [])}
    assert published == {8000, 8001, 8002, 8080, 9090, 3000}
    assert services["triton"]["environment"]["FACECRAFT_DEVICE"] == "cpu"
    assert "deploy" not in services["triton"], "the CPU Triton must not reserve GPUs"


def test_gpu_profile_reserves_an_nvidia_gpu(gpu_stack):
    services = gpu_stack["services"]
    assert set(services) == {"triton-gpu", "gateway-gpu", "prometheus", "grafana"}
    triton = services["triton-gpu"]
    assert triton["environment"]["FACECRAFT_DEVICE"] == "gpu"
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # Same network names as the CPU stack, so the gateway and Prometheus configs are shared.
    assert "triton" in triton["networks"]["default"]["aliases"]
    assert "gateway" in services["gateway-gpu"]["networks"]["default"]["aliases"]
    assert services["gateway-gpu"]["depends_on"] == {"triton-gpu": {"condition": "service_healthy"}}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_triton_service_runtime_settings(profile):
    services = compose_config(profile)["services"]
    triton = services["triton" if profile == "cpu" else "triton-gpu"]
    assert triton["build"]["dockerfile"] == "docker/triton.Dockerfile"
    # The Python backend exchanges tensors through /dev/shm: Docker's 64 MB default is too small.
    assert triton["shm_size"] in ("1gb", 1 << 30, "1073741824")
    assert any(volume["target"] == "/models" and volume.get("read_only") for volume in volumes(triton))
    assert "v2/health/ready" in " ".join(triton["healthcheck"]["test"])


def test_shm_size_leaves_room_beyond_the_python_regions_at_start():
    """Every Python-backend instance allocates its whole start region in /dev/shm; they must take
    at most half of the container's shm_size, the rest is for the regions' growth under load."""
    triton = compose_config("cpu")["services"]["triton"]
    shm_mib = {"1gb": 1024, 1 << 30: 1024, "1073741824": 1024}[triton["shm_size"]]
    assert 0 < python_backend_shm_at_start_mib() <= shm_mib // 2


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_gateway_waits_for_healthy_triton_and_keeps_outputs(profile):
    services = compose_config(profile)["services"]
    name, triton = ("gateway", "triton") if profile == "cpu" else ("gateway-gpu", "triton-gpu")
    gateway = services[name]
    assert gateway["depends_on"] == {triton: {"condition": "service_healthy"}}
    assert gateway["environment"]["FACECRAFT_TRITON_URL"] == "triton:8001"
    output_dir = gateway["environment"]["FACECRAFT_OUTPUT_DIR"]
    assert any(volume["target"] == output_dir and volume["type"] == "volume" for volume in volumes(gateway))


def test_prometheus_and_grafana_mount_the_checked_in_configs(cpu_stack):
    services = cpu_stack["services"]
    prometheus_sources = {volume["source"] for volume in volumes(services["prometheus"])}
    assert str(REPO_ROOT / "docker/prometheus/prometheus.yml") in prometheus_sources
    assert str(REPO_ROOT / "docker/prometheus/rules.yml") in prometheus_sources
    grafana_targets = {volume["target"] for volume in volumes(services["grafana"])}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= grafana_targets


def test_export_profile_writes_the_host_repository_with_a_weights_cache():
    services = compose_config("export")["services"]
    assert set(services) == {"export", "prometheus", "grafana"}
    export = services["export"]
    assert export["build"]["target"] == "exporter"
    assert export["environment"]["FACECRAFT_CACHE_DIR"] == "/cache"
    mounts = {volume["target"]: volume for volume in volumes(export)}
    assert mounts["/src/model_repository"]["source"] == str(REPO_ROOT / "model_repository")
    assert not mounts["/src/model_repository"]["read_only"]
    assert mounts["/cache"]["type"] == "volume"


@pytest.mark.parametrize("profile", ["cpu", "gpu", "export"])
def test_every_image_tag_is_pinned(profile):
    for name, service in compose_config(profile)["services"].items():
        assert PINNED_TAG.match(service["image"]), f"{name}: image {service['image']!r} is not pinned"


def test_raw_file_has_no_latest_tags():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    images = [service["image"] for service in raw["services"].values() if "image" in service]
    assert images and not any(image.endswith(":latest") or ":" not in image for image in images)


def test_jobs_profile_adds_a_persistent_redis_and_workers_on_the_shared_outputs():
    services = compose_config("cpu", "jobs")["services"]
    assert {"redis", "worker"} <= set(services)
    redis_command = services["redis"]["command"]
    redis_command = redis_command.split() if isinstance(redis_command, str) else redis_command
    assert redis_command[redis_command.index("--appendfsync") + 1] == "always"
    worker = services["worker"]
    assert worker["environment"]["FACECRAFT_JOB_BACKEND"] == "redis://redis:6379/0"
    assert worker["image"] == services["gateway"]["image"]
    shared = {volume["target"] for volume in volumes(worker)} & {
        volume["target"] for volume in volumes(services["gateway"])
    }
    assert worker["environment"]["FACECRAFT_OUTPUT_DIR"] in shared
    # without the variable the gateway keeps its own queue
    assert services["gateway"]["environment"]["FACECRAFT_JOB_BACKEND"] == "local"
