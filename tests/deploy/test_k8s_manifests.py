"""deploy/k8s: offline, schema-lite checks (no cluster, no kubeconform here).

Every object parses and has a known apiVersion/kind; selectors, named ports, probes, volumes and
autoscaler references resolve inside the manifests; images match the compose stack's; the custom
metric the Triton autoscaler uses is defined by the adapter rules over real Triton metrics.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.metric_names import promql_metric_names
from tests.deploy.tools import COMPOSE_FILE, PROMETHEUS_DIR, REPO_ROOT, python_backend_shm_at_start_mib

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
KNOWN_KINDS = {
    "v1": {"Namespace", "Service", "PersistentVolumeClaim", "ConfigMap"},
    "apps/v1": {"Deployment"},
    "autoscaling/v2": {"HorizontalPodAutoscaler"},
    "monitoring.coreos.com/v1": {"PodMonitor"},
}


def load_objects() -> list[dict]:
    objects = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return load_objects()


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(deployment: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(deployment).get("env", [])}


def port_names(deployment: dict) -> set[str]:
    return {port["name"] for port in container(deployment)["ports"]}


def matches(selector: dict[str, str], deployment: dict) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_object_has_a_known_kind_and_a_dns_name(objects):
    assert objects
    for obj in objects:
        assert obj["kind"] in KNOWN_KINDS.get(obj["apiVersion"], set()), (obj["apiVersion"], obj["kind"])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])


def test_deployments_select_their_own_pods_and_probe_named_ports(objects):
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"triton", "gateway", "redis", "worker"}
    for name, deployment in deployments.items():
        assert matches(deployment["spec"]["selector"]["matchLabels"], deployment), name
        spec = container(deployment)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in spec:
                action = spec[probe].get("httpGet") or spec[probe]["tcpSocket"]
                assert action["port"] in port_names(deployment), (name, probe)


def test_images_match_the_compose_stack(objects):
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    deployments = by_kind(objects, "Deployment")
    gateway_image = compose["x-gateway"]["image"]
    runtime_image = compose["x-triton"]["image"]
    assert container(deployments["gateway"])["image"] == gateway_image
    # The baked target of the same Dockerfile and version as compose's runtime image.
    assert container(deployments["triton"])["image"] == runtime_image.replace("triton-runtime:", "triton:")


def test_triton_pods_get_a_gpu_shared_memory_and_health_probes(objects):
    triton = by_kind(objects, "Deployment")["triton"]
    spec = container(triton)
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(triton)["FACECRAFT_DEVICE"] == "gpu"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    volumes = {volume["name"]: volume for volume in triton["spec"]["template"]["spec"]["volumes"]}
    shm = next(mount for mount in spec["volumeMounts"] if mount["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    # Half of it at most for the Python-backend regions allocated at start (the rest: growth).
    limit_mib = int(volumes[shm["name"]]["emptyDir"]["sizeLimit"].removesuffix("Gi")) * 1024
    assert 0 < python_backend_shm_at_start_mib() <= limit_mib // 2


def test_gateway_pods_are_unprivileged_and_share_results(objects):
    gateway = by_kind(objects, "Deployment")["gateway"]
    pod = gateway["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    spec = container(gateway)
    assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
    output_dir = env(gateway)["FACECRAFT_OUTPUT_DIR"]
    mount = next(mount for mount in spec["volumeMounts"] if mount["mountPath"] == output_dir)
    volume = next(volume for volume in pod["volumes"] if volume["name"] == mount["name"])
    claim = by_kind(objects, "PersistentVolumeClaim")[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gateway_reaches_triton_grpc_through_its_service(objects):
    host, port = env(by_kind(objects, "Deployment")["gateway"])["FACECRAFT_TRITON_URL"].split(":")
    service = by_kind(objects, "Service")[host]
    grpc = next(entry for entry in service["spec"]["ports"] if entry["port"] == int(port))
    assert grpc["targetPort"] == "grpc"


def test_services_and_pod_monitors_resolve_to_named_ports(objects):
    deployments = by_kind(objects, "Deployment").values()
    for service in by_kind(objects, "Service").values():
        (target,) = [d for d in deployments if matches(service["spec"]["selector"], d)]
        for entry in service["spec"]["ports"]:
            assert entry["targetPort"] in port_names(target), service["metadata"]["name"]
    for monitor in by_kind(objects, "PodMonitor").values():
        (target,) = [d for d in deployments if matches(monitor["spec"]["selector"]["matchLabels"], d)]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in port_names(target)
            assert endpoint["path"] == "/metrics"


def test_autoscalers_target_deployments_and_defined_metrics(objects):
    deployments = by_kind(objects, "Deployment")
    adapter = yaml.safe_load(
        by_kind(objects, "ConfigMap")["facecraft-prometheus-adapter-rules"]["data"]["config.yaml"]
    )
    custom_metrics = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    external_metrics = {rule["name"]["as"]: rule for rule in adapter["externalRules"]}
    assert set(hpas) == {"triton", "gateway", "worker"}
    for hpa in hpas.values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in custom_metrics
            if metric["type"] == "External":
                assert metric["external"]["metric"]["name"] in external_metrics
    (worker_metric,) = hpas["worker"]["spec"]["metrics"]
    assert worker_metric["type"] == "External", "workers scale on the shared queue's depth"


def test_adapter_queries_use_metrics_the_verified_rules_use():
    """The adapter reads the same Triton series as rules.yml (checked against a real scrape)."""
    adapter_text = (K8S_DIR / "prometheus-adapter-rules.yaml").read_text()
    adapter = yaml.safe_load(yaml.safe_load(adapter_text)["data"]["config.yaml"])
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    rules_metrics = set().union(
        *(promql_metric_names(rule["expr"]) for group in groups for rule in group["rules"])
    )
    for rule in adapter["rules"]:
        query = re.sub(r"<<[^>]*>>", "", rule["metricsQuery"]).replace("{,", "{")
        used = promql_metric_names(query) | promql_metric_names(rule["seriesQuery"])
        assert used and used <= rules_metrics, used - rules_metrics


def test_workers_and_gateways_share_one_redis_queue_and_the_results_volume(objects):
    """Gateways only enqueue; worker pods run the jobs: same Redis URL, same outputs claim, same
    image; the worker's queue-depth autoscaling metric is a gateway metric."""
    from facecraft.gateway.metrics import GatewayMetrics

    deployments = by_kind(objects, "Deployment")
    gateway, worker = deployments["gateway"], deployments["worker"]
    assert env(gateway)["FACECRAFT_JOB_BACKEND"] == env(worker)["FACECRAFT_JOB_BACKEND"]
    host, port = env(worker)["FACECRAFT_JOB_BACKEND"].removeprefix("redis://").split("/")[0].split(":")
    redis_service = by_kind(objects, "Service")[host]
    assert (
        next(entry for entry in redis_service["spec"]["ports"] if entry["port"] == int(port))["targetPort"]
        == "redis"
    )
    assert container(worker)["command"] == ["facecraft", "worker"]
    assert container(worker)["image"] == container(gateway)["image"]

    def claim(deployment):
        return next(
            volume["persistentVolumeClaim"]["claimName"]
            for volume in deployment["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in volume
        )

    assert claim(worker) == claim(gateway) == "facecraft-outputs"
    redis_args = container(deployments["redis"])["args"]
    assert redis_args[redis_args.index("--appendfsync") + 1] == "always", (
        "docs/deploy.md: no accepted job lost"
    )
    assert "metrics" in port_names(worker)
    assert env(worker)["FACECRAFT_WORKER_METRICS_PORT"] == str(
        next(p["containerPort"] for p in container(worker)["ports"] if p["name"] == "metrics")
    )
    adapter = yaml.safe_load(
        by_kind(objects, "ConfigMap")["facecraft-prometheus-adapter-rules"]["data"]["config.yaml"]
    )
    gateway_metrics = {metric.name for metric in GatewayMetrics().registry.collect()}
    for rule in adapter["externalRules"]:
        assert promql_metric_names(rule["seriesQuery"]) <= gateway_metrics
