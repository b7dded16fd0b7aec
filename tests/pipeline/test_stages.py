"""The per-model stage functions, chained by hand exactly as the ensembles chain them."""

import io

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline import stages
from facecraft.pipeline.errors import PipelineError


def image_tensor(data: bytes) -> np.ndarray:
    return np.array([data], dtype=np.object_)


def test_decode_stage_outputs_match_the_contract(astronaut_jpeg):
    out = stages.decode_stage({"IMAGE": image_tensor(astronaut_jpeg), "WIDTH": np.array([320], np.int32)})
    assert out["RGB"].shape == (512, 512, 3) and out["RGB"].dtype == np.uint8
    assert out["ORIGINAL_SIZE"].tolist() == [512, 512] and out["ORIGINAL_SIZE"].dtype == np.int32
    assert out["OPTIONS"].dtype == np.float32 and out["OPTIONS"][0] == 320 and out["OPTIONS"][1] == 648
    assert out["FIDELITY_W"].tolist() == pytest.approx([0.7])


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("WIDTH", np.array([10], np.int32), "width=10"),
        ("BACKGROUND", np.array([1, 2], np.uint8), "background must have 3"),
        ("FIDELITY", np.array([1.5], np.float32), "fidelity"),
        ("MAX_JPEG_KB", np.array([1, 2], np.int32), "max_jpeg_kb must have 1"),
    ],
)
def test_decode_stage_names_the_bad_option(astronaut_jpeg, name, value, fragment):
    with pytest.raises(PipelineError, match=f"invalid_option: decode: .*{fragment}"):
        stages.decode_stage({"IMAGE": image_tensor(astronaut_jpeg), name: value})


def test_missing_image_is_invalid_image():
    with pytest.raises(PipelineError, match="invalid_image: decode: missing input IMAGE"):
        stages.decode_stage({})


def test_stages_chain_like_the_portrait_ensemble(astronaut_jpeg):
    decoded = stages.decode_stage(
        {
            "IMAGE": image_tensor(astronaut_jpeg),
            "HEIGHT": np.array([200], np.int32),
            "OVAL_MASK": np.array([False]),
        }
    )
    detected = stages.detect_stage({"RGB": decoded["RGB"]})
    assert detected["LANDMARKS"].shape == (68, 2) and detected["FACE_BOX_WORK"].shape == (4,)
    pre = stages.enhance_pre_stage({"RGB": decoded["RGB"], "LANDMARKS": detected["LANDMARKS"]})
    assert pre["FACE_INPUT"].shape == (3, 512, 512) and pre["AFFINE"].shape == (2, 3)
    # An identity "network": the aligned input comes back unchanged.
    post = stages.enhance_post_stage(
        {"RGB": decoded["RGB"], "RESTORED": pre["FACE_INPUT"], "AFFINE": pre["AFFINE"]}
    )
    assert post["ENHANCED"].shape == decoded["RGB"].shape
    seg_input = stages.segment_pre_stage({"RGB": decoded["RGB"], "FACE_COUNT": detected["FACE_COUNT"]})[
        "SEG_INPUT"
    ]
    assert seg_input.shape == (3, 320, 320)
    composed = stages.compose_stage(
        {
            "RGB": post["ENHANCED"],
            "SEG_MAP": np.ones((1, 320, 320), np.float32),
            "LANDMARKS": detected["LANDMARKS"],
            "FACE_BOX_WORK": detected["FACE_BOX_WORK"],
            "OPTIONS": decoded["OPTIONS"],
            "ORIGINAL_SIZE": decoded["ORIGINAL_SIZE"],
        }
    )
    assert Image.open(io.BytesIO(composed["PNG"][0])).size == (648, 200)
    assert composed["OUTPUT_SIZE"].tolist() == [648, 200]
    assert composed["JPEG_CAP_MET"].dtype == np.bool_ and composed["JPEG_CAP_MET"][0]
    assert composed["FACE_BOX"].dtype == np.int32


def test_detect_stage_without_a_face(no_face_jpeg):
    rgb = stages.decode_stage({"IMAGE": image_tensor(no_face_jpeg)})["RGB"]
    with pytest.raises(PipelineError, match="no_face_detected: detect"):
        stages.detect_stage({"RGB": rgb})


def test_every_stage_has_its_input_names():
    assert set(stages.STAGES) == set(stages.STAGE_INPUTS)


def test_segmentation_refuses_to_run_without_a_detected_face():
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(PipelineError) as error:
        stages.segment_pre_stage({"RGB": rgb, "FACE_COUNT": np.array([0], np.int32)})
    assert error.value.code == "no_face_detected" and error.value.step == "segment_pre"


def test_decode_stage_resolves_a_preset_into_options_and_id_photo(astronaut_jpeg):
    from facecraft.pipeline.options import IdPhotoRequest

    out = stages.decode_stage(
        {
            "IMAGE": np.array([astronaut_jpeg], dtype=np.object_),
            "WIDTH": np.array([648], dtype=np.int32),
            "PRESET": np.array([b"canada_passport"], dtype=np.object_),
            "LAYOUT": np.array([b"a4"], dtype=np.object_),
        }
    )
    assert out["OPTIONS"][:2].tolist() == [591, 827]  # the preset's size wins over WIDTH
    assert IdPhotoRequest.from_vector(out["ID_PHOTO"]) == IdPhotoRequest("canada_passport", "a4")
    plain = stages.decode_stage({"IMAGE": np.array([astronaut_jpeg], dtype=np.object_)})
    assert plain["ID_PHOTO"].tolist() == [-1, -1]
