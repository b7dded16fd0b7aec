"""The processor steps (facecraft.pipeline.processor_stages) without Triton: options, faces, the
one-batch CodeFormer call, paste-back, analysis JSON, background cut-out. A BLS call is given as a
plain function of numpy arrays (what `triton_adapter.bls_infer` does inside Triton)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from facecraft.pipeline import processor_stages as ps
from facecraft.pipeline.errors import PipelineError
from tests.fixtures.images import encode


class RecordingCodeFormer:
    """Stands in for the `codeformer` BLS call: returns a flat mid-grey face per input, records
    the batches it received."""

    def __init__(self):
        self.batches: list[tuple[int, ...]] = []
        self.weights: list[np.ndarray] = []

    def __call__(self, model, inputs, outputs):
        assert model == "codeformer" and outputs == ("output",)
        self.batches.append(inputs["input"].shape)
        self.weights.append(inputs["w"])
        return {"output": np.zeros_like(inputs["input"])}


@pytest.fixture(scope="module")
def group(faces_dir):
    data = (faces_dir / "dlib__2008_002079.jpg").read_bytes()
    outputs = ps.faces_stage({"IMAGE": np.array([data], dtype=np.object_)})
    return data, outputs


def test_faces_stage_returns_every_face_largest_first(group):
    _, outputs = group
    boxes = outputs["FACE_BOXES"]
    assert boxes.shape == (6, 4) and outputs["FACE_LANDMARKS"].shape == (6, 68, 2)
    assert outputs["FACE_SCORES"].shape == (6,) and int(outputs["FACE_COUNT"][0]) == 6
    areas = boxes[:, 2] * boxes[:, 3]
    assert list(areas) == sorted(areas, reverse=True)


def test_faces_stage_max_faces_keeps_the_largest_and_counts_all(group):
    data, full = group
    outputs = ps.faces_stage(
        {"IMAGE": np.array([data], dtype=np.object_), "MAX_FACES": np.array([2], dtype=np.int32)}
    )
    assert np.array_equal(outputs["FACE_BOXES"], full["FACE_BOXES"][:2])
    assert int(outputs["FACE_COUNT"][0]) == 6


def test_faces_stage_decodes_at_full_resolution():
    big = np.full((2400, 3000, 3), 128, np.uint8)  # above the portrait's 2048 working side
    with pytest.raises(PipelineError, match="no_face_detected: faces: no face found in a 3000x2400"):
        ps.faces_stage({"IMAGE": np.array([encode(big)], dtype=np.object_)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"MAX_FACES": np.array([0], np.int32)}, "max_faces=0 is outside 1..32"),
        ({"MIN_FACE_SIZE": np.array([1, 2], np.int32)}, "min_face_size must have 1 value"),
    ],
)
def test_bad_option_tensors_name_the_option(inputs, message):
    with pytest.raises(PipelineError, match=f"invalid_option: faces: {message}"):
        ps.faces_stage({"IMAGE": np.array([b"x"], dtype=np.object_), **inputs})


def test_all_faces_go_to_codeformer_in_one_batch(group):
    _, outputs = group
    codeformer = RecordingCodeFormer()
    enhanced = ps.enhance_faces(outputs["RGB"], outputs["FACE_LANDMARKS"], 0.3, 1.0, codeformer, max_batch=16)
    assert codeformer.batches == [(6, 3, 512, 512)]
    assert codeformer.weights[0].shape == (6, 1) and np.allclose(codeformer.weights[0], 0.3)
    assert enhanced.shape == outputs["RGB"].shape and enhanced.dtype == np.uint8
    grey = np.abs(enhanced.astype(int) - 128).sum(axis=2) <= 3  # the stand-in's flat faces
    for x, y, w, h in outputs["FACE_BOXES"].astype(int):
        assert grey[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].mean() > 0.9


def test_batches_are_chunked_by_the_served_max_batch_size(group):
    _, outputs = group
    codeformer = RecordingCodeFormer()
    ps.enhance_faces(outputs["RGB"], outputs["FACE_LANDMARKS"], 0.7, 1.0, codeformer, max_batch=4)
    assert [shape[0] for shape in codeformer.batches] == [4, 2]


def test_blend_zero_keeps_the_input(group):
    _, outputs = group
    kept = ps.enhance_faces(outputs["RGB"], outputs["FACE_LANDMARKS"], 0.7, 0.0, RecordingCodeFormer(), 16)
    assert np.array_equal(kept, outputs["RGB"])


def test_face_enhance_stage_encodes_the_whole_image(group):
    _, outputs = group
    result = ps.face_enhance_stage(
        {
            "RGB": outputs["RGB"],
            "FACE_LANDMARKS": outputs["FACE_LANDMARKS"],
            "FORMAT": np.array([b"jpeg"], np.object_),
        },
        infer=RecordingCodeFormer(),
        max_batch=16,
    )
    image = Image.open(io.BytesIO(result["OUTPUT"][0]))
    h, w = outputs["RGB"].shape[:2]
    assert image.format == "JPEG" and image.size == (w, h) and tuple(result["OUTPUT_SIZE"]) == (w, h)


def test_face_analyse_stage_json_and_annotation(group):
    _, outputs = group
    inputs = {
        name: outputs[name] for name in ("RGB", "FACE_BOXES", "FACE_SCORES", "FACE_LANDMARKS", "FACE_COUNT")
    }
    plain = ps.face_analyse_stage(inputs)
    report = json.loads(plain["JSON"][0])
    assert report["face_count"] == 6 and len(report["faces"]) == 6 and plain["ANNOTATED"][0] == b""
    first = report["faces"][0]
    assert set(first) == {"box", "score", "landmarks", "roll"} and len(first["landmarks"]) == 68
    annotated = ps.face_analyse_stage({**inputs, "ANNOTATE": np.array([True])})["ANNOTATED"][0]
    assert Image.open(io.BytesIO(annotated)).size == outputs["RGB"].shape[1::-1]


def test_roll_is_the_eye_line_angle():
    points = np.zeros((68, 2), np.float32)
    points[36:42] = (100, 100)
    points[42:48] = (200, 200)  # right eye 45 degrees lower
    report = ps.analyse_faces(np.zeros((1, 4)), np.ones(1), points[np.newaxis], 1)
    assert report["faces"][0]["roll"] == pytest.approx(45.0)


class FlatU2Net:
    def __init__(self, served=("u2net",)):
        self.served = served
        self.models: list[str] = []

    def __call__(self, model, inputs, outputs):
        self.models.append(model)
        if model not in self.served:
            raise PipelineError("model_unavailable", "bls", f"{model}: Request for unknown model")
        assert inputs["input"].shape == (1, 3, 320, 320)
        seg = np.zeros((1, 1, 320, 320), np.float32)
        seg[..., 80:240, 80:240] = 1.0  # a centred square is foreground
        return {"output": seg}


def _remove(image: bytes, infer, **options) -> bytes:
    tensors = {"IMAGE": np.array([image], dtype=np.object_)}
    for name, value in options.items():
        tensors[name] = np.asarray(value)
    return ps.background_remove_stage(tensors, infer=infer)["OUTPUT"][0]


def test_background_remover_alpha_at_full_resolution():
    rgb = np.random.default_rng(0).integers(0, 255, (500, 700, 3), dtype=np.uint8)
    out = Image.open(io.BytesIO(_remove(encode(rgb, "PNG"), FlatU2Net())))
    assert out.mode == "RGBA" and out.size == (700, 500)
    alpha = np.asarray(out)[:, :, 3]
    assert alpha[250, 350] == 255 and alpha[5, 5] == 0
    mask = Image.open(io.BytesIO(_remove(encode(rgb, "PNG"), FlatU2Net(), MASK_ONLY=[True])))
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), alpha)
    flat = Image.open(
        io.BytesIO(_remove(encode(rgb, "PNG"), FlatU2Net(), BACKGROUND=np.array([0, 255, 0], np.uint8),
                           FORMAT=np.array([b"jpeg"], np.object_)))
    )  # fmt: skip
    assert flat.format == "JPEG" and np.abs(np.asarray(flat)[5, 5].astype(int) - (0, 255, 0)).max() < 40


def test_background_remover_maps_the_model_option_and_names_an_absent_variant():
    image = encode(np.full((64, 64, 3), 90, np.uint8), "PNG")
    u2net = FlatU2Net()
    _remove(image, u2net)
    assert u2net.models == ["u2net"]  # u2net_human_seg (default) is the Triton model `u2net`
    with pytest.raises(
        PipelineError,
        match="model_unavailable: background_remove: model=u2netp needs the Triton model u2netp",
    ):
        _remove(image, FlatU2Net(), SEG_MODEL=np.array([b"u2netp"], np.object_))


def test_jpeg_without_background_or_mask_is_refused():
    with pytest.raises(PipelineError, match="format=jpeg has no alpha"):
        _remove(b"unused", FlatU2Net(), FORMAT=np.array([b"jpeg"], np.object_))


class NearestRealESRGAN:
    """Stands in for the Real-ESRGAN BLS call: nearest-neighbour ×scale, records the batches."""

    def __init__(self, unavailable: bool = False):
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.unavailable = unavailable

    def __call__(self, model, inputs, outputs):
        assert outputs == ("output",)
        if self.unavailable:
            raise PipelineError("model_unavailable", "bls", f"{model}: not found")
        self.calls.append((model, inputs["input"].shape))
        scale = 4 if model == "realesrgan_x4plus" else 2
        return {"output": inputs["input"].repeat(scale, axis=2).repeat(scale, axis=3)}


def _enhance(image: bytes, infer, max_batch: int = 16, **options):
    tensors = {"IMAGE": np.array([image], dtype=np.object_)}
    for name, value in options.items():
        tensors[name] = np.asarray(value)
    return ps.enhance_frame_stage(tensors, infer=infer, max_batch=max_batch)


def test_frame_enhancer_upscales_exactly_and_sends_the_tiles_as_one_batch():
    rgb = np.random.default_rng(0).integers(0, 255, (90, 141, 3), dtype=np.uint8)
    model = NearestRealESRGAN()
    out = _enhance(
        encode(rgb, "PNG"),
        model,
        max_batch=32,
        TILE=np.array([32], np.int32),
        OVERLAP=np.array([8], np.int32),
    )
    image = np.asarray(Image.open(io.BytesIO(out["OUTPUT"][0])))
    assert image.shape == (360, 564, 3) and out["OUTPUT_SIZE"].tolist() == [564, 360]
    np.testing.assert_array_equal(image, rgb.repeat(4, axis=0).repeat(4, axis=1))
    assert len(model.calls) == 1 and model.calls[0][0] == "realesrgan_x4plus"  # 24 tiles, one batch
    assert model.calls[0][1] == (24, 3, 32, 32)
    x2 = NearestRealESRGAN()
    out = _enhance(encode(rgb, "PNG"), x2, max_batch=4, SCALE=np.array([b"2"], np.object_),
                   TILE=np.array([32], np.int32), OVERLAP=np.array([8], np.int32))  # fmt: skip
    assert out["OUTPUT_SIZE"].tolist() == [282, 180]
    assert {m for m, _ in x2.calls} == {"realesrgan_x2plus"} and max(s[0] for _, s in x2.calls) <= 4
    assert len(x2.calls) > 1  # chunked by the served max_batch_size


def test_frame_enhancer_refuses_bad_options_and_names_an_absent_model():
    image = encode(np.full((64, 64, 3), 90, np.uint8), "PNG")
    with pytest.raises(PipelineError, match="invalid_option: enhance_frame: .*scale"):
        _enhance(image, NearestRealESRGAN(), SCALE=np.array([b"3"], np.object_))
    with pytest.raises(PipelineError, match="invalid_option: enhance_frame: tile must be even"):
        _enhance(image, NearestRealESRGAN(), TILE=np.array([33], np.int32))
    with pytest.raises(
        PipelineError,
        match="model_unavailable: enhance_frame: scale=2 needs the Triton model realesrgan_x2plus",
    ):
        _enhance(image, NearestRealESRGAN(unavailable=True), SCALE=np.array([b"2"], np.object_))


class CodeFormerAndRealESRGAN:
    """codeformer → flat mid-grey faces; realesrgan_x2plus → nearest ×2; records the models."""

    def __init__(self, upscaler_served: bool = True):
        self.models: list[str] = []
        self.upscaler_served = upscaler_served

    def __call__(self, model, inputs, outputs):
        self.models.append(model)
        if model == "codeformer":
            return {"output": np.zeros_like(inputs["input"])}
        if not self.upscaler_served:
            raise PipelineError("model_unavailable", "bls", f"{model}: not found")
        return NearestRealESRGAN()(model, inputs, outputs)


def test_background_enhance_upscales_x2_and_pastes_the_faces_at_the_new_scale(group):
    _, outputs = group
    rgb, landmarks = outputs["RGB"], outputs["FACE_LANDMARKS"]
    infer = CodeFormerAndRealESRGAN()
    result = ps.face_enhance_stage(
        {"RGB": rgb, "FACE_LANDMARKS": landmarks, "BACKGROUND_ENHANCE": np.array([True])},
        infer=infer,
        max_batch=16,
    )
    h, w = rgb.shape[:2]
    image = np.asarray(Image.open(io.BytesIO(result["OUTPUT"][0])))
    assert image.shape[:2] == (2 * h, 2 * w) and tuple(result["OUTPUT_SIZE"]) == (2 * w, 2 * h)
    assert infer.models[0] == "realesrgan_x2plus" and "codeformer" in infer.models
    nose = landmarks.reshape(-1, 68, 2)[0, 30]
    x, y = int(round(nose[0] * 2)), int(round(nose[1] * 2))
    assert np.abs(image[y, x].astype(int) - 128).max() <= 2  # the restored (mid-grey) face is there
    far = (2, 2)  # a background corner is the ×2 upscale of the input's
    assert np.array_equal(image[far], rgb[far[0] // 2, far[1] // 2])
    with pytest.raises(
        PipelineError,
        match="model_unavailable: face_enhance: background_enhance needs the Triton model realesrgan_x2plus",
    ):
        ps.face_enhance_stage(
            {"RGB": rgb, "FACE_LANDMARKS": landmarks, "BACKGROUND_ENHANCE": np.array([True])},
            infer=CodeFormerAndRealESRGAN(upscaler_served=False),
            max_batch=16,
        )


# -- face_swap: the source identity once per job (SOURCE_EMBEDDING) ---------------------------------


class RecordingSwapModels:
    """Stands in for the BLS calls of `face_swap`: ArcFace returns a fixed embedding, the generator
    its target crops inverted; records the models called."""

    def __init__(self):
        self.models: list[str] = []

    def __call__(self, model, inputs, outputs):
        self.models.append(model)
        if model == "arcface_w600k_r50":
            assert inputs["input"].shape == (1, 3, 112, 112)
            return {"output": np.linspace(-1, 1, 512, dtype=np.float32)[np.newaxis]}
        assert model == "inswapper_128"
        return {"output": 1.0 - inputs["target"]}


def _swap(infer, **tensors):
    arrays = {
        k: v if isinstance(v, np.ndarray) else np.array([v], dtype=np.object_) for k, v in tensors.items()
    }
    emap = np.eye(512, dtype=np.float32)
    return ps.face_swap_stage(arrays, infer=infer, emap=lambda: emap, max_batch=16)


def test_the_source_identity_alone_then_given_per_frame_gives_the_same_swap(faces_dir):
    source = (faces_dir / "fr__obama_small.jpg").read_bytes()
    target = (faces_dir / "dlib__Tom_Cruise_avp_2014_4.jpg").read_bytes()
    direct = RecordingSwapModels()
    once = _swap(direct, SOURCE=source, TARGET=target)
    assert direct.models == ["arcface_w600k_r50", "inswapper_128"]
    identity = RecordingSwapModels()
    embedding = _swap(identity, SOURCE=source)  # the face_swapper_source ensemble's step
    assert set(embedding) == {"SOURCE_EMBEDDING"} and identity.models == ["arcface_w600k_r50"]
    assert embedding["SOURCE_EMBEDDING"].shape == (512,) and embedding["SOURCE_EMBEDDING"].dtype == np.float32
    frame = RecordingSwapModels()
    given = _swap(frame, SOURCE_EMBEDDING=embedding["SOURCE_EMBEDDING"], TARGET=target)
    assert frame.models == ["inswapper_128"]  # no ArcFace call for a frame
    assert given["OUTPUT"][0] == once["OUTPUT"][0]


def test_source_and_its_embedding_exactly_one_and_a_faceless_source_first(faces_dir):
    source = (faces_dir / "fr__obama_small.jpg").read_bytes()
    giraffe = (faces_dir / "dlib__giraffe.jpg").read_bytes()
    embedding = np.ones(512, dtype=np.float32)
    with pytest.raises(PipelineError, match="exactly one") as both:
        _swap(RecordingSwapModels(), SOURCE=source, SOURCE_EMBEDDING=embedding, TARGET=source)
    assert both.value.code == "invalid_option"
    with pytest.raises(PipelineError, match="exactly one"):
        _swap(RecordingSwapModels(), TARGET=source)
    with pytest.raises(PipelineError, match="512 finite") as bad:
        _swap(RecordingSwapModels(), SOURCE_EMBEDDING=np.zeros(512, np.float32), TARGET=source)
    assert bad.value.code == "invalid_option"
    for tensors in ({"SOURCE": giraffe}, {"SOURCE": giraffe, "TARGET": giraffe}):
        infer = RecordingSwapModels()
        with pytest.raises(PipelineError) as faceless:
            _swap(infer, **tensors)
        assert faceless.value.code == "no_source_face" and infer.models == []  # before any model call
