import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from facecraft.pipeline.errors import PipelineError
from facecraft.pipeline.options import DEFAULT_OPTIONS, Options, resolve_fidelity, resolve_options


def test_defaults_match_the_contract():
    options = resolve_options()
    assert options == Options(648, 648, (240, 240, 240), 0.3, True, 200, False)
    assert resolve_fidelity() == pytest.approx(0.7)


def test_vector_layout():
    vector = Options(100, 200, (1, 2, 3), 0.5, False, 64, True).to_vector()
    assert vector.dtype == np.float32 and vector.shape == (9,)
    assert vector.tolist() == [100, 200, 1, 2, 3, 0.5, 0, 64, 1]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"width": 63}, "width"),
        ({"width": 4097}, "width"),
        ({"height": 0}, "height"),
        ({"width": 100.5}, "width"),
        ({"width": True}, "width"),
        ({"face_margin": -0.1}, "face_margin"),
        ({"face_margin": float("nan")}, "face_margin"),
        ({"face_margin": 2.5}, "face_margin"),
        ({"max_jpeg_kb": 7}, "max_jpeg_kb"),
        ({"background": (1, 2)}, "background"),
        ({"background": (0, 256, 0)}, "background[1]"),
        ({"oval_mask": 2}, "oval_mask"),
        ({"touch_up": "yes"}, "touch_up"),
    ],
)
def test_bad_option_is_named(kwargs, named):
    with pytest.raises(PipelineError) as caught:
        resolve_options(**kwargs)
    assert caught.value.code == "invalid_option"
    assert caught.value.step == "decode"
    assert named in caught.value.detail


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("inf")])
def test_bad_fidelity_is_named(bad):
    with pytest.raises(PipelineError, match="invalid_option: decode: fidelity"):
        resolve_fidelity(bad)


def test_numpy_scalars_are_accepted():
    options = resolve_options(width=np.int32(320), face_margin=np.float32(0.5), oval_mask=np.bool_(False))
    assert (options.width, options.face_margin, options.oval_mask) == (320, 0.5, False)


@given(
    width=st.integers(64, 4096),
    height=st.integers(64, 4096),
    background=st.tuples(*[st.integers(0, 255)] * 3),
    face_margin=st.floats(0.0, 2.0, width=32),
    oval_mask=st.booleans(),
    max_jpeg_kb=st.integers(8, 10240),
    touch_up=st.booleans(),
)
def test_options_round_trip_through_the_vector(
    width, height, background, face_margin, oval_mask, max_jpeg_kb, touch_up
):
    options = resolve_options(width, height, background, face_margin, oval_mask, max_jpeg_kb, touch_up)
    assert Options.from_vector(options.to_vector()) == options


def test_from_vector_rejects_a_wrong_length():
    with pytest.raises(PipelineError, match="OPTIONS has 8 values"):
        Options.from_vector(DEFAULT_OPTIONS.to_vector()[:8])


@pytest.mark.parametrize("position", [0, 2, 5, 7])
def test_from_vector_rejects_non_finite_values(position):
    vector = DEFAULT_OPTIONS.to_vector()
    vector[position] = np.nan
    with pytest.raises(PipelineError, match="invalid_option: compose: OPTIONS holds non-finite"):
        Options.from_vector(vector)


# --- ID-photo presets -------------------------------------------------------------------------


def test_id_photo_request_round_trips_through_its_vector():
    from facecraft.pipeline.options import IdPhotoRequest, resolve_id_photo

    request = resolve_id_photo("Schengen", b"4x6")
    assert request == IdPhotoRequest("schengen", "4x6")
    assert IdPhotoRequest.from_vector(request.to_vector()) == request
    assert IdPhotoRequest.from_vector(IdPhotoRequest().to_vector()) == IdPhotoRequest()
    assert resolve_id_photo("", "") == IdPhotoRequest()


@pytest.mark.parametrize(
    ("preset", "layout", "message"),
    [
        ("mars", None, "preset='mars' is not one of"),
        (None, "a4", "needs a preset"),
        ("schengen", "a3", "layout='a3'"),
    ],
)
def test_bad_id_photo_options_are_invalid_option(preset, layout, message):
    from facecraft.pipeline.options import resolve_id_photo

    with pytest.raises(PipelineError, match=message) as caught:
        resolve_id_photo(preset, layout)
    assert caught.value.code == "invalid_option"


def test_apply_preset_fixes_size_background_and_cap():
    from facecraft.pipeline.options import apply_preset

    options = apply_preset(resolve_options(), "us_passport", background_set=False, max_jpeg_kb_set=False)
    assert (options.width, options.height, options.oval_mask) == (600, 600, False)
    assert options.background == (255, 255, 255) and options.max_jpeg_kb == 240
    lower = apply_preset(
        resolve_options(max_jpeg_kb=100), "us_passport", background_set=False, max_jpeg_kb_set=True
    )
    assert lower.max_jpeg_kb == 100
    higher = apply_preset(
        resolve_options(max_jpeg_kb=900), "us_passport", background_set=False, max_jpeg_kb_set=True
    )
    assert higher.max_jpeg_kb == 240  # never above the authority's limit
    own = apply_preset(
        resolve_options(background=(1, 2, 3)), "schengen", background_set=True, max_jpeg_kb_set=False
    )
    assert own.background == (1, 2, 3) and own.max_jpeg_kb == 200
    assert (
        apply_preset(resolve_options(), None, background_set=False, max_jpeg_kb_set=False)
        == resolve_options()
    )
