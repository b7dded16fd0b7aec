"""The real model repository (tiny untrained exports) on the embedded Triton: the session fixture.

Proves the ``triton_server`` fixture other suites use: every model READY (both ensembles), the
ONNX models served by the Python-based ``onnxruntime`` backend and labelled UNTRAINED in the log,
and a real ``portrait_basic`` request returning a PNG.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

EXPECTED_MODELS = {
    "decode", "detect", "enhance_pre", "codeformer", "enhance_post", "segment_pre", "u2net", "compose",
    "portrait", "portrait_basic",
    "faces", "face_enhance", "face_analyse", "background_remove", "enhance_frame", "frame_enhancer",
    "face_enhancer", "face_analyser", "background_remover",
}  # fmt: skip


def test_every_model_of_the_repository_is_ready(triton_server):
    states = triton_server.model_states()
    on_disk = {path.parent.name for path in triton_server.repo.glob("*/config.pbtxt")}
    assert on_disk >= EXPECTED_MODELS
    assert {name: states.get(name) for name in on_disk} == dict.fromkeys(on_disk, "READY")
    assert triton_server.is_ready()


def test_onnx_models_use_python_onnxruntime_backend_and_are_labelled_untrained(triton_server):
    log = triton_server.log_path.read_text()
    for name in ("codeformer", "u2net"):
        assert f"onnxruntime backend: {name} v1:" in log
        assert f"onnxruntime backend: {name}: UNTRAINED weights" in log
    assert "on CPUExecutionProvider (instance kind CPU" in log


def test_portrait_basic_returns_png(triton_server, astronaut_jpeg):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=600)
    try:
        image = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[astronaut_jpeg]], dtype=np.object_))
        width = httpclient.InferInput("WIDTH", [1, 1], "INT32")
        width.set_data_from_numpy(np.array([[256]], dtype=np.int32))
        height = httpclient.InferInput("HEIGHT", [1, 1], "INT32")
        height.set_data_from_numpy(np.array([[320]], dtype=np.int32))
        result = client.infer("portrait_basic", [image, width, height])
    finally:
        client.close()
    png = Image.open(io.BytesIO(result.as_numpy("PNG").reshape(-1)[0]))
    assert png.format == "PNG" and png.mode == "RGBA" and png.size == (256, 320)
    assert result.as_numpy("FACE_COUNT").reshape(-1)[0] >= 1
