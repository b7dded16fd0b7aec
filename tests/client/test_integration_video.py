"""``facecraft process --processor NAME clip.mp4 -o out`` end to end against the real embedded Triton."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from facecraft.cli import main
from facecraft.pipeline.video import probe_video
from tests.fixtures.videos import video_packets, write_clip

pytestmark = pytest.mark.integration


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, frames=8, fps=8)  # 128×96, a face in every frame, AAC sine
    return path


def test_a_processor_runs_over_every_frame_of_a_video(triton_server, clip, tmp_path, capsys):
    out = tmp_path / "out" / "cut.mp4"
    code = main(
        ["process", str(clip), "-o", str(out), "--url", triton_server.grpc_url,
         "--processor", "background_remover", "--concurrency", "3"]
    )  # fmt: skip
    assert code == 0
    before, after = probe_video(clip), probe_video(out)
    assert (after.frames, after.fps, after.width, after.height) == (8, Fraction(8), 128, 96)
    assert after.duration_s == before.duration_s
    assert video_packets(out, "audio") == video_packets(clip, "audio")  # copied, not re-encoded
    captured = capsys.readouterr()
    assert "background_remover clip.mp4" in captured.err  # the progress bar
    assert "8 frames at 8 fps" in captured.out


def test_the_face_analyser_writes_one_json_line_per_frame(triton_server, clip, tmp_path):
    out = tmp_path / "faces.jsonl"
    code = main(["process", str(clip), "-o", str(out), "--url", triton_server.grpc_url,
                 "--processor", "face_analyser"])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(8))
    assert all("face_count" in line for line in lines)


def test_the_portrait_refuses_a_video_and_nothing_is_written(triton_server, clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(["process", str(clip), "-o", str(out), "--url", triton_server.grpc_url])
    assert code == 2 and "portrait works on one image at a time only" in capsys.readouterr().err
    assert not out.exists()
