"""Direct calls to the Triton ensembles with ``tritonclient.http`` (no project client in between),
so the bad-input tests see exactly what a power user calling Triton would see."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

TRITON_DTYPES = {
    np.dtype(np.int32): "INT32",
    np.dtype(np.float32): "FP32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}
OUTPUTS = ("PNG", "JPEG", "FACE_BOX", "FACE_COUNT", "JPEG_CAP_MET", "OUTPUT_SIZE")


@dataclass
class TritonAnswer:
    """Either ``outputs`` (name -> array without the batch dim) or ``status`` + ``message``."""

    outputs: dict[str, np.ndarray] | None
    status: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outputs is not None

    def error_code(self) -> str | None:
        """The pipeline error code leading the message (``"<code>: <step>: ..."``), if any."""
        for code in (
            "invalid_image",
            "image_too_large",
            "invalid_option",
            "no_face_detected",
            "internal_error",
        ):
            if f"{code}: " in self.message:
                return code
        return None


def infer(client, model: str, image: bytes, tensors: dict[str, np.ndarray] | None = None) -> TritonAnswer:
    """Run ``model`` on one encoded image (+ optional option tensors with their batch dim)."""
    from tritonclient.http import InferInput, InferRequestedOutput
    from tritonclient.utils import InferenceServerException

    inputs = [InferInput("IMAGE", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    for name, array in (tensors or {}).items():
        tensor = InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    requested = [InferRequestedOutput(name) for name in OUTPUTS]
    try:
        result = client.infer(model, inputs, outputs=requested)
    except InferenceServerException as error:
        return TritonAnswer(None, status=str(error.status()), message=error.message() or str(error))
    return TritonAnswer({name: result.as_numpy(name)[0] for name in OUTPUTS})


def decoded_outputs(answer: TritonAnswer) -> tuple[Image.Image, Image.Image]:
    """(PNG, JPEG) of a successful answer as loaded Pillow images."""
    assert answer.outputs is not None
    png = Image.open(io.BytesIO(bytes(answer.outputs["PNG"][0])))
    jpeg = Image.open(io.BytesIO(bytes(answer.outputs["JPEG"][0])))
    png.load()
    jpeg.load()
    return png, jpeg
