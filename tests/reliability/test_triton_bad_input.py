"""The bad-input corpus sent straight to the Triton ensembles (tritonclient over HTTP).

Every case gets its documented answer (docs/triton.md "Errors": HTTP 400 with ``<code>: <step>:``),
Triton stays live after each one, and a good request still works after the whole corpus — so
no hostile upload can take a Python stub down or poison a batch.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.reliability import corpus
from tests.reliability.test_decode_corpus import DECODE_DEFECTS
from tests.reliability.triton_calls import decoded_outputs, infer

pytestmark = pytest.mark.integration

CASE_NAMES = [case.name for case in corpus.build_input_cases(np.zeros((64, 64, 3), np.uint8))]
OPTION_CASES = [case for case in corpus.build_option_cases() if case.tensors is not None]
# Every upload case is sent to both ensembles except the slow enhanced path for success cases.
MODEL = "portrait_basic"


@pytest.fixture(scope="module")
def cases(astronaut_rgb) -> dict[str, corpus.InputCase]:
    return {case.name: case for case in corpus.build_input_cases(astronaut_rgb)}


@pytest.fixture(scope="module")
def client(triton_server, request):
    import tritonclient.http as httpclient

    from tests.fixtures.triton import restart_if_unhealthy

    restart_if_unhealthy(triton_server, request.node.nodeid)  # reference_box calls it at set-up

    with_timeout = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=300.0)
    yield with_timeout
    with_timeout.close()


@pytest.fixture(scope="module")
def reference_box(client, cases) -> np.ndarray:
    """FACE_BOX of the plain upright astronaut JPEG."""
    answer = infer(client, MODEL, cases["jpeg_named_txt"].data)
    assert answer.ok, answer.message
    return answer.outputs["FACE_BOX"]


def assert_still_serving(client) -> None:
    assert client.is_server_live(), "Triton died"
    assert client.is_model_ready(MODEL), f"{MODEL} is no longer ready"


@pytest.mark.parametrize("name", [pytest.param(n, marks=DECODE_DEFECTS.get(n, ())) for n in CASE_NAMES])
def test_upload_case_gets_its_documented_answer(name, cases, client, reference_box):
    case = cases[name]
    answer = infer(client, MODEL, case.data)
    try:
        if case.triton_error is None:
            assert answer.ok, f"{name} must succeed, got {answer.status}: {answer.message}"
            png, jpeg = decoded_outputs(answer)
            assert png.mode == "RGBA" and png.size == (648, 648)
            assert jpeg.format == "JPEG" and jpeg.size == (648, 648)
            assert int(answer.outputs["FACE_COUNT"][0]) >= 1
            box = answer.outputs["FACE_BOX"]
            # Every accepted variant of the same photo finds the same face (EXIF honoured: the
            # rotated file's box lands where the upright photo's box is, not rotated 90°).
            tolerance = 0.1 * reference_box[2:].max()
            assert np.abs(box.astype(float) - reference_box).max() <= tolerance, (box, reference_box)
        else:
            assert not answer.ok, f"{name} must be refused with {case.triton_error}"
            assert answer.status == "400", (answer.status, answer.message)
            assert answer.error_code() == case.triton_error, answer.message
            assert f"{case.triton_error}: decode" in answer.message or case.triton_error == "no_face_detected"
    finally:
        assert_still_serving(client)


def test_exif_orientation_moves_the_face_box(cases, client, reference_box, astronaut_rgb):
    """The stored pixels of the EXIF case are rotated; without orientation the box would differ."""
    stored_sideways = np.ascontiguousarray(np.rot90(astronaut_rgb, k=1))
    answer = infer(client, MODEL, corpus.encode_image(stored_sideways, "JPEG", quality=92))
    if not answer.ok:  # a sideways face may simply not be found by a frontal detector
        assert answer.error_code() == "no_face_detected", answer.message
        return
    assert (
        np.abs(answer.outputs["FACE_BOX"].astype(float) - reference_box).max() > 0.1 * reference_box[2:].max()
    )


@pytest.mark.parametrize("case", OPTION_CASES, ids=lambda c: c.name)
def test_option_tensor_out_of_range_or_wrong_type_is_refused(case, cases, client):
    answer = infer(client, case.model, cases["jpeg_named_txt"].data, case.tensors)
    try:
        assert not answer.ok, f"{case.name} must be refused"
        assert answer.status == "400", (answer.status, answer.message)
        if case.triton_error == corpus.TRITON_REQUEST_CHECK:
            (input_name,) = case.tensors
            assert input_name in answer.message, answer.message
        else:
            assert answer.error_code() == corpus.INVALID_OPTION, answer.message
            # The message names the option (e.g. "invalid_option: decode: width=10 is outside ...").
            option = next(
                o
                for o in ("max_jpeg_kb", "face_margin", "fidelity", "width", "height")
                if case.name.startswith(o)
            )
            assert option in answer.message.lower(), answer.message
    finally:
        assert_still_serving(client)


def test_good_request_after_the_whole_corpus(client, cases):
    """Runs after the corpus (file order): both ensembles still produce real portraits."""
    for model in ("portrait_basic", "portrait"):
        answer = infer(client, model, cases["jpeg_named_txt"].data)
        assert answer.ok, f"{model}: {answer.message}"
        png, _ = decoded_outputs(answer)
        assert png.size == (648, 648)
