"""The processor ensembles (face_enhancer, background_remover, face_analyser) on the real embedded
Triton (tiny, untrained ONNX exports), on real photos, through the client (docs/processors.md)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecraft.client.errors import InvalidImage, InvalidOption, ModelUnavailable, NoFaceDetected
from facecraft.client.portrait_client import PortraitClient
from facecraft.pipeline.decode import MAX_INPUT_PIXELS, decode_image
from facecraft.pipeline.detect import find_faces

pytestmark = pytest.mark.integration

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
GROUP_PHOTOS = sorted(FACES.glob("dlib__2008_*.jpg")) + [FACES / "fr__two_people.jpg"]
NO_FACE = FACES / "dlib__giraffe.jpg"
ONE_FACE = FACES / "fr__biden.jpg"


def photo(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path.read_bytes()


def full_rgb(data: bytes) -> np.ndarray:
    return decode_image(data, max_side=MAX_INPUT_PIXELS).rgb


@pytest.fixture(scope="module")
def client(triton_server):
    with PortraitClient(triton_server.grpc_url, "grpc") as connected:
        yield connected


@pytest.mark.parametrize("path", GROUP_PHOTOS, ids=lambda p: p.name)
def test_face_analyser_counts_every_face_of_group_photos(client, path):
    data = photo(path)
    rgb = full_rgb(data)
    expected = find_faces(rgb)
    result = client.analyse_faces(data)
    report = result.report
    assert report["face_count"] == len(expected) == result.face_count >= 2
    assert len(report["faces"]) == len(expected)
    for face, box in zip(report["faces"], expected, strict=True):
        assert face["box"] == pytest.approx(list(box), abs=0.06)
        assert len(face["landmarks"]) == 68 and all(len(point) == 2 for point in face["landmarks"])
        assert isinstance(face["score"], float) and isinstance(face["roll"], float)
    areas = [face["box"][2] * face["box"][3] for face in report["faces"]]
    assert areas == sorted(areas, reverse=True)  # deterministic order: largest first
    assert result.annotated == b""


def test_face_analyser_max_faces_and_annotated_image(client):
    data = photo(FACES / "dlib__2008_002079.jpg")
    result = client.analyse_faces(data, max_faces=2, annotate=True)
    assert result.report["face_count"] > 2 and len(result.report["faces"]) == 2
    annotated = Image.open(io.BytesIO(result.annotated))
    assert annotated.format == "PNG" and annotated.size == Image.open(io.BytesIO(data)).size
    assert not np.array_equal(np.asarray(annotated.convert("RGB")), full_rgb(data))


def codeformer_counts(triton_server) -> tuple[int, int]:
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        stats = http.get_inference_statistics("codeformer")["model_stats"][0]
    finally:
        http.close()
    return int(stats["execution_count"]), int(stats["inference_count"])


def test_face_enhancer_restores_every_face_in_one_codeformer_batch(client, triton_server):
    data = photo(FACES / "fr__two_people.jpg")
    rgb = full_rgb(data)
    boxes = find_faces(rgb)
    before = codeformer_counts(triton_server)
    result = client.enhance_faces(data)
    after = codeformer_counts(triton_server)
    executions, inferences = after[0] - before[0], after[1] - before[1]
    assert (executions, inferences) == (1, len(boxes)) and len(boxes) >= 2  # one batch of N faces
    assert result.face_count == len(boxes)
    out = Image.open(io.BytesIO(result.data))
    assert out.format == "PNG" and out.size == (rgb.shape[1], rgb.shape[0]) == result.output_size
    changed = np.abs(np.asarray(out.convert("RGB"), dtype=np.int16) - rgb.astype(np.int16)).sum(axis=2)
    for x, y, w, h in boxes:  # every face replaced
        x0, y0 = int(x + w / 4), int(y + h / 4)
        assert (changed[y0 : int(y + 3 * h / 4), x0 : int(x + 3 * w / 4)] > 0).mean() > 0.5
    assert changed[:10, :10].max() == 0  # far from every face, the input is kept


def test_face_enhancer_jpeg_blend_zero_keeps_the_input(client):
    data = photo(ONE_FACE)
    rgb = full_rgb(data)
    result = client.enhance_faces(data, blend=0.0, format="jpeg", fidelity=0.5)
    out = Image.open(io.BytesIO(result.data))
    assert out.format == "JPEG" and out.size == (rgb.shape[1], rgb.shape[0]) and result.face_count == 1
    difference = np.abs(np.asarray(out, dtype=np.int16) - rgb.astype(np.int16))
    assert difference.mean() < 3  # JPEG noise only: blend=0 keeps every original pixel


@pytest.mark.parametrize("processor", ["face_enhancer", "face_analyser"])
def test_face_processors_answer_no_face(client, processor):
    with pytest.raises(NoFaceDetected, match="no face"):
        client.run_processor(processor, photo(NO_FACE))


def test_min_face_size_drops_small_faces(client):
    with pytest.raises(NoFaceDetected, match="at least 4000 px"):
        client.analyse_faces(photo(ONE_FACE), min_face_size=4000)


def test_background_remover_full_resolution_rgba_mask_and_background(client):
    data = photo(FACES / "fr__two_people.jpg")
    size = Image.open(io.BytesIO(data)).size
    rgba = Image.open(io.BytesIO(client.remove_background(data).data))
    assert rgba.format == "PNG" and rgba.mode == "RGBA" and rgba.size == size
    mask = Image.open(io.BytesIO(client.remove_background(data, mask_only=True).data))
    assert mask.mode == "L" and mask.size == size
    assert np.array_equal(np.asarray(mask), np.asarray(rgba)[:, :, 3])
    flat = Image.open(io.BytesIO(client.remove_background(data, background="#00ff00", format="jpeg").data))
    assert flat.format == "JPEG" and flat.mode == "RGB" and flat.size == size


def test_background_remover_absent_model_variant_is_named(client):
    """Only `u2net` (human seg) is exported in the test repository: model=u2net needs u2net_general."""
    with pytest.raises(ModelUnavailable, match="u2net_general"):
        client.remove_background(photo(ONE_FACE), model="u2net")


@pytest.mark.parametrize("processor", ["face_enhancer", "background_remover", "face_analyser"])
def test_processors_refuse_a_file_that_is_not_an_image(client, processor):
    with pytest.raises(InvalidImage, match="unsupported image type"):
        client.run_processor(processor, b"%PDF-1.4 not an image")


def test_jpeg_without_background_is_a_bad_option_at_triton(client, triton_server):
    """Sent raw (the client would refuse nothing here: the rule lives in the step)."""
    with pytest.raises(InvalidOption, match="format=jpeg has no alpha"):
        client.remove_background(photo(ONE_FACE), format="jpeg")
