"""Decoding the ensemble's output tensors into a PortraitResult."""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.client.result import result_from_outputs


def test_result_from_batched_outputs():
    outputs = {
        "PNG": np.array([[b"png"]], dtype=np.object_),
        "JPEG": np.array([[b"jpg"]], dtype=np.object_),
        "FACE_BOX": np.array([[10, 20, 30, 40]], dtype=np.int32),
        "FACE_COUNT": np.array([[2]], dtype=np.int32),
        "JPEG_CAP_MET": np.array([[False]]),
        "OUTPUT_SIZE": np.array([[648, 600]], dtype=np.int32),
    }
    result = result_from_outputs(outputs.get)
    assert result.png == b"png" and result.jpeg == b"jpg"
    assert result.face_box == (10, 20, 30, 40)
    assert result.face_count == 2
    assert result.jpeg_cap_met is False
    assert result.output_size == (648, 600)


def test_missing_output_is_reported():
    with pytest.raises(ValueError, match="PNG"):
        result_from_outputs({}.get)
