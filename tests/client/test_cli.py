"""``facecraft process`` settings: flag, else environment, else default."""

from __future__ import annotations

import pytest

from facecraft.cli import apply_env_defaults, build_parser
from facecraft.client.cli import triton_url_default


def test_triton_url_comes_from_the_environment_for_grpc_only():
    env = {"FACECRAFT_TRITON_URL": "triton.internal:9001"}
    assert triton_url_default("grpc", env) == "triton.internal:9001"
    assert triton_url_default("http", env) == "127.0.0.1:8000"  # the variable is a gRPC endpoint
    assert triton_url_default("grpc", {}) == "127.0.0.1:8001"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, None),
        ([], {"FACECRAFT_API_KEY": "from-env"}, "from-env"),
        (["--api-key", "from-flag"], {"FACECRAFT_API_KEY": "from-env"}, "from-flag"),
    ],
)
def test_api_key_flag_beats_environment_beats_default(argv, env, expected):
    args = build_parser().parse_args(["process", "photo.jpg", "-o", "out", *argv])
    apply_env_defaults(args, env)
    assert args.api_key == expected


def test_a_folder_scan_names_the_videos_it_leaves_out(tmp_path, capsys):
    from facecraft.cli import CliError
    from facecraft.client.cli import run_process
    from tests.fixtures.videos import write_clip

    write_clip(tmp_path / "clip.mp4", frames=2)
    args = build_parser().parse_args(["process", str(tmp_path), "-o", str(tmp_path / "out")])
    apply_env_defaults(args, {})
    with pytest.raises(CliError, match="no image files"):  # before any connection to Triton
        run_process(args)
    assert "1 video(s) in the folders left out (clip.mp4)" in capsys.readouterr().err


def test_an_output_named_like_an_image_is_refused_for_photos(tmp_path):
    from facecraft.cli import CliError
    from facecraft.client.cli import run_process

    photo = tmp_path / "target.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    args = build_parser().parse_args(["process", str(photo), "-o", str(tmp_path / "out.png")])
    apply_env_defaults(args, {})
    with pytest.raises(CliError, match="-o names the output folder"):
        run_process(args)
    assert not (tmp_path / "out.png").exists()


def test_a_run_that_writes_nothing_leaves_no_output_folder(tmp_path):
    from facecraft.client.cli import run_process

    photo = tmp_path / "target.jpg"
    photo.write_bytes(b"\xff\xd8\xff")  # unreachable Triton: the photo fails, nothing is written
    args = build_parser().parse_args(
        ["process", str(photo), "-o", str(tmp_path / "out"), "--url", "127.0.0.1:1", "--no-enhance"]
    )
    apply_env_defaults(args, {})
    assert run_process(args) == 1
    assert not (tmp_path / "out").exists()
