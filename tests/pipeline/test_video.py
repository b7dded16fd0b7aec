"""facecraft.pipeline.video on clips made by tests/fixtures/videos.py (real PyAV/FFmpeg, no mocks)."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from facecraft.pipeline import video
from facecraft.pipeline.errors import VIDEO_ERROR_CODES, PipelineError
from facecraft.pipeline.video import VideoLimits, probe_video, process_video
from tests.fixtures.images import REPO_ROOT, encode
from tests.fixtures.videos import (
    clip_frames,
    decode_frames,
    video_packets,
    write_animated,
    write_clip,
    write_sine,
)

WEBM = {"format": "webm", "codec": "libvpx-vp9", "audio": "libopus", "audio_rate": 48000}
CONTAINERS = {
    "mp4": {},
    "mov": {"format": "mov"},
    "mkv": {"format": "matroska"},
    "webm": WEBM,
}


def run(coroutine, timeout: float = 120.0):
    """Run a coroutine with a generous real timeout (a hang fails instead of blocking the suite)."""

    async def bounded():
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


async def invert(rgb: np.ndarray) -> np.ndarray:
    return 255 - rgb


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, params in CONTAINERS.items():
        made[name] = folder / f"clip.{name}"
        write_clip(made[name], **params)
    made["gif"] = folder / "clip.gif"
    write_animated(made["gif"], "GIF")
    made["webp"] = folder / "clip.webp"
    write_animated(made["webp"], "WEBP")
    return made


def assert_same_packets(got, expected) -> None:
    """Same payloads in the same order, at the same times (Matroska's 1 ms ticks land on MP4's
    1/44100 s ones: within half a millisecond)."""
    assert [payload for payload, _ in got] == [payload for payload, _ in expected]
    assert all(abs(a - b) <= Fraction(1, 2000) for (_, a), (_, b) in zip(got, expected, strict=True))


def assert_nothing_written(folder: Path, keep: set[Path]) -> None:
    assert {path for path in folder.iterdir()} == keep


# --- probe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, container, codec, frames, fps, audio",
    [
        ("mp4", "mp4", "h264", 30, 15, "aac"),
        ("mov", "mov", "h264", 30, 15, "aac"),
        ("mkv", "matroska", "h264", 30, 15, "aac"),
        ("webm", "webm", "vp9", 30, 15, "opus"),
        ("gif", "gif", "gif", 12, 10, None),
        ("webp", "webp", "webp", 12, 10, None),
    ],
)
def test_probe_describes_each_container(clips, name, container, codec, frames, fps, audio):
    info = probe_video(clips[name])
    assert (info.container, info.codec, info.frames, info.fps) == (container, codec, frames, Fraction(fps))
    assert info.duration_s == pytest.approx(frames / fps)
    assert (info.width, info.height) == ((128, 96) if name in CONTAINERS else (64, 48))
    assert (info.audio.codec if info.audio else None) == audio


def test_a_webm_time_base_of_1_ms_gives_the_exact_frame_rate(tmp_path):
    path = tmp_path / "ntsc.webm"
    write_clip(path, frames=20, fps=Fraction(30000, 1001), **{**WEBM, "audio": None})
    with av.open(str(path)) as container:
        assert container.streams.video[0].time_base == Fraction(1, 1000)
    assert probe_video(path).fps == Fraction(30000, 1001)


# --- process: MP4 output ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mp4", "mov", "mkv"])
def test_mp4_output_keeps_frames_fps_duration_size_and_copies_the_audio(clips, tmp_path, name):
    source = clips[name]
    out = tmp_path / "out.mp4"
    result = run(process_video(source, out, invert))
    before, after = probe_video(source), probe_video(out)
    assert (after.frames, after.fps, after.width, after.height) == (
        before.frames,
        before.fps,
        before.width,
        before.height,
    )
    assert after.duration_s == before.duration_s
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.frames == before.frames
        assert float(stream.duration * stream.time_base) == pytest.approx(before.duration_s)
    assert result.audio == "copied"
    assert_same_packets(video_packets(out, "audio"), video_packets(source, "audio"))
    assert (result.frames, result.fps, result.width, result.height) == (30, Fraction(15), 128, 96)


def test_audio_that_mp4_cannot_copy_is_reencoded_to_aac(clips, tmp_path):
    out = tmp_path / "out.mp4"
    result = run(process_video(clips["webm"], out, invert))
    assert result.audio == "re-encoded to aac"
    info = probe_video(out)
    assert info.audio.codec == "aac" and info.frames == 30
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.05)


def test_the_mp4_is_h264_yuv420p_bt709_and_its_colours_round_trip(clips, tmp_path):
    blocks = np.zeros((96, 128, 3), np.uint8)
    colours = [(220, 30, 60), (30, 200, 60), (40, 50, 210), (230, 220, 40), (250, 250, 250), (20, 20, 20)]
    colours += [(200, 40, 200), (40, 200, 200)]
    for i, colour in enumerate(colours):
        blocks[(i // 4) * 48 : (i // 4 + 1) * 48, (i % 4) * 32 : (i % 4 + 1) * 32] = colour

    async def paint(rgb):
        return blocks

    out = tmp_path / "out.mp4"
    run(process_video(clips["mp4"], out, paint))
    with av.open(str(out)) as container:
        context = container.streams.video[0].codec_context
        assert (context.name, context.pix_fmt) == ("h264", "yuv420p")
        tags = (context.colorspace, context.color_primaries, context.color_trc, context.color_range)
        assert tags == (1, 1, 1, 1)  # BT.709 matrix, primaries, transfer; limited range
    # Decoded with its BT.709 tag the colours come back (BT.601 would be off by ≈ 9 levels).
    for frame in decode_frames(out):
        assert mean_abs(frame, blocks) < 4


def test_the_frame_function_sees_every_frame_once_in_order_and_results_are_reordered(clips, tmp_path):
    source = clips["mp4"]
    seen: list[np.ndarray] = []

    async def shuffled(rgb):
        index = len(seen)
        seen.append(rgb.copy())
        for _ in range(4 - index % 4):  # earlier calls finish later: completion order is shuffled
            await asyncio.sleep(0)
        return 255 - rgb

    out = tmp_path / "out.mp4"
    run(process_video(source, out, shuffled, max_in_flight=4))
    inputs = decode_frames(source)
    assert len(seen) == len(inputs) == 30
    assert all(np.array_equal(a, b) for a, b in zip(seen, inputs, strict=True))
    expected = [255 - frame for frame in inputs]
    for index, frame in enumerate(decode_frames(out)):
        assert int(np.argmin([mean_abs(frame, e) for e in expected])) == index


def test_rgba_results_are_composited_on_the_background_in_mp4(clips, tmp_path):
    async def transparent(rgb):
        return np.zeros((*rgb.shape[:2], 4), np.uint8)

    out = tmp_path / "out.mp4"
    run(process_video(clips["mp4"], out, transparent, background=(0, 200, 0)))
    frame = decode_frames(out)[0]
    assert mean_abs(frame, np.broadcast_to(np.array([0, 200, 0], np.uint8), frame.shape)) < 4


@pytest.mark.parametrize("name", ["gif", "webp"])
def test_animated_gif_and_webp_become_mp4(clips, tmp_path, name):
    out = tmp_path / "out.mp4"
    result = run(process_video(clips[name], out, invert))
    info = probe_video(out)
    assert (info.frames, info.fps, info.width, info.height, info.audio) == (12, Fraction(10), 64, 48, None)
    assert result.audio is None


def test_a_rotated_phone_video_is_processed_upright(tmp_path):
    source = tmp_path / "rotated.mp4"
    images = write_clip(source, rotation=90, audio=None, frames=6)
    info = probe_video(source)
    assert (info.rotation, info.width, info.height) == (90, 96, 128)
    seen = []

    async def record(rgb):
        seen.append(rgb)
        return rgb

    run(process_video(source, tmp_path / "out.mp4", record))
    # 90° counter-clockwise (the display matrix), as players show it
    assert mean_abs(seen[0], np.rot90(images[0])) < 6
    assert probe_video(tmp_path / "out.mp4").rotation == 0


def test_an_odd_sized_result_loses_its_last_row_and_column(clips, tmp_path):
    async def odd(rgb):
        return np.ascontiguousarray(rgb[:95, :127])

    result = run(process_video(clips["mp4"], tmp_path / "out.mp4", odd))
    assert (result.width, result.height) == (126, 94)


# --- process: WebM with alpha, JSON lines -----------------------------------------------------


def test_rgba_results_give_a_vp9_webm_with_alpha(clips, tmp_path):
    async def cut_out(rgb):
        rgba = np.zeros((*rgb.shape[:2], 4), np.uint8)
        rgba[..., :3] = rgb
        rgba[16:80, 32:96, 3] = 255
        return rgba

    out = tmp_path / "out.webm"
    result = run(process_video(clips["mp4"], out, cut_out, output="webm"))
    assert result.audio == "re-encoded to libopus"
    info = probe_video(out)
    assert (info.codec, info.frames, info.fps, info.audio.codec) == ("vp9", 30, Fraction(15), "opus")
    frames = decode_frames(out, decoder="libvpx-vp9", fmt="rgba")
    assert len(frames) == 30
    mask = np.zeros((96, 128), np.uint8)
    mask[16:80, 32:96] = 255
    for frame in frames:
        assert mean_abs(frame[..., 3], mask) < 4
    # FFmpeg's own vp9 decoder ignores the alpha (why the libvpx-vp9 decoder is named above)
    assert decode_frames(out, fmt="rgba")[0][..., 3].min() == 255


def test_webm_copies_opus_audio(clips, tmp_path):
    out = tmp_path / "out.webm"
    result = run(process_video(clips["webm"], out, invert, output="webm"))
    assert result.audio == "copied"
    assert_same_packets(video_packets(out, "audio"), video_packets(clips["webm"], "audio"))
    assert decode_frames(out, decoder="libvpx-vp9", fmt="rgba")[0][..., 3].min() == 255  # RGB: opaque


def test_an_analyser_writes_one_json_line_per_frame(clips, tmp_path):
    async def analyse(rgb):
        return {"mean": round(float(rgb.mean()), 3)}

    out = tmp_path / "faces.jsonl"
    result = run(process_video(clips["mp4"], out, analyse, output="jsonl"))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    inputs = decode_frames(clips["mp4"])
    assert [line["frame"] for line in lines] == list(range(30))
    assert [line["time_s"] for line in lines] == [round(i / 15, 6) for i in range(30)]
    assert [line["mean"] for line in lines] == [round(float(f.mean()), 3) for f in inputs]
    assert result.audio is None


# --- progress, bounded flow, cancellation, failures ------------------------------------------


def test_progress_reports_frames_done_total_fps_and_eta(clips, tmp_path):
    reports = []
    run(process_video(clips["mp4"], tmp_path / "out.mp4", invert, progress=reports.append))
    assert [p.frames_done for p in reports] == list(range(1, 31))
    assert {p.frames_total for p in reports} == {30}
    assert all(p.fps > 0 and p.eta_s >= 0 for p in reports)
    assert reports[-1].eta_s == 0


def _batched(batch: int, total: int, active: list[int]):
    """A frame function that holds calls until ``batch`` of them run at once (the tail: fewer)."""
    events: dict[int, asyncio.Event] = {}
    counts: dict[int, int] = {}
    calls = [0]

    async def hold(rgb):
        index = calls[0]
        calls[0] += 1
        group = index // batch
        size = min(batch, total - group * batch)
        event = events.setdefault(group, asyncio.Event())
        counts[group] = counts.get(group, 0) + 1
        active[0] += 1
        active[1] = max(active[1], active[0])
        if counts[group] == size:
            event.set()
        await event.wait()
        active[0] -= 1
        return rgb

    return hold


@pytest.mark.parametrize("frames", [24, 240])
def test_frames_in_flight_stay_bounded_whatever_the_length(tmp_path, frames):
    source = tmp_path / "clip.mkv"
    write_clip(source, format="matroska", frames=frames, width=64, height=48, audio="aac")
    active = [0, 0]  # now, most
    result = run(process_video(source, tmp_path / "out.mp4", _batched(4, frames, active), max_in_flight=4))
    assert result.frames == frames
    # The calls reached the bound (they wait for 4 at once) and never passed it.
    assert active[1] == 4
    assert result.max_frames_in_flight == 4


def test_cancellation_stops_and_leaves_no_output(clips, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(clips["mp4"].read_bytes())
    reached = asyncio.Event()
    cancelled = []

    async def stuck(rgb):
        try:
            if stuck.calls >= 5:
                stuck.visible = (tmp_path / "out.mp4").exists()
                reached.set()
                await asyncio.Event().wait()
            stuck.calls += 1
            return rgb
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    stuck.calls = 0

    async def scenario():
        task = asyncio.ensure_future(process_video(source, tmp_path / "out.mp4", stuck, max_in_flight=3))
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert stuck.visible is False  # nothing at the destination while it is being written
    assert cancelled  # the frame calls in flight were cancelled too
    assert_nothing_written(tmp_path, {source})


def test_a_failing_frame_function_leaves_no_output_and_an_older_result_intact(clips, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(clips["mp4"].read_bytes())
    older = tmp_path / "out.mp4"
    older.write_bytes(b"an earlier result")

    async def boom(rgb):
        boom.calls += 1
        if boom.calls == 10:
            raise RuntimeError("model down")
        return rgb

    boom.calls = 0
    with pytest.raises(RuntimeError, match="model down"):
        run(process_video(source, older, boom))
    assert_nothing_written(tmp_path, {source, older})
    assert older.read_bytes() == b"an earlier result"


@pytest.mark.parametrize(
    "bad, error",
    [
        (lambda rgb: rgb.astype(np.float32), TypeError),
        (lambda rgb: rgb[..., :2].copy(), ValueError),
        (lambda rgb: {"not": "a frame"}, TypeError),
    ],
)
def test_a_result_of_the_wrong_kind_is_refused(clips, tmp_path, bad, error):
    async def function(rgb):
        return bad(rgb)

    with pytest.raises(error):
        run(process_video(clips["mp4"], tmp_path / "out.mp4", function))
    assert_nothing_written(tmp_path, set())


def test_data_that_fails_while_streaming_is_corrupt_video_and_leaves_no_output(clips, tmp_path):
    source = tmp_path / "clip.mp4"
    data = clips["mp4"].read_bytes()
    source.write_bytes(data)
    info = probe_video(source)
    source.write_bytes(data[: len(data) // 2])  # cut after the probe (an upload still being written)
    with pytest.raises(PipelineError) as caught:
        run(process_video(source, tmp_path / "out.mp4", invert, info=info))
    assert caught.value.code == "corrupt_video"
    assert_nothing_written(tmp_path, {source})


# --- bad inputs -----------------------------------------------------------------------------


def _code(path: Path, limits: VideoLimits = VideoLimits()) -> str:
    with pytest.raises(PipelineError) as caught:
        probe_video(path, limits)
    return caught.value.code


@pytest.mark.parametrize("name", ["mp4", "mkv", "webm", "gif", "webp"])
def test_a_truncated_video_is_corrupt_video(clips, tmp_path, name):
    path = tmp_path / f"cut.{name}"
    data = clips[name].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _code(path) == "corrupt_video"


def test_a_truncated_faststart_mp4_is_corrupt_video(clips, tmp_path):
    whole = tmp_path / "fast.mp4"
    write_clip(whole, options={"movflags": "+faststart"})
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(PipelineError, match="indexed frames present"):
        probe_video(cut)


def test_audio_only_is_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        write_sine(stream, container, 1.0, 44100)
    assert _code(path) == "no_video_stream"


def test_an_unsupported_codec_is_refused(tmp_path):
    path = tmp_path / "old.mkv"
    write_clip(path, format="matroska", codec="mpeg2video", audio=None, frames=5)
    with pytest.raises(PipelineError, match="'mpeg2video' is not supported") as caught:
        probe_video(path)
    assert caught.value.code == "unsupported_video_codec"


@pytest.mark.parametrize(
    "data, detail",
    [
        (b"", "empty"),
        (b"hello, this is text and not a video at all", "not a video"),
        (encode(np.zeros((32, 32, 3), np.uint8), "JPEG"), "a jpeg image, not a video"),
        (encode(np.zeros((32, 32, 3), np.uint8), "WEBP"), "still WebP"),
    ],
)
def test_what_is_not_a_video_is_invalid_video(tmp_path, data, detail):
    path = tmp_path / "upload.mp4"  # the name is ignored: content decides
    path.write_bytes(data)
    with pytest.raises(PipelineError, match=detail) as caught:
        probe_video(path)
    assert caught.value.code == "invalid_video"


@pytest.mark.parametrize(
    "limits, code, detail",
    [
        (VideoLimits(max_bytes=1000), "video_too_large", "byte cap"),
        (VideoLimits(max_frame_pixels=128 * 96 - 1), "video_too_large", "pixel cap"),
        (VideoLimits(max_frames=29), "video_too_long", "more than 29 frames"),
        (VideoLimits(max_duration_s=1.9), "video_too_long", "second cap"),
    ],
)
def test_each_limit_has_its_error(clips, limits, code, detail):
    with pytest.raises(PipelineError, match=detail) as caught:
        probe_video(clips["mp4"], limits)
    assert caught.value.code == code


def test_process_refuses_a_bad_upload_before_writing_anything(clips, tmp_path):
    with pytest.raises(PipelineError) as caught:
        run(process_video(clips["mp4"], tmp_path / "out.mp4", invert, limits=VideoLimits(max_frames=5)))
    assert caught.value.code == "video_too_long"
    assert_nothing_written(tmp_path, set())


def test_every_video_error_code_is_documented():
    doc = (REPO_ROOT / "docs" / "video.md").read_text()
    for code in VIDEO_ERROR_CODES:
        assert f"`{code}`" in doc
    assert video.SUPPORTED_CONTAINERS in doc


def test_a_variable_rate_gif_is_retimed_at_its_average_rate_keeping_frames_and_duration(tmp_path):
    source = tmp_path / "vfr.gif"
    write_animated(source, "GIF", frames=12, duration_ms=[50, 150] * 6)  # 1.2 s in all
    info = probe_video(source)
    assert (info.frames, info.fps, info.duration_s) == (12, Fraction(10), pytest.approx(1.2))
    out = tmp_path / "out.mp4"
    run(process_video(source, out, invert))
    after = probe_video(out)
    assert (after.frames, after.fps) == (12, Fraction(10))


def _write_offset_clip(path: Path, format: str, first_pts: int, audio: bool) -> None:
    """30 frames at 15 fps whose first frame has pts ``first_pts`` (1/15 s units), sine audio at 0."""
    container = av.open(str(path), "w", format=format)
    stream = container.add_stream("libx264", rate=15)
    stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
    sound = container.add_stream("aac", rate=44100) if audio else None
    if sound is not None:
        sound.layout = "mono"
    for index, image in enumerate(clip_frames(30)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = first_pts + index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    if sound is not None:
        write_sine(sound, container, 2.5, 44100)
    container.close()


def test_frames_an_mp4_edit_list_cuts_are_neither_counted_nor_shown(tmp_path):
    source = tmp_path / "edited.mp4"
    _write_offset_clip(source, "mp4", -3, audio=False)  # the muxer writes an edit list cutting 3
    with av.open(str(source)) as container:
        assert container.streams.video[0].frames == 30
    info = probe_video(source)
    assert (info.frames, info.start_s) == (27, 0.0)
    result = run(process_video(source, tmp_path / "out.mp4", invert))
    assert result.frames == 27 == probe_video(tmp_path / "out.mp4").frames


def test_a_video_that_starts_late_keeps_its_start_so_audio_stays_in_sync(tmp_path):
    source = tmp_path / "late.mkv"
    _write_offset_clip(source, "matroska", 7, audio=True)  # video from 7/15 s, audio from 0
    assert probe_video(source).start_s == pytest.approx(7 / 15, abs=1e-3)
    out = tmp_path / "out.mp4"
    run(process_video(source, out, invert))
    assert_same_packets(video_packets(out, "audio"), video_packets(source, "audio"))
    assert probe_video(out).start_s == pytest.approx(7 / 15, abs=1e-3)


@pytest.mark.parametrize("codec, format", [("libx265", "mp4"), ("libsvtav1", "matroska"), ("libvpx", "webm")])
def test_hevc_av1_and_vp8_are_decoded(tmp_path, codec, format):
    source = tmp_path / f"clip.{format}"
    write_clip(source, format=format, codec=codec, audio=None, frames=10)
    info = probe_video(source)
    assert info.codec == {"libx265": "hevc", "libsvtav1": "av1", "libvpx": "vp8"}[codec]
    result = run(process_video(source, tmp_path / "out.mp4", invert))
    assert (result.frames, result.width, result.height) == (10, 128, 96)


def test_a_stream_that_changes_size_midway_is_scaled_to_its_first_size(tmp_path):
    """VP9 may change resolution at a keyframe: 10 frames at 128×96, then 10 at 64×48."""
    source = tmp_path / "switch.webm"
    container = av.open(str(source), "w", format="webm")
    stream = container.add_stream("libvpx-vp9", rate=15)
    stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
    for index, image in enumerate(clip_frames(10)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    smaller = av.CodecContext.create("libvpx-vp9", "w")
    smaller.width, smaller.height, smaller.pix_fmt = 64, 48, "yuv420p"
    smaller.time_base, smaller.framerate = stream.codec_context.time_base, 15
    packets = []
    for index, image in enumerate(clip_frames(10, 64, 48), start=10):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        packets += smaller.encode(frame)
    for packet in packets + smaller.encode(None):
        packet.stream, packet.time_base = stream, smaller.time_base
        container.mux(packet)
    container.close()
    assert {frame.shape for frame in decode_frames(source)} == {(96, 128, 3), (48, 64, 3)}
    shapes = []

    async def record(rgb):
        shapes.append(rgb.shape)
        return rgb

    result = run(process_video(source, tmp_path / "out.mp4", record))
    assert shapes == [(96, 128, 3)] * 20
    assert (result.frames, result.width, result.height) == (20, 128, 96)


def test_an_analyser_can_write_an_annotated_video_and_its_json_lines_together(clips, tmp_path):
    async def annotate(rgb):
        marked = rgb.copy()
        marked[10:20, 10:20] = (255, 0, 0)
        return marked, {"mean": round(float(rgb.mean()), 3)}

    out, lines = tmp_path / "annotated.mp4", tmp_path / "faces.jsonl"
    result = run(process_video(clips["mp4"], out, annotate, report=lines))
    assert result.report == lines
    assert probe_video(out).frames == 30
    assert [json.loads(line)["frame"] for line in lines.read_text().splitlines()] == list(range(30))
    assert mean_abs(decode_frames(out)[0][10:20, 10:20], np.array([255, 0, 0], np.uint8)) < 8

    async def broken(rgb):
        return rgb  # not a pair

    with pytest.raises(TypeError, match=r"\(image, dict\)"):
        run(process_video(clips["mp4"], tmp_path / "again.mp4", broken, report=tmp_path / "again.jsonl"))
    assert_nothing_written(tmp_path, {out, lines})
