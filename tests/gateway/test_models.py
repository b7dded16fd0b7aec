"""Model management and system routes (``facecraft.gateway.models`` / ``routes_models`` / ``system``).

Pure parts without a server; the routes against the REAL session Triton (explicit model-control
mode, tiny untrained exports). Tests that unload or add a model restore the shared server in a
``finally`` (model loaded again, an added model unloaded and its folder removed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facecraft.gateway.app import create_app
from facecraft.gateway.models import provenance, size_on_disk
from facecraft.gateway.system import cpu_info, disk_info, gpu_info, instance_plan
from facecraft.gateway.triton import ensemble_steps
from tests.fixtures.gateway import make_gateway_settings
from tests.fixtures.triton import MODEL_REPOSITORY
from tests.runtime.http_servers import static_http_server

OPERATION_TIMEOUT_S = 300.0


def test_provenance_labels_each_weights_source():
    assert (
        provenance({"weights_source": "official", "trained": True, "weights_sha256": "ab"})["provenance"]
        == "official"
    )
    local = provenance({"weights_source": "path", "trained": True})
    assert (local["provenance"], local["weights"]) == ("local", "trained")
    random = provenance({"weights_source": "random", "trained": False, "seed": 0})
    assert (random["provenance"], random["weights"], random["weights_sha256"]) == (
        "random",
        "untrained",
        None,
    )
    assert provenance(None) == {"provenance": "unknown", "weights": "unknown"}


def test_size_on_disk_follows_symlinked_version_folders(tmp_path):
    (tmp_path / "source" / "1").mkdir(parents=True)
    (tmp_path / "source" / "1" / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "config.pbtxt").write_text("name: 'm'")
    (tmp_path / "copy" / "1").symlink_to(tmp_path / "source" / "1")
    assert size_on_disk(tmp_path / "copy") == 1000 + len("name: 'm'")


def test_ensemble_steps_of_the_committed_portrait_ensembles():
    steps = ensemble_steps(MODEL_REPOSITORY, "portrait")
    assert {"decode", "detect", "codeformer", "u2net", "compose"} <= set(steps)
    assert "portrait" not in steps and "codeformer" not in ensemble_steps(MODEL_REPOSITORY, "portrait_basic")
    assert ensemble_steps(MODEL_REPOSITORY, "u2net") == []


def test_a_model_exported_into_the_source_is_linked_into_the_runtime_copy_with_its_plan(tmp_path):
    from facecraft.gateway.models import ModelManager
    from facecraft.runtime.instance_groups import configure_repository
    from facecraft.runtime.instance_plan import InstancePlan
    from facecraft.runtime.model_config import ModelInstanceGroup, load_config
    from tests.fixtures.triton import copy_model_repository

    source = copy_model_repository(tmp_path / "source")
    plan = InstancePlan(
        "cpu", onnx_instances=3, onnx_threads=1, python_instances=None, one_image_per_run=True, cores=3
    )
    configure_repository(source, plan, output=tmp_path / "served")
    (source / "u2netp" / "1").mkdir(parents=True)  # what an export leaves in the source repository
    (source / "u2netp" / "1" / "model.onnx").write_bytes(b"onnx")
    ModelManager(None, source, tmp_path / "served")._link("u2netp")
    served = tmp_path / "served" / "u2netp"
    assert (served / "1").resolve() == (source / "u2netp" / "1").resolve()
    config = load_config(served / "config.pbtxt")
    assert config.name == "u2netp" and config.max_batch_size == 1
    assert [(group.count, ModelInstanceGroup.Kind.Name(group.kind)) for group in config.instance_group] == [
        (3, "KIND_CPU")
    ]
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_system_facts_of_this_host(tmp_path):
    cpu = cpu_info()
    assert cpu["logical_cores"] >= 1 and cpu["usable_cores"] >= 1
    gpus, note = gpu_info()
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert gpus == [] and "not installed" in note
    disk = disk_info(tmp_path / "not" / "yet")
    assert disk["path"] == str(tmp_path) and 0 < disk["free_bytes"] <= disk["total_bytes"]
    plan = {entry["model"]: entry for entry in instance_plan(MODEL_REPOSITORY)}
    assert "portrait" not in plan and plan["u2net"]["instances"] == [{"kind": "KIND_CPU", "count": 1}]


def test_admin_routes_can_be_switched_off_and_need_the_api_key(tmp_path):
    settings = make_gateway_settings(tmp_path, "127.0.0.1:1", admin_routes=False, api_key="k")
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/v1/models/u2net/load").status_code == 401
        for path in ("/api/v1/models/u2net/load", "/api/v1/models/u2net/unload"):
            answer = client.post(path, headers={"X-API-Key": "k"})
            assert (answer.status_code, answer.json()["error"]) == (403, "admin_disabled")
        answer = client.post(
            "/api/v1/models/download", json={"models": ["u2netp"]}, headers={"X-API-Key": "k"}
        )
        assert answer.status_code == 403
        assert client.get("/api/v1/models").status_code == 401
        health = client.get("/api/v1/health")  # open: liveness probes carry no key
        assert health.status_code == 200 and health.json()["triton"] == {"reachable": False, "ready": False}


def test_a_download_of_an_unknown_model_is_404_with_the_valid_names(tmp_path):
    with TestClient(create_app(make_gateway_settings(tmp_path, "127.0.0.1:1"))) as client:
        answer = client.post("/api/v1/models/download", json={"models": ["u2netp", "gfpgan"]})
        assert (answer.status_code, answer.json()["error"]) == (404, "model_not_found")
        assert (
            "u2net_general" in answer.json()["error_message"]
            and "codeformer" in answer.json()["error_message"]
        )
        no_repository = client.post("/api/v1/models/download", json=["u2netp"])
        assert (no_repository.status_code, no_repository.json()["error"]) == (409, "repository_unknown")


# -- against the real session Triton ---------------------------------------------------------------


def _triton_post(server, path: str) -> None:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=b"{}", method="POST")
    urllib.request.urlopen(request, timeout=300).read()


def restore_loaded(server, name: str) -> None:
    """Load ``name`` again through Triton's repository API and wait for the whole server to be ready."""
    _triton_post(server, f"/v2/repository/models/{name}/load")
    server.wait_ready(300)


@pytest.mark.integration
def test_models_list_states_provenance_and_the_exportable_models(gateway_client, triton_server):
    models = {model["name"]: model for model in gateway_client.get("/api/v1/models").json()["models"]}
    u2net = models["u2net"]
    assert u2net["state"] == "READY" and u2net["versions"] == ["1"]
    assert u2net["platform"] == "onnxruntime" and u2net["instance_kinds"] == ["KIND_CPU"]
    export = json.loads((Path(triton_server.repo) / "u2net" / "1" / "export.json").read_text())
    assert (u2net["provenance"], u2net["weights"], u2net["preset"]) == ("random", "untrained", "tiny")
    assert u2net["onnx_sha256"] == export["onnx_sha256"] and u2net["size_bytes"] > export["onnx_bytes"]
    assert "Apache-2.0" in u2net["licence"] and "non-commercial" in models["codeformer"]["licence"]
    assert models["portrait"]["platform"] == "ensemble" and "provenance" not in models["portrait"]
    for name in ("u2net_general", "u2netp"):
        assert models[name]["state"] == "NOT_EXPORTED" and models[name]["downloadable"]


@pytest.mark.integration
def test_system_and_health_report_triton(gateway_client):
    system = gateway_client.get("/api/v1/system").json()
    assert system["triton"]["reachable"] and system["triton"]["version"]
    assert system["cpu"]["logical_cores"] >= 1 and system["memory"]["total_bytes"] > 0
    assert {entry["model"] for entry in system["instance_plan"]} >= {"codeformer", "u2net", "decode"}
    assert gateway_client.get("/api/v1/health").json()["triton"] == {"reachable": True, "ready": True}


@pytest.mark.integration
def test_load_and_unload_of_an_unknown_model_is_404_with_the_repository_names(gateway_client):
    answer = gateway_client.post("/api/v1/models/nosuchmodel/unload")
    assert (answer.status_code, answer.json()["error"]) == (404, "model_not_found")
    assert "portrait_basic" in answer.json()["error_message"]
    # a model this project exports but the session repository has not: how to get it
    answer = gateway_client.post("/api/v1/models/u2netp/load")
    assert (answer.status_code, answer.json()["error"]) == (404, "model_not_found")
    assert "not exported in this deployment" in answer.json()["error_message"]
    assert 'POST /api/v1/models/download ["u2netp"]' in answer.json()["error_message"]


@pytest.mark.integration
def test_an_unloaded_u2net_makes_the_portrait_503_model_unavailable_until_loaded(
    gateway_client, triton_server, astronaut_jpeg
):
    files = {"file": ("a.jpg", astronaut_jpeg, "image/jpeg")}
    try:
        assert gateway_client.post("/api/v1/models/u2net/unload").json() == {
            "name": "u2net",
            "state": "UNLOADED",
        }
        answer = gateway_client.post("/api/v1/process/quick", data={"size": "128"}, files=files)
        assert (answer.status_code, answer.json()["error"]) == (503, "model_unavailable")
        assert answer.headers["Retry-After"] == "1"
        message = answer.json()["error_message"]
        assert "'portrait'" in message and "u2net (UNAVAILABLE: unloaded)" in message
        assert "POST /api/v1/models/u2net/load" in message
        models = {model["name"]: model for model in gateway_client.get("/api/v1/models").json()["models"]}
        assert models["u2net"]["state"] == "UNAVAILABLE" and models["u2net"]["reason"] == "unloaded"
        assert gateway_client.post("/api/v1/models/u2net/load").json() == {"name": "u2net", "state": "READY"}
        again = gateway_client.post("/api/v1/process/quick", data={"size": "128"}, files=files)
        assert again.status_code == 200 and again.headers["content-type"] == "image/png"
    finally:
        restore_loaded(triton_server, "u2net")


@pytest.mark.integration
def test_requests_during_a_reload_succeed_or_get_503_with_retry_after(
    gateway_client, triton_server, astronaut_jpeg
):
    def portrait(_):
        files = {"file": ("a.jpg", astronaut_jpeg, "image/jpeg")}
        return gateway_client.post(
            "/api/v1/process/quick", data={"size": "128", "enhance_face": "false"}, files=files
        )

    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(portrait, range(3)))
            reload = pool.submit(gateway_client.post, "/api/v1/models/u2net/load")
            answers += list(pool.map(portrait, range(3)))
            assert reload.result().status_code == 200
    finally:
        restore_loaded(triton_server, "u2net")
    for answer in answers:
        assert answer.status_code == 200 or (answer.status_code == 503 and answer.headers.get("Retry-After"))


def _wait_for_operation(client, operation_id: str) -> dict:
    deadline = time.monotonic() + OPERATION_TIMEOUT_S
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/models/download/{operation_id}").json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"model download {operation_id} did not finish in {OPERATION_TIMEOUT_S}s: {body}")


@pytest.mark.integration
def test_download_from_a_mirror_exports_loads_and_serves_u2netp(
    gateway_client, triton_server, tmp_path, monkeypatch
):
    import torch
    import tritonclient.http as httpclient

    from facecraft.export.models import build_model, resolve

    www = tmp_path / "www"
    (www / "tiny").mkdir(parents=True)
    torch.manual_seed(11)
    checkpoint = www / "tiny" / "u2netp.pth"
    torch.save(build_model(resolve("u2netp", preset="tiny")).state_dict(), checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    (www / "tiny" / "u2netp.pth.sha256").write_text(f"{digest}  u2netp.pth\n")
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path / "cache"))
    repo = Path(triton_server.repo)
    try:
        with static_http_server(www) as (_process, port):
            monkeypatch.setenv("FACECRAFT_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
            started = gateway_client.post("/api/v1/models/download", json={"models": ["u2netp"]})
            assert started.status_code == 202, started.text
            body = started.json()
            assert body["preset"] == "tiny" and body["models"][0]["name"] == "u2netp"
            done = _wait_for_operation(gateway_client, body["id"])
        assert done["status"] == "completed", done
        item = done["models"][0]
        assert (item["status"], item["progress"], item["bytes_done"]) == (
            "ready",
            1.0,
            checkpoint.stat().st_size,
        )
        assert (item["provenance"]["provenance"], item["provenance"]["weights_sha256"]) == (
            "official",
            digest,
        )
        models = {model["name"]: model for model in gateway_client.get("/api/v1/models").json()["models"]}
        u2netp = models["u2netp"]
        assert (u2netp["state"], u2netp["provenance"], u2netp["weights_sha256"]) == (
            "READY",
            "official",
            digest,
        )
        assert (
            u2netp["weights_url"] == f"http://127.0.0.1:{port}/tiny/u2netp.pth"
            and u2netp["variant"] == "u2netp"
        )
        client = httpclient.InferenceServerClient(triton_server.http_url)
        tensor = httpclient.InferInput("input", [1, 3, 320, 320], "FP32")
        tensor.set_data_from_numpy(
            np.random.default_rng(0).uniform(-2, 2, (1, 3, 320, 320)).astype(np.float32)
        )
        output = client.infer("u2netp", [tensor]).as_numpy("output")
        assert output.shape == (1, 1, 320, 320) and 0.0 <= output.min() <= output.max() <= 1.0
    finally:
        if (repo / "u2netp").exists():
            _triton_post(triton_server, "/v2/repository/models/u2netp/unload")
            deadline = time.monotonic() + 120
            while triton_server.model_states().get("u2netp") == "READY" and time.monotonic() < deadline:
                time.sleep(0.2)
            shutil.rmtree(repo / "u2netp")
        triton_server.wait_ready(300)


@pytest.mark.integration
def test_an_async_job_waits_out_an_unloaded_model_and_completes_after_the_load(
    gateway_settings, triton_server, astronaut_jpeg
):
    settings = gateway_settings.model_copy(update={"job_max_attempts": 1000, "retry_after_s": 1})
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/api/v1/models/u2net/unload").status_code == 200
            files = {"file": ("a.jpg", astronaut_jpeg, "image/jpeg")}
            job = client.post("/api/v1/jobs", data={"enhance_face": "false"}, files=files).json()
            deadline = time.monotonic() + OPERATION_TIMEOUT_S
            record = client.get(f"/api/v1/jobs/{job['job_id']}").json()
            while "model_unavailable" not in (record.get("note") or "") and time.monotonic() < deadline:
                time.sleep(0.1)
                record = client.get(f"/api/v1/jobs/{job['job_id']}").json()
            assert record["status"] == "queued" and "retrying after model_unavailable" in record["note"], (
                record
            )
            assert client.post("/api/v1/models/u2net/load").status_code == 200
            while record["status"] not in ("completed", "failed") and time.monotonic() < deadline:
                time.sleep(0.1)
                record = client.get(f"/api/v1/jobs/{job['job_id']}").json()
            assert record["status"] == "completed", record
    finally:
        restore_loaded(triton_server, "u2net")
