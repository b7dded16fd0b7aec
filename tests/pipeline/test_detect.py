import numpy as np
import pytest

from facecraft.pipeline.decode import decode_image
from facecraft.pipeline.detect import LANDMARKS_FILE, detect_face, find_faces, models_dir
from facecraft.pipeline.errors import PipelineError
from tests.fixtures.images import NO_FACE_PHOTOS, SINGLE_FACE_PHOTOS


def test_model_files_are_found_without_importing_the_package():
    assert (models_dir() / LANDMARKS_FILE).is_file()


def test_astronaut_face_and_landmarks(astronaut_rgb):
    detection = detect_face(astronaut_rgb)
    x, y, w, h = detection.box
    # Eileen Collins' face: roughly x 180-265, y 85-170 in the 512x512 image.
    assert 150 < x < 210 and 60 < y < 120 and 60 < w < 120 and 60 < h < 120
    assert detection.face_count == 1
    assert detection.landmarks.shape == (68, 2) and detection.landmarks.dtype == np.float32
    left_eye, right_eye = detection.landmarks[36:42].mean(0), detection.landmarks[42:48].mean(0)
    nose, chin = detection.landmarks[30], detection.landmarks[8]
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < chin[1]
    assert x <= nose[0] <= x + w and y <= nose[1] <= y + h


def test_box_is_scaled_back_from_the_downscaled_copy(astronaut_rgb):
    import cv2

    big = cv2.resize(astronaut_rgb, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    small_box = np.array(find_faces(astronaut_rgb)[0])
    big_box = np.array(find_faces(big)[0])
    assert np.allclose(big_box / 4, small_box, atol=12)


def test_no_face_raises_no_face_detected(no_face_jpeg):
    rgb = decode_image(no_face_jpeg).rgb
    with pytest.raises(PipelineError) as caught:
        detect_face(rgb)
    assert caught.value.code == "no_face_detected" and caught.value.step == "detect"
    assert "320x240" in caught.value.detail


def test_largest_face_wins(astronaut_rgb):
    # Left: the astronaut's head at 1x (face ~88 px); right: the whole photo at 1.25x (face ~110 px).
    import cv2

    canvas = np.zeros((640, 896, 3), np.uint8)
    canvas[:256, :256] = astronaut_rgb[40:296, 100:356]
    canvas[:, 256:] = cv2.resize(astronaut_rgb, (640, 640))
    detection = detect_face(canvas)
    assert detection.face_count == 2
    assert detection.box[0] > 256 and detection.box[2] > 100


@pytest.mark.parametrize("name", SINGLE_FACE_PHOTOS)
def test_real_single_face_photos(faces_dir, name):
    rgb = decode_image((faces_dir / name).read_bytes()).rgb
    assert detect_face(rgb).face_count >= 1


@pytest.mark.parametrize("name", NO_FACE_PHOTOS)
def test_real_no_face_photos(faces_dir, name):
    with pytest.raises(PipelineError, match="no_face_detected"):
        detect_face(decode_image((faces_dir / name).read_bytes()).rgb)
