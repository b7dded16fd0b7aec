import cv2
import numpy as np
import pytest

from facecraft.pipeline.align import estimate_alignment, five_points
from facecraft.pipeline.detect import detect_face
from facecraft.pipeline.swap import (
    ARCFACE_TEMPLATE_112,
    SWAP_TEMPLATE_128,
    arcface_input,
    box_mask,
    emap_of,
    paste_swapped,
    read_emap,
    source_latent,
    swap_faces,
    swap_input,
)


def test_templates_are_insightfaces_and_the_128_one_is_shifted_by_8_px():
    assert np.allclose(ARCFACE_TEMPLATE_112[0], (38.2946, 51.6963))
    assert np.allclose(ARCFACE_TEMPLATE_112[4], (70.7299, 92.2041))
    assert np.allclose(SWAP_TEMPLATE_128 - ARCFACE_TEMPLATE_112, [[8.0, 0.0]] * 5)
    assert np.allclose(SWAP_TEMPLATE_128[2], (64.0252, 71.7366))


def test_crops_put_the_face_on_each_template(astronaut_rgb):
    landmarks = detect_face(astronaut_rgb).landmarks
    arc = arcface_input(astronaut_rgb, landmarks)
    assert arc.shape == (3, 112, 112) and arc.dtype == np.float32
    assert arc.min() >= -1.0 and arc.max() <= 1.0 and arc.std() > 0.1
    target, affine = swap_input(astronaut_rgb, landmarks)
    assert target.shape == (3, 128, 128) and target.min() >= 0.0 and target.max() <= 1.0
    mapped = np.c_[five_points(landmarks), np.ones(5)] @ affine.T
    assert np.abs(mapped[:2] - SWAP_TEMPLATE_128[:2]).max() < 6  # eyes within a few crop px
    # The 112 and 128 crops are the same alignment up to the 8 px shift and the crop size.
    arc_affine = estimate_alignment(landmarks, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(affine[:, :2], arc_affine[:, :2], atol=1e-3)
    np.testing.assert_allclose(affine[:, 2] - arc_affine[:, 2], (8.0, 0.0), atol=1e-2)


def test_source_latent_is_insightfaces_normalised_emap_product():
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=512) * 7.0
    emap = rng.normal(size=(512, 512)).astype(np.float32)
    latent = source_latent(embedding, emap)
    expected = (embedding / np.linalg.norm(embedding)) @ emap
    assert latent.dtype == np.float32 and latent.shape == (512,)
    np.testing.assert_allclose(latent, expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(source_latent(embedding * 100, emap), latent, atol=1e-6)  # scale-free
    with pytest.raises(ValueError, match="no direction"):
        source_latent(np.zeros(512), emap)
    with pytest.raises(ValueError, match="expected"):
        source_latent(embedding[:128], emap)


def test_emap_is_read_from_the_last_initializer(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    emap = np.random.default_rng(1).normal(size=(512, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(np.zeros(3, np.float32), "w"),
            numpy_helper.from_array(emap, "emap"),
        ],
    )
    path = tmp_path / "swap.onnx"
    onnx.save(helper.make_model(graph), str(path))
    np.testing.assert_array_equal(read_emap(path), emap)
    del graph.initializer[-1]
    with pytest.raises(ValueError, match="not the emap"):
        emap_of(helper.make_model(graph), "swap.onnx")


def test_box_mask_uses_facefusions_numbers():
    mask = box_mask(128)
    assert mask.shape == (128, 128) and mask.dtype == np.float32
    # 9 px zero border blurred with sigma 4.75: the centre is 1, the corner ~0, the edge row small.
    assert mask[64, 64] == pytest.approx(1.0, abs=1e-4)
    assert mask[0, 0] < 0.01 and mask[64, 0] < 0.1
    assert 0.3 < mask[64, 9] < 0.7  # the blurred edge sits on the 9 px border
    expected = np.ones((128, 128), np.float32)
    expected[:9], expected[-9:], expected[:, :9], expected[:, -9:] = 0, 0, 0, 0
    np.testing.assert_allclose(mask, cv2.GaussianBlur(expected, (0, 0), 4.75), atol=1e-6)


def test_paste_swapped_changes_only_the_face_box(astronaut_rgb):
    landmarks = detect_face(astronaut_rgb).landmarks
    target, affine = swap_input(astronaut_rgb, landmarks)
    white = np.ones((3, 128, 128), np.float32)
    pasted = paste_swapped(astronaut_rgb, white, affine)
    assert pasted.shape == astronaut_rgb.shape and pasted.dtype == np.uint8
    changed = np.any(pasted != astronaut_rgb, axis=2)
    inverse = cv2.invertAffineTransform(affine.astype(np.float64))
    corners = np.array([[0, 0, 1], [128, 0, 1], [0, 128, 1], [128, 128, 1]], float) @ inverse.T
    ys, xs = np.nonzero(changed)
    assert xs.min() >= corners[:, 0].min() - 1 and xs.max() <= corners[:, 0].max() + 1
    assert ys.min() >= corners[:, 1].min() - 1 and ys.max() <= corners[:, 1].max() + 1
    nose = landmarks[30].astype(int)
    assert np.all(pasted[nose[1], nose[0]] == 255)
    # The target crop itself pasted back is nearly lossless (the identity swap).
    same = paste_swapped(astronaut_rgb, target, affine)
    assert np.abs(same.astype(int) - astronaut_rgb).mean() < 0.5


# -- end to end on real photos with the tiny (untrained) ONNX exports, through onnxruntime -------


@pytest.fixture(scope="module")
def tiny_swap_models(tmp_path_factory):
    """onnxruntime sessions of tiny seeded-random arcface_w600k_r50 and inswapper_128 exports."""
    import warnings

    import onnxruntime as ort

    from facecraft.export.exporter import UntrainedWeightsWarning, export_model

    repo = tmp_path_factory.mktemp("swap_repo")
    sessions = {}
    for name in ("arcface_w600k_r50", "inswapper_128"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedWeightsWarning)
            result = export_model(name, preset="tiny", weights="random", seed=0, repo=repo, progress=False)
        sessions[name] = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    return sessions, read_emap(repo / "inswapper_128" / "1" / "model.onnx")


def _photo(faces_dir, name):
    from PIL import Image

    return np.asarray(Image.open(faces_dir / name).convert("RGB"))


def _faces(rgb):
    from facecraft.pipeline.detect import find_faces, landmarks_for_box

    return [landmarks_for_box(rgb, box) for box in find_faces(rgb)]


def _crop_boxes(landmarks):
    """Each face's 128 crop square mapped back into the image: (x0, y0, x1, y1)."""
    boxes = []
    for points in landmarks:
        inverse = cv2.invertAffineTransform(estimate_alignment(points, SWAP_TEMPLATE_128).astype(np.float64))
        corners = np.array([[0, 0, 1], [128, 0, 1], [0, 128, 1], [128, 128, 1]], float) @ inverse.T
        boxes.append((*corners.min(axis=0), *corners.max(axis=0)))
    return boxes


def _swap(sessions, emap, source_rgb, target_rgb):
    (source_points,) = _faces(source_rgb)[:1]
    (embedding,) = sessions["arcface_w600k_r50"].run(
        ["output"], {"input": arcface_input(source_rgb, source_points)[None]}
    )
    latent = source_latent(embedding[0], emap)

    def generate(target, source):
        return sessions["inswapper_128"].run(["output"], {"target": target, "source": source})[0]

    landmarks = _faces(target_rgb)
    return swap_faces(target_rgb, landmarks, latent, generate), landmarks


@pytest.mark.parametrize(
    ("source", "target", "faces"),
    [
        ("fr__obama_small.jpg", "dlib__Tom_Cruise_avp_2014_4.jpg", 1),
        ("fr__obama_small.jpg", "fr__two_people.jpg", 2),
    ],
)
def test_swap_replaces_every_target_face_and_nothing_else(tiny_swap_models, faces_dir, source, target, faces):
    sessions, emap = tiny_swap_models
    source_rgb, target_rgb = _photo(faces_dir, source), _photo(faces_dir, target)
    swapped, landmarks = _swap(sessions, emap, source_rgb, target_rgb)
    assert len(landmarks) == faces
    assert swapped.shape == target_rgb.shape and swapped.dtype == np.uint8
    outside = np.ones(target_rgb.shape[:2], bool)
    for x0, y0, x1, y1 in _crop_boxes(landmarks):
        ys, xs = (
            slice(max(0, int(y0) - 1), int(np.ceil(y1)) + 2),
            slice(max(0, int(x0) - 1), int(np.ceil(x1)) + 2),
        )
        outside[ys, xs] = False
        nose_box = swapped[ys, xs].astype(int) - target_rgb[ys, xs]
        assert np.abs(nose_box).mean() > 2.0  # this face was replaced (untrained: a visible change)
    np.testing.assert_array_equal(swapped[outside], target_rgb[outside])  # untouched outside the boxes


def test_the_source_identity_reaches_the_swapped_face(tiny_swap_models, faces_dir):
    sessions, emap = tiny_swap_models
    target_rgb = _photo(faces_dir, "dlib__Tom_Cruise_avp_2014_4.jpg")
    first, _ = _swap(sessions, emap, _photo(faces_dir, "fr__obama_small.jpg"), target_rgb)
    second, _ = _swap(sessions, emap, _photo(faces_dir, "cf__Hepburn01.png"), target_rgb)
    assert np.abs(first.astype(int) - second).max() > 10


def test_swap_faces_without_faces_returns_a_copy_and_checks_the_generator():
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = swap_faces(rgb, [], np.ones(512, np.float32), lambda t, s: pytest.fail("no face, no call"))
    assert out is not rgb and np.array_equal(out, rgb)
