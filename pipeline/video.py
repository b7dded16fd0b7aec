"""Video targets: probe an upload, stream its frames through an async per-frame function, encode.

Pure PyAV (FFmpeg 8.1 bundled in the ``av`` wheel) + numpy, with Pillow only for animated WebP
(FFmpeg's ``webp`` decoder has no animation support). Nothing here knows about Triton: a processor
plugs in as ``async def frame_function(rgb) -> rgb | rgba | dict``.

- :func:`probe_video` validates an upload and returns a :class:`VideoInfo`, or raises
  :class:`~facecraft.pipeline.errors.PipelineError` with one of the video codes (docs/video.md).
- :func:`process_video` decodes (in a worker thread), runs the frame function with at most
  ``max_in_flight`` frames decoded and not yet written, re-orders, encodes (in a second worker
  thread) and renames a temporary file onto the destination only on success.

Outputs: ``"mp4"`` H.264 yuv420p, BT.709 tagged; ``"webm"`` VP9, yuva420p when the frame
function returns RGBA (alpha kept), yuv420p otherwise; ``"jsonl"`` one JSON object per frame.
Frames are re-timed onto the 1/fps grid: frame ``i`` is shown at ``start + i / fps`` seconds
(``start``: the input's first shown frame, rounded to the grid, so that audio stays in sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

from facecraft.pipeline.compose import composite_on_background
from facecraft.pipeline.decode import sniff_format
from facecraft.pipeline.errors import (
    CORRUPT_VIDEO,
    INVALID_VIDEO,
    NO_VIDEO_STREAM,
    UNSUPPORTED_VIDEO_CODEC,
    VIDEO_TOO_LARGE,
    VIDEO_TOO_LONG,
    PipelineError,
)

PROBE_STEP = "probe"
DECODE_STEP = "decode"

OUTPUT_MP4 = "mp4"
OUTPUT_WEBM = "webm"
OUTPUT_JSONL = "jsonl"
OUTPUT_KINDS = (OUTPUT_MP4, OUTPUT_WEBM, OUTPUT_JSONL)

# What a video upload may be (for messages and docs): sniffed by content, never by file name.
SUPPORTED_CONTAINERS = "MP4, MOV, MKV, WebM, animated GIF or animated WebP"
# Video codecs decoded, by FFmpeg's canonical codec name (not the decoder's: AV1 decodes with
# libdav1d). Everything else FFmpeg could decode is refused: the mainstream decoders are the
# well-exercised ones.
SUPPORTED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "prores", "mjpeg", "gif", "webp")
# Audio codecs copied packet for packet into each output container; others are re-encoded.
COPY_AUDIO = {OUTPUT_MP4: ("aac", "mp3", "ac3", "eac3", "alac"), OUTPUT_WEBM: ("opus", "vorbis")}
# The audio encoder of each output container, for audio that cannot be copied.
AUDIO_ENCODER = {OUTPUT_MP4: "aac", OUTPUT_WEBM: "libopus"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_OPUS_RATE = 48000
# Encoder settings. x264 veryfast ≈ 70 fps at 720p on 2 cores (DESIGN §10.6); CRF 18 is close to
# visually lossless. VP9 realtime ≈ 55–60 fps with alpha.
H264_OPTIONS = {"preset": "veryfast", "crf": "18"}
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "30", "b": "0"}
_MP4_CONTAINER_OPTIONS = {"movflags": "+faststart"}
# GIF / WebP frames without a delay are shown for 100 ms by browsers.
_DEFAULT_FRAME_MS = 100

# Sniffed kind -> FFmpeg demuxer (only that one may open the file).
_DEMUXERS = {"mp4": "mov", "mov": "mov", "matroska": "matroska", "webm": "matroska", "gif": "gif"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_SEGMENT_ID = b"\x18\x53\x80\x67"
_HEAD_BYTES = 64


@dataclass(frozen=True)
class VideoLimits:
    """Caps on a video upload (the gateway reads them from ``FACECRAFT_VIDEO_*`` settings).

    ``max_bytes``: file size; ``max_duration_s``: frames / fps; ``max_frames``: video frames;
    ``max_frame_pixels``: width × height of one frame (default 3840×2160, 4K UHD).
    """

    max_bytes: int = 512 * 1024 * 1024
    max_duration_s: float = 600.0
    max_frames: int = 36_000
    max_frame_pixels: int = 3840 * 2160


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream: FFmpeg codec name ("aac", "opus", ...), Hz, channel count."""

    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found.

    ``container``: "mp4", "mov", "matroska", "webm", "gif" or "webp" (sniffed); ``codec``: FFmpeg
    codec name; ``width``/``height``: displayed size in px (after ``rotation``, degrees
    counter-clockwise, a multiple of 90); ``fps``: frames per second (exact fraction); ``frames``:
    video frame count; ``duration_s`` = frames / fps; ``audio``: the first audio stream or None;
    ``size_bytes``: the file's size; ``start_s``: when the first shown frame starts (s; the output
    keeps it, so audio stays in sync).
    """

    container: str
    codec: str
    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float
    rotation: int
    audio: AudioInfo | None
    size_bytes: int
    start_s: float = 0.0


@dataclass(frozen=True)
class Progress:
    """Frames written so far of ``frames_total``, ``elapsed_s`` since the first frame was read."""

    frames_done: int
    frames_total: int
    elapsed_s: float

    @property
    def fps(self) -> float:
        """Frames written per second so far (0 before the first)."""
        return self.frames_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before the first frame is written."""
        if self.frames_done == 0 or self.elapsed_s <= 0:
            return None
        return max(0, self.frames_total - self.frames_done) / self.fps


@dataclass
class VideoResult:
    """What :func:`process_video` wrote.

    ``audio``: "copied", "re-encoded to <codec>" or None (no audio, or a JSON output);
    ``max_frames_in_flight``: the most frames decoded and not yet written at any moment (never
    above ``max_in_flight``: this, not the clip's length, bounds the memory); ``report``: the
    JSON lines written beside the video, or None.
    """

    path: Path
    output: str
    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None
    max_frames_in_flight: int
    report: Path | None = None


FrameFunction = Callable[[np.ndarray], Awaitable[np.ndarray | dict]]


def _error(code: str, detail: str, step: str = PROBE_STEP) -> PipelineError:
    return PipelineError(code, step, detail)


def sniff_container(head: bytes) -> str:
    """The container of a video upload from its first bytes: "mp4", "mov", "matroska", "webm",
    "gif" or "webp". Raises ``PipelineError(invalid_video)`` for anything else, naming the
    image type when it is an image (a still WebP included)."""
    if len(head) >= 12 and head[4:8] == b"ftyp" and sniff_format(head) is None:
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head[:4] == _EBML_MAGIC:
        return "webm" if b"webm" in head[:_HEAD_BYTES] else "matroska"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if len(head) >= 21 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        if head[12:16] == b"VP8X" and head[20] & 0x02:
            return "webp"
        raise _error(INVALID_VIDEO, "a still WebP image, not an animation; send it to the image endpoints")
    image = sniff_format(head)
    if image is not None:
        raise _error(INVALID_VIDEO, f"a {image} image, not a video; send it to the image endpoints")
    raise _error(
        INVALID_VIDEO, f"not a video (data starting with {head[:8].hex()}); send {SUPPORTED_CONTAINERS}"
    )


# Container kinds as users name them (messages).
CONTAINER_NAMES = {
    "mp4": "MP4",
    "mov": "MOV",
    "matroska": "MKV",
    "webm": "WebM",
    "gif": "GIF",
    "webp": "animated WebP",
}


def video_container(head: bytes) -> str | None:
    """The container kind when ``head`` (the first bytes) starts a video :func:`sniff_container`
    accepts, else None (for messages of endpoints that take images only)."""
    try:
        return sniff_container(head[:_HEAD_BYTES])
    except PipelineError:
        return None


def _vint(data: bytes, at: int) -> tuple[int, int, bool]:
    """An EBML variable-length integer at ``at``: (value, length, all-ones = 'unknown size')."""
    first = data[at]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or at + length > len(data):
        raise ValueError("bad EBML length")
    value = first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _matroska_truncated(path: Path, size: int) -> bool:
    """True when the Segment element declares more bytes than the file holds (EBML, RFC 9559)."""
    with path.open("rb") as file:
        data = file.read(4096)
    try:
        header_size, length, _ = _vint(data, 4)
        at = 4 + length + header_size
        if data[at : at + 4] != _SEGMENT_ID:
            return False
        segment_size, length, unknown = _vint(data, at + 4)
    except (ValueError, IndexError):
        return True
    return not unknown and at + 4 + length + segment_size > size


def _frame_rate(frames: int, duration: float, guessed: Fraction | None) -> Fraction:
    """Frames per second: FFmpeg's guessed rate (r_frame_rate) when it matches ``duration`` (s,
    from the timestamps) within a frame, else the average ``frames / duration`` (a variable-rate
    input becomes constant-rate at its average, keeping its frame count and duration)."""
    if frames < 2 or duration <= 0:
        return guessed if guessed else Fraction(1000, _DEFAULT_FRAME_MS)
    if guessed and abs(frames / guessed - duration) <= 1 / guessed:
        return guessed
    return Fraction(frames / duration).limit_denominator(1001)


def _stream_duration(frames: int, first_pts, last_pts, last_duration: int, time_base) -> float:
    """Seconds from the first frame's start to the last one's end: the last packet's own duration
    when the container stores it, else the span scaled by frames / (frames - 1)."""
    if first_pts is None or frames < 2:
        return float(last_duration * time_base) if last_duration else 0.0
    span = float((last_pts - first_pts) * time_base)
    if last_duration:
        return span + float(last_duration * time_base)
    return span * frames / (frames - 1)


def _check_limits(info: VideoInfo, limits: VideoLimits) -> VideoInfo:
    if info.duration_s > limits.max_duration_s:
        raise _error(
            VIDEO_TOO_LONG, f"{info.duration_s:.2f} s is above the {limits.max_duration_s:g}-second cap"
        )
    return info


def _check_frame_size(width: int, height: int, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        raise _error(CORRUPT_VIDEO, f"the video stream declares a {width}x{height} frame")
    if width * height > limits.max_frame_pixels:
        raise _error(
            VIDEO_TOO_LARGE,
            f"{width}x{height} = {width * height} pixels per frame is above the "
            f"{limits.max_frame_pixels}-pixel cap",
        )


def _too_many_frames(limits: VideoLimits) -> PipelineError:
    return _error(VIDEO_TOO_LONG, f"more than {limits.max_frames} frames (the cap)")


def _quarter_turns(rotation: float) -> int:
    """A display-matrix rotation (degrees counter-clockwise) as quarter turns in 0..3."""
    return round(rotation / 90) % 4


def _video_stream(container):
    streams = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    return streams[0] if streams else None


def _probe_webp(path: Path, size: int, limits: VideoLimits) -> VideoInfo:
    try:
        with Image.open(path, formats=["WEBP"]) as image:
            width, height = image.size
            _check_frame_size(width, height, limits)
            frames = getattr(image, "n_frames", 1)
            if frames > limits.max_frames:
                raise _too_many_frames(limits)
            durations = []
            for index in range(frames):
                image.seek(index)
                image.load()
                durations.append(int(image.info.get("duration") or _DEFAULT_FRAME_MS))
    except PipelineError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _error(CORRUPT_VIDEO, f"corrupt or truncated WebP animation ({error})") from None
    if len(set(durations)) == 1:
        fps = Fraction(1000, durations[0])
    else:
        fps = Fraction(frames * 1000, sum(durations)).limit_denominator(1001)
    info = VideoInfo("webp", "webp", width, height, fps, frames, float(frames / fps), 0, None, size, 0.0)
    return _check_limits(info, limits)


def probe_video(path: str | os.PathLike, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Validate the video upload at ``path`` and describe it (blocking: run it in a thread).

    Reads every packet of the video stream (no decode but the first frame) to count the frames.
    Raises ``PipelineError`` (step "probe") with:

    - ``invalid_video``: empty, not a supported container (an image, another file type);
    - ``corrupt_video``: the container or stream cannot be parsed, the first frame cannot be
      decoded, or the file is truncated (fewer packets than the MP4 index lists, a Matroska
      segment or a GIF cut short);
    - ``no_video_stream``: a container with no video stream (audio only);
    - ``unsupported_video_codec``: a video codec outside ``SUPPORTED_CODECS``;
    - ``video_too_large``: more than ``limits.max_bytes`` bytes or ``limits.max_frame_pixels``
      pixels per frame;
    - ``video_too_long``: more than ``limits.max_frames`` frames or ``limits.max_duration_s``.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise _error(INVALID_VIDEO, "the video is empty (0 bytes)")
    if size > limits.max_bytes:
        raise _error(VIDEO_TOO_LARGE, f"{size} bytes is above the {limits.max_bytes}-byte cap")
    with path.open("rb") as file:
        head = file.read(_HEAD_BYTES)
    kind = sniff_container(head)
    if kind == "webp":
        return _probe_webp(path, size, limits)
    if kind in ("matroska", "webm") and _matroska_truncated(path, size):
        raise _error(CORRUPT_VIDEO, f"truncated {kind} file (the segment is cut short)")
    if kind == "gif":
        with path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\x3b":
                raise _error(CORRUPT_VIDEO, "truncated GIF (no trailer byte)")
    try:
        container = av.open(str(path), format=_DEMUXERS[kind], metadata_errors="ignore")
    except av.FFmpegError as error:
        raise _error(CORRUPT_VIDEO, f"the {kind} container cannot be parsed ({error.strerror})") from None
    with container:
        stream = _video_stream(container)
        if stream is None:
            raise _error(NO_VIDEO_STREAM, f"the {kind} file has no video stream")
        context = stream.codec_context
        codec = context.codec.canonical_name if context is not None else "unknown"
        if context is None or codec not in SUPPORTED_CODECS:
            raise _error(
                UNSUPPORTED_VIDEO_CODEC,
                f"video codec {codec!r} is not supported; send {', '.join(SUPPORTED_CODECS)}",
            )
        _check_frame_size(context.width, context.height, limits)
        count, first_pts, last_pts, last_duration, rotation, decoded = 0, None, None, 0, 0, False
        discarded = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    # the flush packet; or one an MP4 edit list cuts (decoded for its references,
                    # never shown)
                    discarded += packet.size > 0
                    if not decoded:
                        decoded, rotation = _first_frame(packet, decoded, rotation)
                    continue
                count += 1
                if count > limits.max_frames:
                    raise _too_many_frames(limits)
                if packet.pts is not None:
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    if last_pts is None or packet.pts > last_pts:
                        last_pts, last_duration = packet.pts, packet.duration or 0
                if not decoded:
                    decoded, rotation = _first_frame(packet, decoded, rotation)
        except av.FFmpegError as error:
            raise _error(CORRUPT_VIDEO, f"the {kind} data cannot be read ({error.strerror})") from None
        if not decoded:
            raise _error(CORRUPT_VIDEO, f"no decodable {codec} frame in the {kind} file")
        if stream.frames and count + discarded < stream.frames:
            raise _error(
                CORRUPT_VIDEO,
                f"truncated {kind} file: {count + discarded} of the {stream.frames} indexed frames present",
            )
        duration = _stream_duration(count, first_pts, last_pts, last_duration, stream.time_base)
        fps = _frame_rate(count, duration, stream.guessed_rate or stream.average_rate)
        width, height = context.width, context.height
        if _quarter_turns(rotation) % 2:
            width, height = height, width
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        audio = None
        if audio_stream is not None and audio_stream.codec_context is not None:
            audio = AudioInfo(
                audio_stream.codec_context.name,
                int(audio_stream.codec_context.sample_rate or 0),
                int(audio_stream.codec_context.channels or 0),
            )
    start = float(first_pts * stream.time_base) if first_pts is not None else 0.0
    info = VideoInfo(kind, codec, width, height, fps, count, float(count / fps), rotation, audio, size, start)
    return _check_limits(info, limits)


def _first_frame(packet, decoded: bool, rotation: int) -> tuple[bool, int]:
    """Decode ``packet`` (None-size packets flush); (a frame came out, its rotation)."""
    for frame in packet.decode():
        return True, int(round(frame.rotation or 0))
    return decoded, rotation


# ---------------------------------------------------------------------------------------------
# Reading: one demux pass; video packets decoded to RGB, audio packets handed to the writer.


class _AVReader:
    """Frames of a PyAV-readable upload, in display order, as HWC uint8 RGB, upright, all of the
    probed size."""

    def __init__(self, path: Path, info: VideoInfo):
        self._info = info
        self._container = av.open(str(path), format=_DEMUXERS[info.container], metadata_errors="ignore")
        self._video = _video_stream(self._container)
        self._video.thread_type = "AUTO"
        self.audio_stream = self._container.streams.audio[0] if self._container.streams.audio else None
        self.audio_sink: Callable | None = None
        streams = [self._video] + ([self.audio_stream] if self.audio_stream is not None else [])
        self._packets = self._container.demux(*streams)
        self._frames: deque = deque()
        self._done = False
        self.decoded = 0
        # the coded size (before rotation); a stream that changes size mid-way is scaled back to it
        sideways = _quarter_turns(info.rotation) % 2
        self._size = (info.height, info.width) if sideways else (info.width, info.height)

    def read(self) -> np.ndarray | None:
        """The next frame, or None after the last. Raises ``PipelineError(corrupt_video)``."""
        try:
            while not self._frames and not self._done:
                packet = next(self._packets, None)
                if packet is None:  # the demuxer's last packets (size 0) flushed the decoder
                    self._done = True
                elif packet.stream is self._video:
                    self._frames.extend(packet.decode())
                elif self.audio_sink is not None and packet.size:
                    self.audio_sink(packet)
        except av.FFmpegError as error:
            raise _error(CORRUPT_VIDEO, f"frame {self.decoded + 1}: {error.strerror}", DECODE_STEP) from None
        if not self._frames:
            if self.decoded < self._info.frames:
                raise _error(
                    CORRUPT_VIDEO,
                    f"only {self.decoded} of {self._info.frames} frames could be decoded",
                    DECODE_STEP,
                )
            return None
        frame = self._frames.popleft()
        self.decoded += 1
        width, height = self._size
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
        turns = _quarter_turns(frame.rotation or 0)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def close(self) -> None:
        self._container.close()


class _WebPReader:
    """Frames of an animated WebP (Pillow), HWC uint8 RGB; transparency is dropped."""

    audio_stream = None
    audio_sink = None

    def __init__(self, path: Path, info: VideoInfo):
        self._image = Image.open(path, formats=["WEBP"])
        self._frames = info.frames
        self.decoded = 0

    def read(self) -> np.ndarray | None:
        if self.decoded >= self._frames:
            return None
        try:
            self._image.seek(self.decoded)
            rgb = np.asarray(self._image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, EOFError) as error:
            raise _error(CORRUPT_VIDEO, f"frame {self.decoded + 1}: {error}", DECODE_STEP) from None
        self.decoded += 1
        return rgb

    def close(self) -> None:
        self._image.close()


def _open_reader(path: Path, info: VideoInfo):
    try:
        return _WebPReader(path, info) if info.container == "webp" else _AVReader(path, info)
    except (av.FFmpegError, OSError) as error:
        raise _error(CORRUPT_VIDEO, f"the file cannot be opened again ({error})", DECODE_STEP) from None


# ---------------------------------------------------------------------------------------------
# Writing: video stream created from the first result; audio copied or re-encoded.


def _first_grid_pts(start_s: float, fps: Fraction) -> int:
    """The first frame's index on the 1/fps grid: frame ``i`` is at ``(first + i) / fps`` s."""
    return max(0, round(start_s * fps))


def _even(image: np.ndarray) -> np.ndarray:
    """Crop the last row/column of an odd-sized frame (4:2:0 chroma needs even sizes)."""
    height, width = image.shape[:2]
    return image[: height - height % 2, : width - width % 2]


class _VideoWriter:
    """Encodes result frames (HWC uint8 RGB/RGBA) into an MP4 or WebM at ``path``."""

    def __init__(self, path: Path, output: str, fps: Fraction, start_s: float, audio_stream, background):
        self._output = output
        self._fps = fps
        self._first_pts = _first_grid_pts(start_s, fps)
        self._background = background
        self._container = av.open(
            str(path), "w", format=output, options=_MP4_CONTAINER_OPTIONS if output == OUTPUT_MP4 else {}
        )
        self._lock = threading.Lock()
        self._video = None
        self._channels = 0
        self._shape: tuple[int, ...] | None = None
        self._backlog: list = []
        self._audio_out = None
        self.audio: str | None = None
        if audio_stream is not None and audio_stream.codec_context is not None:
            self._add_audio(audio_stream)

    def _add_audio(self, stream) -> None:
        codec = stream.codec_context.name
        if codec in COPY_AUDIO[self._output]:
            self._audio_out = self._container.add_stream_from_template(stream)
            self.audio = "copied"
            return
        encoder = AUDIO_ENCODER[self._output]
        rate = int(stream.codec_context.sample_rate or _OPUS_RATE)
        if encoder == "libopus" or rate not in _AAC_RATES:
            rate = _OPUS_RATE
        self._audio_out = self._container.add_stream(encoder, rate=rate)
        self._audio_out.layout = "mono" if (stream.codec_context.channels or 2) == 1 else "stereo"
        self.audio = f"re-encoded to {self._audio_out.codec_context.name}"

    def add_audio(self, packet) -> None:
        """Called by the reader's thread with each audio packet, in file order."""
        with self._lock:
            if self._video is None:
                self._backlog.append(packet)
            else:
                self._mux_audio(packet)

    def _mux_audio(self, packet) -> None:
        if self.audio == "copied":
            packet.stream = self._audio_out
            self._container.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            self._container.mux(self._audio_out.encode(frame))

    def _open_video(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if width < 2 or height < 2:
            raise ValueError(f"a {width}x{height} result frame cannot be encoded")
        codec = "libx264" if self._output == OUTPUT_MP4 else "libvpx-vp9"
        stream = self._container.add_stream(codec, rate=self._fps)
        stream.width, stream.height = width, height
        alpha = self._output == OUTPUT_WEBM and self._channels == 4
        stream.pix_fmt = "yuva420p" if alpha else "yuv420p"
        stream.options = dict(H264_OPTIONS if self._output == OUTPUT_MP4 else VP9_OPTIONS)
        context = stream.codec_context
        context.colorspace = Colorspace.ITU709
        context.color_primaries = 1  # AVCOL_PRI_BT709
        context.color_trc = 1  # AVCOL_TRC_BT709
        context.color_range = 1  # AVCOL_RANGE_MPEG (limited)
        self._video = stream

    def write(self, index: int, result: np.ndarray) -> None:
        """Encode result frame ``index`` (0-based, written in order)."""
        if not isinstance(result, np.ndarray) or result.dtype != np.uint8 or result.ndim != 3:
            raise TypeError(
                f"frame {index}: the frame function must return HWC uint8 RGB/RGBA, got {result!r:.80}"
            )
        if result.shape[2] not in (3, 4):
            raise ValueError(f"frame {index}: {result.shape[2]} channels; expected 3 (RGB) or 4 (RGBA)")
        if self._shape is None:
            self._shape = result.shape
            self._channels = result.shape[2]
        elif result.shape != self._shape:
            raise ValueError(
                f"frame {index}: shape {result.shape} differs from the first frame's {self._shape}"
            )
        if result.shape[2] == 4 and self._output == OUTPUT_MP4:
            result = composite_on_background(result, self._background)
        image = np.ascontiguousarray(_even(result))
        with self._lock:
            if self._video is None:
                self._open_video(image)
                for packet in self._backlog:
                    self._mux_audio(packet)
                self._backlog.clear()
            frame = av.VideoFrame.from_ndarray(image, format="rgba" if image.shape[2] == 4 else "rgb24")
            frame = frame.reformat(format=self._video.pix_fmt, dst_colorspace=Colorspace.ITU709)
            frame.colorspace = Colorspace.ITU709
            frame.color_range = 1
            frame.pts = self._first_pts + index
            self._container.mux(self._video.encode(frame))

    @property
    def size(self) -> tuple[int, int]:
        return (self._video.width, self._video.height) if self._video is not None else (0, 0)

    def finish(self) -> None:
        """Flush the encoders and write the trailer."""
        with self._lock:
            if self._video is None:
                raise ValueError("no frame was written")
            self._container.mux(self._video.encode(None))
            if self._audio_out is not None and self.audio != "copied":
                self._container.mux(self._audio_out.encode(None))
            self._container.close()

    def close(self) -> None:
        with self._lock:
            self._container.close()


class _JsonLinesWriter:
    """One JSON object per frame: ``{"frame": i, "time_s": its time in the video, **result}``."""

    audio = None
    size = (0, 0)

    def __init__(self, path: Path, fps: Fraction, start_s: float):
        self._file = path.open("w", encoding="utf-8")
        self._fps = fps
        self._first_pts = _first_grid_pts(start_s, fps)

    def write(self, index: int, result: dict) -> None:
        if not isinstance(result, dict):
            raise TypeError(
                f"frame {index}: a JSON output needs a dict per frame, got {type(result).__name__}"
            )
        if "frame" in result or "time_s" in result:
            raise ValueError(f"frame {index}: the result may not use the keys 'frame' or 'time_s'")
        time_s = round(float((self._first_pts + index) / self._fps), 6)
        line = {"frame": index, "time_s": time_s, **result}
        self._file.write(json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n")

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def close(self) -> None:
        self._file.close()


class _WithReport:
    """A video writer and a JSON-lines writer fed from one result: an ``(image, dict)`` pair."""

    def __init__(self, video: _VideoWriter, report: _JsonLinesWriter):
        self._video = video
        self._report = report
        self.audio = video.audio
        self.add_audio = video.add_audio

    @property
    def size(self) -> tuple[int, int]:
        return self._video.size

    def write(self, index: int, result) -> None:
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"frame {index}: with a report the frame function returns (image, dict)")
        self._video.write(index, result[0])
        self._report.write(index, result[1])

    def finish(self) -> None:
        self._video.finish()
        self._report.finish()

    def close(self) -> None:
        _quietly(self._video.close)
        self._report.close()


# ---------------------------------------------------------------------------------------------
# The streaming loop.


@dataclass
class _Flow:
    in_flight: int = 0
    max_in_flight: int = 0
    started: float = field(default_factory=time.monotonic)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


async def _stream_frames(read, write, frame_function, max_in_flight: int, total: int, progress) -> _Flow:
    """Read → frame_function (≤ ``max_in_flight`` frames between read and written) → write in order."""
    flow = _Flow()
    slots = asyncio.Semaphore(max_in_flight)
    pending: asyncio.Queue = asyncio.Queue()

    async def produce() -> None:
        try:
            while True:
                await slots.acquire()
                rgb = await read()
                if rgb is None:
                    break
                flow.in_flight += 1
                flow.max_in_flight = max(flow.max_in_flight, flow.in_flight)
                pending.put_nowait(asyncio.ensure_future(frame_function(rgb)))
            pending.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            pending.put_nowait(_Failed(error))

    producer = asyncio.ensure_future(produce())
    try:
        index = 0
        while True:
            item = await pending.get()
            if item is None:
                break
            if isinstance(item, _Failed):
                raise item.error
            result = await item
            await write(index, result)
            index += 1
            flow.in_flight -= 1
            slots.release()
            if progress is not None:
                progress(Progress(index, max(total, index), time.monotonic() - flow.started))
        return flow
    finally:
        producer.cancel()
        left = [producer]
        while not pending.empty():
            item = pending.get_nowait()
            if isinstance(item, asyncio.Future):
                item.cancel()
                left.append(item)
        await asyncio.gather(*left, return_exceptions=True)


def _partial_path(path: Path) -> Path:
    """The temporary file an output is written to, beside it (so the rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")


def _quietly(close: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        close()


async def _settle(future) -> None:
    """Wait for a worker-thread job even if the waiting task is cancelled meanwhile."""
    await asyncio.shield(future)


async def process_video(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    frame_function: FrameFunction,
    *,
    output: str = OUTPUT_MP4,
    limits: VideoLimits = VideoLimits(),
    max_in_flight: int = 8,
    progress: Callable[[Progress], None] | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
    info: VideoInfo | None = None,
    report: str | os.PathLike | None = None,
) -> VideoResult:
    """Run ``frame_function`` on every frame of the video at ``source``; write ``destination``.

    ``frame_function(rgb)``: an HWC uint8 RGB frame (upright) → HWC uint8 RGB, or RGBA (kept as
    alpha in ``"webm"``, composited on ``background`` in ``"mp4"``), or a JSON-serialisable dict
    for ``"jsonl"``; with ``report`` (a path, ``"mp4"``/``"webm"`` only) an ``(image, dict)``
    pair: the images make the video (an annotated one), the dicts the JSON lines at ``report``.
    It is called once per frame in frame order, with up to ``max_in_flight``
    frames between decode and write; results are written in frame order whatever order they
    complete in. Every result frame must have the first one's shape; an odd width or height
    loses its last column/row (4:2:0).

    The output keeps the frame count, fps and start (frame ``i`` at ``start_s + i / fps`` s, on
    the 1/fps grid), hence the duration, and the first audio stream: copied packet for packet
    when ``COPY_AUDIO`` allows it for the container, else re-encoded with ``AUDIO_ENCODER`` (AAC
    for MP4, Opus for WebM). Each output is written to a temporary file beside it and renamed onto
    it only after the last frame; on any error or cancellation no file is left behind. ``progress`` is called on the event loop
    after every written frame. PyAV work runs in two worker threads (read, write).

    Raises ``PipelineError`` (video codes, see :func:`probe_video`; ``corrupt_video`` at step
    "decode" for data that fails while streaming), ``ValueError``/``TypeError`` for a bad
    argument or a result of the wrong type or shape, and whatever ``frame_function`` raises.
    """
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {', '.join(OUTPUT_KINDS)}, not {output!r}")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    if report is not None and output == OUTPUT_JSONL:
        raise ValueError("report goes with a video output (mp4 or webm); jsonl is a report already")
    source, destination = Path(source), Path(destination)
    report = Path(report) if report is not None else None
    partial = _partial_path(destination)
    partial_report = _partial_path(report) if report is not None else None
    loop = asyncio.get_running_loop()
    read_thread = ThreadPoolExecutor(1, thread_name_prefix="facecraft-video-read")
    write_thread = ThreadPoolExecutor(1, thread_name_prefix="facecraft-video-write")
    reader = writer = None
    done = False

    def on(thread, function, *args):
        return loop.run_in_executor(thread, function, *args)

    try:
        if info is None:
            info = await on(read_thread, probe_video, source, limits)
        reader = await on(read_thread, _open_reader, source, info)
        if output == OUTPUT_JSONL:
            writer = await on(write_thread, _JsonLinesWriter, partial, info.fps, info.start_s)
        else:
            writer = await on(
                write_thread,
                _VideoWriter,
                partial,
                output,
                info.fps,
                info.start_s,
                reader.audio_stream,
                background,
            )
            reader.audio_sink = writer.add_audio
            if report is not None:
                lines = await on(write_thread, _JsonLinesWriter, partial_report, info.fps, info.start_s)
                writer = _WithReport(writer, lines)
        flow = await _stream_frames(
            lambda: on(read_thread, reader.read),
            lambda index, result: on(write_thread, writer.write, index, result),
            frame_function,
            max_in_flight,
            info.frames,
            progress,
        )
        await on(write_thread, writer.finish)
        frames = reader.decoded
        os.replace(partial, destination)
        if report is not None:
            os.replace(partial_report, report)
        done = True
        width, height = writer.size
        return VideoResult(
            destination, output, frames, info.fps, width, height, writer.audio, flow.max_in_flight, report
        )
    finally:
        # Each worker thread runs its jobs in order: a close queues behind a read or write still
        # running, so nothing is closed under a call that uses it.
        # A close that fails must not hide the error being raised nor keep the file.
        if reader is not None:
            await _settle(on(read_thread, _quietly, reader.close))
        if writer is not None and not done:
            await _settle(on(write_thread, _quietly, writer.close))
        if not done:
            for path in (partial, partial_report):
                if path is not None:
                    await _settle(on(write_thread, path.unlink, True))  # missing_ok
        read_thread.shutdown(wait=False)
        write_thread.shutdown(wait=False)


__all__ = [
    "OUTPUT_JSONL",
    "OUTPUT_KINDS",
    "OUTPUT_MP4",
    "OUTPUT_WEBM",
    "SUPPORTED_CODECS",
    "SUPPORTED_CONTAINERS",
    "CONTAINER_NAMES",
    "AudioInfo",
    "Progress",
    "VideoInfo",
    "VideoLimits",
    "VideoResult",
    "probe_video",
    "process_video",
    "sniff_container",
    "video_container",
]
