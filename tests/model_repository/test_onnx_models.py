"""The face-swap and frame-enhancer ONNX models on the real embedded Triton (tiny exports).

They are not in the committed repository (``facecraft export <name>`` writes their committed
config, export/configs/): ``exported_models`` (tests/fixtures/exported.py) exports and loads them
into the session Triton for this module and removes them at its end.
"""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.export.catalog import SWAP_AND_ENHANCE_MODELS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loaded(exported_models):
    return exported_models


def _infer(server, model: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, network_timeout=300, connection_timeout=300)
    try:
        inputs = []
        for name, array in arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs).as_numpy("output")
    finally:
        client.close()


def test_exported_models_load_with_their_committed_config_and_are_labelled_untrained(loaded):
    states = loaded.model_states()
    log = loaded.log_path.read_text()
    for name in SWAP_AND_ENHANCE_MODELS:
        assert states.get(name) == "READY"
        assert f"onnxruntime backend: {name}: UNTRAINED weights" in log


@pytest.mark.parametrize(("name", "scale"), [("realesrgan_x4plus", 4), ("realesrgan_x2plus", 2)])
def test_realesrgan_serves_any_tile_size_as_one_batch(loaded, name, scale):
    rng = np.random.default_rng(0)
    for shape in ((3, 3, 24, 40), (1, 3, 30, 16)):  # a batch of tiles, then another size
        out = _infer(loaded, name, {"input": rng.uniform(0, 1, shape).astype(np.float32)})
        assert out.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_arcface_and_swap_generator_keep_the_official_io(loaded):
    rng = np.random.default_rng(1)
    faces = rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    assert _infer(loaded, "arcface_w600k_r50", {"input": faces}).shape == (2, 512)
    latent = rng.normal(size=(2, 512)).astype(np.float32)
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    target = rng.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32)
    swapped = _infer(loaded, "inswapper_128", {"target": target, "source": latent})
    assert swapped.shape == (2, 3, 128, 128) and swapped.min() >= 0.0 and swapped.max() <= 1.0


def test_frame_enhancer_ensemble_upscales_a_photo_exactly(loaded, faces_dir):
    import io

    import tritonclient.http as httpclient
    from PIL import Image

    photo = Image.open(faces_dir / "fr__obama_small.jpg").convert("RGB").crop((0, 0, 101, 75))  # odd sides
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    arrays = {
        "IMAGE": (np.array([[buffer.getvalue()]], dtype=np.object_), "BYTES"),
        "SCALE": (np.array([[b"2"]], dtype=np.object_), "BYTES"),
        "TILE": (np.array([[32]], dtype=np.int32), "INT32"),
        "OVERLAP": (np.array([[8]], dtype=np.int32), "INT32"),
    }
    client = httpclient.InferenceServerClient(loaded.http_url, network_timeout=300, connection_timeout=300)
    try:
        inputs = []
        for name, (array, datatype) in arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer("frame_enhancer", inputs)
    finally:
        client.close()
    out = Image.open(io.BytesIO(result.as_numpy("OUTPUT").reshape(-1)[0]))
    assert out.format == "PNG" and out.size == (202, 150)
    assert result.as_numpy("OUTPUT_SIZE").reshape(-1).tolist() == [202, 150]


# -- face_swapper: the ensemble over the exported swap models ---------------------------------------


def _png(path) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _swap_footprint(rgb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(pixels the paste-back may touch, each face's own footprint) of the target ``rgb``: the
    128 swap crop of every face, warped back into the image."""
    import cv2

    from facecraft.pipeline.processor_stages import detect_all_faces
    from facecraft.pipeline.swap import SWAP_SIZE, swap_input

    _, _, landmarks, _ = detect_all_faces(rgb, 16, 0)
    h, w = rgb.shape[:2]
    footprints = []
    for points in landmarks:
        _, affine = swap_input(rgb, points)
        inverse = cv2.invertAffineTransform(affine.astype(np.float64))
        ones = np.ones((SWAP_SIZE, SWAP_SIZE), np.float32)
        footprints.append(cv2.warpAffine(ones, inverse, (w, h), borderValue=0.0) > 0)
    return np.logical_or.reduce(footprints), footprints


@pytest.fixture(scope="module")
def swap_client(loaded):
    from facecraft.client.portrait_client import PortraitClient

    with PortraitClient(loaded.grpc_url, "grpc") as client:
        yield client


@pytest.mark.parametrize(
    ("source", "target", "faces"),
    [
        ("dlib__Tom_Cruise_avp_2014_4.jpg", "fr__obama_small.jpg", 1),
        ("fr__obama_small.jpg", "fr__two_people.jpg", 2),
    ],
)
def test_face_swapper_changes_every_target_face_and_nothing_outside(
    swap_client, faces_dir, source, target, faces
):
    import io

    from PIL import Image

    target_png = _png(faces_dir / target)
    original = np.asarray(Image.open(io.BytesIO(target_png)).convert("RGB"))
    result = swap_client.swap_faces((faces_dir / source).read_bytes(), target_png)
    swapped = np.asarray(Image.open(io.BytesIO(result.data)))
    assert swapped.shape == original.shape and result.output_size == (original.shape[1], original.shape[0])
    assert result.face_count == faces
    touched, footprints = _swap_footprint(original)
    assert len(footprints) == faces
    assert np.array_equal(swapped[~touched], original[~touched])  # PNG: bit-exact outside the crops
    difference = np.abs(swapped.astype(np.int16) - original.astype(np.int16)).mean(axis=2)
    for footprint in footprints:
        assert difference[footprint].mean() > 5  # every face replaced (untrained generator output)


def test_face_swapper_one_target_face_and_enhance(swap_client, faces_dir):
    import io

    from PIL import Image

    target_png = _png(faces_dir / "fr__two_people.jpg")
    original = np.asarray(Image.open(io.BytesIO(target_png)).convert("RGB"))
    source = (faces_dir / "fr__obama_small.jpg").read_bytes()
    result = swap_client.swap_faces(source, target_png, target_face=0, enhance=True)
    swapped = np.asarray(Image.open(io.BytesIO(result.data)))
    assert result.face_count == 1
    _, footprints = _swap_footprint(original)
    difference = np.abs(swapped.astype(np.int16) - original.astype(np.int16)).mean(axis=2)
    assert difference[footprints[0]].mean() > 5
    assert np.array_equal(swapped[footprints[1] & ~footprints[0]], original[footprints[1] & ~footprints[0]])


def test_face_swapper_source_and_target_without_a_face_are_distinct_errors(swap_client, faces_dir):
    from facecraft.client.errors import NoFaceDetected, NoSourceFace

    face, giraffe = (
        (faces_dir / "fr__obama_small.jpg").read_bytes(),
        (faces_dir / "dlib__giraffe.jpg").read_bytes(),
    )
    with pytest.raises(NoSourceFace, match="source"):
        swap_client.swap_faces(giraffe, face)
    with pytest.raises(NoFaceDetected, match="no face"):
        swap_client.swap_faces(face, giraffe)
    with pytest.raises(NoSourceFace, match="source_face=3"):
        swap_client.swap_faces(face, face, source_face=3)


def test_cli_swaps_the_source_face_into_every_target_photo(loaded, faces_dir, tmp_path, capsys):
    from PIL import Image

    from facecraft.cli import main

    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("fr__two_people.jpg", "dlib__giraffe.jpg"):
        (targets / name).write_bytes((faces_dir / name).read_bytes())
    out = tmp_path / "out"
    source = faces_dir / "fr__obama_small.jpg"
    code = main(
        ["process", str(targets), "-o", str(out), "--url", loaded.grpc_url,
         "--processor", "face_swapper", "--source", str(source)]
    )  # fmt: skip
    assert code == 1  # the giraffe has no face
    assert [p.name for p in out.iterdir()] == ["fr__two_people.png"]
    assert Image.open(out / "fr__two_people.png").size == Image.open(targets / "fr__two_people.jpg").size
    assert capsys.readouterr().out.splitlines()[-1].split()[:3] == ["1", "1", "0"]
    refused = main(
        ["process", str(targets), "-o", str(out), "--url", loaded.grpc_url, "--processor", "face_swapper"]
    )
    assert refused == 2 and "needs --source" in capsys.readouterr().err


# -- face_enhancer background_enhance: Real-ESRGAN background, CodeFormer faces ----------------------


def test_face_enhancer_background_enhance_pastes_codeformer_faces_into_the_realesrgan_background(
    swap_client, faces_dir
):
    """The ×2 output is frame_enhancer's scale=2 image (same tiles: the defaults) away from the
    faces and CodeFormer's restoration on them; plain face_enhancer keeps the input's size and
    background, which is not the Real-ESRGAN one."""
    import io

    import cv2
    from PIL import Image

    from facecraft.pipeline.align import prepare_face
    from facecraft.pipeline.processor_stages import detect_all_faces

    data = _png(faces_dir / "fr__obama_small.jpg")
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = rgb.shape[:2]

    def pixels(result) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")).astype(np.int16)

    both = swap_client.enhance_faces(data, background_enhance=True)
    background = swap_client.run_processor("frame_enhancer", data, scale="2")
    plain = swap_client.enhance_faces(data)
    assert both.output_size == background.output_size == (2 * w, 2 * h) and plain.output_size == (w, h)
    enhanced, upscaled, restored = pixels(both), pixels(background), pixels(plain)
    _, _, landmarks, _ = detect_all_faces(rgb, 16, 0)
    near = np.zeros((2 * h, 2 * w), bool)  # each face's 512 crop, warped back at the ×2 scale
    inner = np.zeros_like(near)
    for points in landmarks:
        _, affine = prepare_face(rgb, points)
        back = 2.0 * cv2.invertAffineTransform(affine.astype(np.float64))  # crop → canvas pixels
        near |= cv2.warpAffine(np.ones((512, 512), np.float32), back, (2 * w, 2 * h)) > 0
        x, y = (2 * points[27:36].mean(axis=0)).astype(int)  # the nose, on the canvas
        inner[y - 10 : y + 10, x - 10 : x + 10] = True
    near = cv2.dilate(near.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert (~near).mean() > 0.2 and inner.any()
    assert np.array_equal(enhanced[~near], upscaled[~near])  # the background is Real-ESRGAN's
    assert np.abs(enhanced[inner] - upscaled[inner]).mean() > 5  # the faces are not (CodeFormer's)
    resized = cv2.resize(restored.astype(np.uint8), (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    assert np.abs(enhanced[~near] - resized[~near].astype(np.int16)).mean() > 5  # not the input's


def test_cli_swaps_the_source_face_into_every_frame_of_a_video(loaded, faces_dir, tmp_path, capsys):
    """`facecraft process --processor face_swapper --source face.jpg clip.mp4 -o out.mp4`: the
    source embedded once (ArcFace +1 for the whole clip), every frame kept; a faceless source
    exits 1 before any frame, leaving no output."""
    from facecraft.cli import main
    from facecraft.pipeline.video import probe_video
    from tests.fixtures.exported import model_counts
    from tests.fixtures.videos import video_packets, write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=5, fps=5, faceless=(2,))
    out = tmp_path / "out.mp4"
    arcface, generator = model_counts(loaded, "arcface_w600k_r50"), model_counts(loaded, "inswapper_128")
    base = ["process", str(clip), "-o", str(out), "--url", loaded.grpc_url, "--processor", "face_swapper"]
    assert main([*base, "--source", str(faces_dir / "dlib__Tom_Cruise_avp_2014_4.jpg")]) == 0
    assert "5 frames at 5 fps" in capsys.readouterr().out
    assert model_counts(loaded, "arcface_w600k_r50")[1] - arcface[1] == 1
    assert model_counts(loaded, "inswapper_128")[1] - generator[1] == 4  # the frames with a face
    info = probe_video(out)
    assert (info.frames, info.width, info.height) == (5, 128, 96) and info.duration_s == probe_video(
        clip
    ).duration_s
    assert video_packets(out, "audio") == video_packets(clip, "audio")
    refused = tmp_path / "refused.mp4"
    giraffe = ["--source", str(faces_dir / "dlib__giraffe.jpg")]
    assert main([*base[:3], str(refused), *base[4:], *giraffe]) == 1
    assert "no_source_face" in capsys.readouterr().err and not refused.exists()
