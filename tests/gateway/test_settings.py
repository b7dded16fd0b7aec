"""Settings: defaults of the Facecraft contract and FACECRAFT_* parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from facecraft.gateway.settings import GatewaySettings


def test_defaults_match_the_contract(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("FACECRAFT_"):
            monkeypatch.delenv(name)
    settings = GatewaySettings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.triton_url == "localhost:8001"
    assert (settings.default_width, settings.default_height) == (648, 648)
    assert settings.default_background == (240, 240, 240)
    assert settings.default_face_margin == 0.3
    assert settings.default_use_oval_mask is True
    assert settings.default_enhance_fidelity == 0.7
    assert settings.default_max_jpeg_kb == 200
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.cleanup_age_hours == 24
    assert settings.batch_max_files == 50
    assert settings.api_key is None
    assert settings.cors_origins == []


def test_environment_variables_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("FACECRAFT_PORT", "9090")
    monkeypatch.setenv("FACECRAFT_TRITON_URL", "triton:8001")
    monkeypatch.setenv("FACECRAFT_DEFAULT_BACKGROUND", "1, 2,3")
    monkeypatch.setenv("FACECRAFT_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FACECRAFT_API_KEY", "s3cret")
    monkeypatch.setenv("FACECRAFT_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("FACECRAFT_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("FACECRAFT_MODEL_REPOSITORY", str(tmp_path / "repo"))
    settings = GatewaySettings()
    assert settings.port == 9090
    assert settings.triton_url == "triton:8001"
    assert settings.default_background == (1, 2, 3)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.api_key.get_secret_value() == "s3cret"
    assert settings.output_dir == Path(tmp_path)
    assert settings.max_upload_bytes == int(1.5 * 1024 * 1024)
    assert settings.model_repository == tmp_path / "repo"


def test_empty_api_key_means_no_key(monkeypatch):
    monkeypatch.setenv("FACECRAFT_API_KEY", "")
    assert GatewaySettings().api_key is None


@pytest.mark.parametrize(
    "name, value",
    [
        ("FACECRAFT_DEFAULT_BACKGROUND", "1,2"),
        ("FACECRAFT_DEFAULT_BACKGROUND", "1,2,300"),
        ("FACECRAFT_DEFAULT_WIDTH", "10"),
        ("FACECRAFT_DEFAULT_ENHANCE_FIDELITY", "1.5"),
        ("FACECRAFT_MAX_CONCURRENT_JOBS", "0"),
    ],
)
def test_invalid_values_are_rejected(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        GatewaySettings()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "FACECRAFT_PORT=70000: Input should be less than or equal to 65535"),
        ([], {"FACECRAFT_PORT": "abc"}, "FACECRAFT_PORT='abc': Input should be a valid integer"),
        ([], {"FACECRAFT_TRITON_URL": "127.0.0.1:99999"}, "FACECRAFT_TRITON_URL='127.0.0.1:99999'"),
    ],
)
def test_the_gateway_command_refuses_bad_settings_in_one_line(argv, env, message, monkeypatch, capsys):
    from facecraft.gateway.__main__ import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_video_limits_come_from_their_settings(monkeypatch):
    monkeypatch.setenv("FACECRAFT_VIDEO_MAX_MB", "2")
    monkeypatch.setenv("FACECRAFT_VIDEO_MAX_DURATION_S", "30")
    monkeypatch.setenv("FACECRAFT_VIDEO_MAX_FRAMES", "900")
    monkeypatch.setenv("FACECRAFT_VIDEO_MAX_FRAME_PIXELS", "921600")
    limits = GatewaySettings().video_limits
    assert (limits.max_bytes, limits.max_duration_s, limits.max_frames, limits.max_frame_pixels) == (
        2 * 1024 * 1024,
        30.0,
        900,
        921600,
    )
