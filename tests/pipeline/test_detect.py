import cv2
import numpy as np
import pytest

from facecraft.pipeline.decode import decode_image
from facecraft.pipeline.detect import (
    LANDMARKS_FILE,
    detect_face,
    find_faces,
    find_scored_faces,
    min_face_size,
    models_dir,
)
from facecraft.pipeline.errors import PipelineError
from tests.fixtures.images import MULTI_FACE_PHOTOS, NO_FACE_PHOTOS, SINGLE_FACE_PHOTOS

# The astronaut's head, 256x256 from the 512x512 photo: dlib's box on its face is ~91 px.
HEAD_BOX_IN_CROP = 91


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
    big = cv2.resize(astronaut_rgb, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    small_boxes, big_boxes = find_faces(astronaut_rgb), find_faces(big)
    assert np.allclose(np.array(big_boxes[0]) / 4, np.array(small_boxes[0]), atol=12)
    # HOG's low-score false positives (the mission badge) stay out at both sizes.
    assert len(small_boxes) == 1 and len(big_boxes) == 1


def test_no_face_raises_no_face_detected(no_face_jpeg):
    rgb = decode_image(no_face_jpeg).rgb
    with pytest.raises(PipelineError) as caught:
        detect_face(rgb)
    assert caught.value.code == "no_face_detected" and caught.value.step == "detect"
    assert "320x240" in caught.value.detail


def test_largest_face_wins(astronaut_rgb):
    # Left: the astronaut's head at 1x (face ~88 px); right: the whole photo at 1.25x (face ~110 px).
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


def test_smaller_face_beside_a_larger_one_is_counted(cases_dir):
    # 1100x560, the astronaut twice: faces ~100 px (left) and ~60 px (right). Without upsampling the
    # small face scored 0.10 and the score filter dropped it; the upsampled retry never ran, as the
    # first pass had found the big one: face_count 1.
    rgb = decode_image((cases_dir / "two_people_unequal_faces.jpg").read_bytes()).rgb
    detection = detect_face(rgb)
    assert detection.face_count == 2
    (left_x, _, left_w, _), (right_x, _, right_w, _) = find_faces(rgb)
    assert left_x < 550 < right_x and right_w < left_w
    assert np.allclose(detection.box, find_faces(rgb)[0])


def _heads(astronaut_rgb, width, height, placements):
    """A gray ``width`` x ``height`` canvas with the astronaut's head pasted at (x, y, side) each."""
    head = astronaut_rgb[40:296, 100:356]
    canvas = np.full((height, width, 3), 128, np.uint8)
    for x, y, side in placements:
        canvas[y : y + side, x : x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.mark.parametrize(
    ("width", "height", "documented_min"),
    [(640, 480, 40), (1100, 560, 40), (2048, 1365, 84), (2048, 2048, 102)],
)
def test_faces_down_to_the_documented_minimum_are_counted(astronaut_rgb, width, height, documented_min):
    assert min_face_size(width, height) == pytest.approx(documented_min, abs=0.5)
    # A large face top left and one of 1.1x the documented minimum bottom right.
    small = round(256 * 1.1 * documented_min / HEAD_BOX_IN_CROP)
    large = min(height, width // 2) - 20
    canvas = _heads(
        astronaut_rgb, width, height, [(10, 10, large), (width - small - 10, height - small - 10, small)]
    )
    boxes = find_faces(canvas)
    assert len(boxes) == 2
    assert boxes[0][0] < width / 2 < boxes[1][0]
    assert 0.9 * documented_min <= boxes[1][2] <= 1.5 * documented_min


def test_faces_come_largest_first_then_left_to_right(faces_dir):
    # Seven faces that dlib boxes at the same size: the order must not be dlib's (by score).
    rgb = decode_image((faces_dir / "dlib__2008_004176.jpg").read_bytes()).rgb
    boxes = find_faces(rgb)
    assert len(boxes) == 7
    keys = [(-w * h, x, y) for x, y, w, h in boxes]
    assert keys == sorted(keys)
    assert len({w * h for _, _, w, h in boxes}) == 1  # a real tie, so the x order is what is tested


@pytest.mark.parametrize(("name", "count"), sorted(MULTI_FACE_PHOTOS.items()))
def test_real_multi_face_photos(faces_dir, name, count):
    assert detect_face(decode_image((faces_dir / name).read_bytes()).rgb).face_count == count


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((8, 8, 3))]
)
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError, match="non-empty HWC uint8 RGB"):
        find_faces(bad)


def test_gray_search_equals_rgb_search_on_gray_content(faces_dir):
    # Einstein01 is grayscale content stored as RGB: the luma search finds the RGB search's box
    # (dlib's RGB gradient arithmetic moves the score a little: 1.208 vs 1.250).
    rgb = decode_image((faces_dir / "cf__Einstein01.png").read_bytes()).rgb
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    ((gray_box, gray_score),) = find_scored_faces(rgb, "gray")
    ((rgb_box, rgb_score),) = find_scored_faces(rgb, "rgb")
    assert gray_box == rgb_box and gray_score == pytest.approx(rgb_score, abs=0.1)


def test_unknown_channels_raise_value_error(astronaut_rgb):
    with pytest.raises(ValueError, match="channels"):
        find_faces(astronaut_rgb, "bgr")
