"""Error parsing: Triton messages ``<code>: <step>: <detail>`` → typed exceptions."""

from __future__ import annotations

import pytest

from facecraft.client.errors import (
    FacecraftError,
    ImageTooLarge,
    InternalServerError,
    InvalidImage,
    InvalidOption,
    NoFaceDetected,
    ServerUnavailable,
    error_from_exception,
    parse_error_message,
)


@pytest.mark.parametrize(
    ("message", "cls", "step", "detail"),
    [
        (
            "no_face_detected: detect: no face found in a 1280x720 image",
            NoFaceDetected,
            "detect",
            "no face found in a 1280x720 image",
        ),
        (
            "invalid_image: decode: not a supported image type",
            InvalidImage,
            "decode",
            "not a supported image type",
        ),
        (
            "image_too_large: decode: 60000000 pixels > 50000000",
            ImageTooLarge,
            "decode",
            "60000000 pixels > 50000000",
        ),
        (
            "invalid_option: decode: WIDTH must be 64..4096, got 5",
            InvalidOption,
            "decode",
            "WIDTH must be 64..4096, got 5",
        ),
        ("internal_error: compose: boom", InternalServerError, "compose", "boom"),
        # Triton prefixes ensemble errors with context; the code is still found.
        ("in ensemble 'portrait', no_face_detected: detect: nothing", NoFaceDetected, "detect", "nothing"),
        (
            "[StatusCode.INVALID_ARGUMENT] invalid_image: decode: empty input",
            InvalidImage,
            "decode",
            "empty input",
        ),
    ],
)
def test_coded_messages_map_to_their_class(message, cls, step, detail):
    error = parse_error_message(message)
    assert type(error) is cls
    assert error.code == cls.code
    assert error.step == step
    assert error.detail == detail
    assert isinstance(error, FacecraftError)


@pytest.mark.parametrize(
    "message",
    [
        "[StatusCode.UNAVAILABLE] failed to connect to all addresses",
        "Request for unknown model: 'portrait' is not found",
        "[Errno 111] Connection refused",
    ],
)
def test_transport_failures_are_server_unavailable(message):
    assert type(parse_error_message(message)) is ServerUnavailable


def test_unknown_message_is_plain_facecraft_error():
    error = parse_error_message("something odd happened")
    assert type(error) is FacecraftError
    assert str(error) == "something odd happened"


def test_all_error_classes_are_facecraft_errors_with_distinct_codes():
    classes = (
        NoFaceDetected,
        InvalidImage,
        InvalidOption,
        ImageTooLarge,
        ServerUnavailable,
        InternalServerError,
    )
    assert all(issubclass(cls, FacecraftError) for cls in classes)
    assert len({cls.code for cls in classes}) == len(classes)


def test_error_from_tritonclient_exception_uses_its_message():
    from tritonclient.utils import InferenceServerException

    raised = InferenceServerException("no_face_detected: detect: no face", status="400")
    assert type(error_from_exception(raised)) is NoFaceDetected
    unavailable = InferenceServerException("weird", status="StatusCode.UNAVAILABLE")
    assert type(error_from_exception(unavailable)) is ServerUnavailable
    assert type(error_from_exception(ConnectionRefusedError("nope"))) is ServerUnavailable
