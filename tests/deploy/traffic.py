"""Real traffic for the observability tests: one portrait through Triton and through the gateway."""

from __future__ import annotations

import numpy as np

BASIC_ENSEMBLE = "portrait_basic"


def infer_portrait_basic(http_url: str, image: bytes) -> dict[str, np.ndarray]:
    """Send one encoded image through the ``portrait_basic`` ensemble over Triton HTTP.

    Returns the output tensors by name (``PNG``, ``JPEG``, ``FACE_COUNT``, ...).
    """
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=http_url, network_timeout=300.0, connection_timeout=30.0)
    try:
        tensor = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        outputs = [httpclient.InferRequestedOutput(name) for name in ("PNG", "FACE_COUNT")]
        result = client.infer(BASIC_ENSEMBLE, [tensor], outputs=outputs)
        return {name: result.as_numpy(name) for name in ("PNG", "FACE_COUNT")}
    finally:
        client.close()


def process_through_gateway(gateway_url: str, image: bytes) -> dict:
    """POST one image to the gateway's ``/api/v1/process`` without enhancement (``portrait_basic``)."""
    import httpx

    response = httpx.post(
        f"{gateway_url}/api/v1/process",
        files={"file": ("astronaut.jpg", image, "image/jpeg")},
        data={"enhance_face": "false", "width": "256", "height": "256"},
        timeout=300.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True, body
    return body
