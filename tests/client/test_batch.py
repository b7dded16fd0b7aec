"""Batch runner: input collection, atomic outputs, concurrency, outcomes and the summary table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from facecraft.client.batch import (
    STATUS_FAILED,
    STATUS_NO_FACE,
    STATUS_OK,
    FileOutcome,
    collect_images,
    format_summary,
    process_files,
    write_atomically,
)
from facecraft.client.errors import InvalidImage, NoFaceDetected
from facecraft.client.result import PortraitResult


def make_result(tag: bytes) -> PortraitResult:
    return PortraitResult(
        png=b"png-" + tag,
        jpeg=b"jpg-" + tag,
        face_box=(1, 2, 3, 4),
        face_count=1,
        jpeg_cap_met=True,
        output_size=(64, 64),
    )


def test_collect_images_expands_folders_and_rejects_clashing_stems(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.jpg", "a.PNG", "c.txt"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "z.webp"
    single.write_bytes(b"x")
    assert [p.name for p in collect_images([folder, single])] == ["a.PNG", "b.jpg", "z.webp"]
    (folder / "b.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="would both write b"):
        collect_images([folder])
    with pytest.raises(FileNotFoundError):
        collect_images([tmp_path / "nope"])


def test_collect_images_includes_phone_formats(tmp_path):
    for name in ("IMG_0001.HEIC", "b.heif", "c.avif", "d.mov"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_images([tmp_path])] == ["IMG_0001.HEIC", "b.heif", "c.avif"]


def test_write_atomically_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out" / "x.png"
    write_atomically(target, b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]


def test_videos_in_scanned_folders_are_named_not_silently_skipped(tmp_path):
    from facecraft.client.batch import videos_in_folders
    from tests.fixtures.videos import write_clip

    write_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    assert videos_in_folders([tmp_path, tmp_path / "photo.jpg"]) == [tmp_path / "clip.mp4"]
    assert collect_images([tmp_path]) == [tmp_path / "photo.jpg"]  # the scan itself takes photos only


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    from facecraft.client.batch import _UMASK

    target = tmp_path / "out.png"
    write_atomically(target, b"data")
    assert target.stat().st_mode & 0o777 == 0o666 & ~_UMASK  # mkstemp alone gives 0600


def test_process_files_writes_outputs_and_classifies_failures(tmp_path):
    inputs = []
    for name in ("good.jpg", "noface.jpg", "broken.jpg"):
        path = tmp_path / name
        path.write_bytes(name.encode())
        inputs.append(path)
    in_flight = 0
    peak = 0

    async def processor(data: bytes, name: str) -> PortraitResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if name == "noface.jpg":
            raise NoFaceDetected("no_face_detected: detect: none", step="detect")
        if name == "broken.jpg":
            raise InvalidImage("invalid_image: decode: corrupt", step="decode")
        return make_result(data)

    seen: list[FileOutcome] = []
    out = tmp_path / "out"
    outcomes = asyncio.run(process_files(inputs, out, processor, concurrency=2, on_done=seen.append))
    assert [o.status for o in outcomes] == [STATUS_OK, STATUS_NO_FACE, STATUS_FAILED]
    assert len(seen) == 3
    assert peak == 2
    assert (out / "good.png").read_bytes() == b"png-good.jpg"
    assert (out / "good.jpg").read_bytes() == b"jpg-good.jpg"
    assert sorted(p.name for p in out.iterdir()) == ["good.jpg", "good.png"]
    assert "corrupt" in outcomes[2].error


def test_summary_lists_problems_and_counts():
    outcomes = [
        FileOutcome(Path("a.jpg"), STATUS_OK, 1.0),
        FileOutcome(Path("giraffe.jpg"), STATUS_NO_FACE, 1.0, "no_face_detected: detect: none"),
        FileOutcome(Path("bad.png"), STATUS_FAILED, 1.0, "invalid_image: decode: corrupt"),
    ]
    summary = format_summary(outcomes, elapsed_s=2.0)
    lines = summary.splitlines()
    assert any(line.startswith("giraffe.jpg") and "no face" in line for line in lines)
    assert any(line.startswith("bad.png") and "failed" in line and "corrupt" in line for line in lines)
    header, counts = lines[-2].split(), lines[-1].split()
    assert header[0] == "ok"
    assert counts == ["1", "1", "1", "3", "2.00", "0.50"]
