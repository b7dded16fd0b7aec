"""facecraft.client.video without Triton: output kinds, the per-frame adapter (PNG in, PNG/JSON out)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecraft.client.errors import NoFaceDetected
from facecraft.client.processors import ProcessorResult
from facecraft.client.video import NO_FACE_REPORT, output_kind, processor_frame_function


@pytest.mark.parametrize(
    "processor, name, kind",
    [
        ("face_enhancer", "out.mp4", "mp4"),
        ("face_enhancer", "out.MOV", "mp4"),
        ("background_remover", "cut.webm", "webm"),
        ("face_analyser", "faces.jsonl", "jsonl"),
    ],
)
def test_output_kind(processor, name, kind):
    assert output_kind(processor, Path(name)) == kind


@pytest.mark.parametrize(
    "processor, name, message",
    [
        ("portrait", "out.mp4", "one image at a time"),
        ("face_analyser", "faces.mp4", ".jsonl"),
        ("face_enhancer", "out.jsonl", ".mp4 or"),
    ],
)
def test_output_kind_refusals(processor, name, message):
    with pytest.raises(ValueError, match=message):
        output_kind(processor, Path(name))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_frames_go_out_as_png_and_results_come_back_as_arrays():
    frame = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    sent = []

    async def run(data: bytes) -> ProcessorResult:
        sent.append(np.asarray(Image.open(io.BytesIO(data))))
        rgba = np.dstack([255 - sent[-1], np.full((12, 16), 7, np.uint8)])
        return ProcessorResult("background_remover", data=_png(rgba), media_type="image/png")

    result = asyncio.run(processor_frame_function(run, "background_remover")(frame))
    assert np.array_equal(sent[0], frame)  # lossless
    assert result.shape == (12, 16, 4) and np.array_equal(result[..., :3], 255 - frame)
    assert (result[..., 3] == 7).all()


@pytest.mark.parametrize(
    "processor, expected", [("face_enhancer", "frame"), ("face_analyser", NO_FACE_REPORT)]
)
def test_a_frame_without_faces_passes_through(processor, expected):
    frame = np.zeros((8, 8, 3), np.uint8)

    async def run(data: bytes) -> ProcessorResult:
        raise NoFaceDetected("no_face_detected: faces: no face found in a 8x8 image")

    result = asyncio.run(processor_frame_function(run, processor)(frame))
    if expected == "frame":
        assert result is frame
    else:
        assert result == expected


def test_an_analyser_report_is_the_frame_result():
    async def run(data: bytes) -> ProcessorResult:
        return ProcessorResult("face_analyser", report={"face_count": 1, "faces": [{"score": 1.0}]})

    result = asyncio.run(processor_frame_function(run, "face_analyser")(np.zeros((8, 8, 3), np.uint8)))
    assert result == {"face_count": 1, "faces": [{"score": 1.0}]}
