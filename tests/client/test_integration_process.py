"""``facecraft process`` end to end against the real embedded Triton."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from facecraft.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_process_folder_with_good_and_no_face_images(
    triton_server, astronaut_jpeg, no_face_jpeg, tmp_path, capsys, protocol
):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes(astronaut_jpeg)
    (photos / "gradient.jpg").write_bytes(no_face_jpeg)
    out = tmp_path / "out"
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    code = main(
        ["process", str(photos), "-o", str(out), "--url", url, "--protocol", protocol, "--concurrency", "2",
         "--no-enhance", "--width", "128", "--height", "160"]
    )  # fmt: skip
    assert code == 1  # the no-face photo counts as a failure
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.jpg", "astronaut.png"]
    assert Image.open(out / "astronaut.png").size == (128, 160)
    assert Image.open(io.BytesIO((out / "astronaut.jpg").read_bytes())).format == "JPEG"
    printed = capsys.readouterr().out
    assert "gradient.jpg" in printed and "no face" in printed
    assert printed.splitlines()[-1].split()[:4] == ["1", "1", "0", "2"]


def test_process_all_good_exits_zero_with_enhancement(triton_server, astronaut_jpeg, tmp_path, capsys):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    out = tmp_path / "out"
    assert (
        main(
            [
                "process",
                str(photo),
                "-o",
                str(out),
                "--url",
                triton_server.grpc_url,
                "--width",
                "96",
                "--height",
                "96",
                "--shared-memory",
            ]
        )
        == 0
    )
    assert (out / "me.png").is_file() and (out / "me.jpg").is_file()
    assert capsys.readouterr().out.splitlines()[-1].split()[:4] == ["1", "0", "0", "1"]


def test_process_server_down_fails_cleanly(astronaut_jpeg, tmp_path, capsys):
    from facecraft.runtime.server import free_port

    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    out = tmp_path / "out"
    assert (
        main(["process", str(photo), "-o", str(out), "--url", f"127.0.0.1:{free_port()}", "--timeout", "5"])
        == 1
    )
    assert not out.exists()  # nothing written: no output folder left behind
    assert "failed" in capsys.readouterr().out


def test_process_via_gateway(gateway_server, astronaut_jpeg, no_face_jpeg, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes(astronaut_jpeg)
    (photos / "gradient.jpg").write_bytes(no_face_jpeg)
    out = tmp_path / "out"
    code = main(["process", str(photos), "-o", str(out), "--via-gateway", gateway_server.url, "--no-enhance",
                 "--width", "120", "--height", "140", "--concurrency", "2"])  # fmt: skip
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.jpg", "astronaut.png"]
    assert Image.open(out / "astronaut.png").size == (120, 140)
    printed = capsys.readouterr().out
    assert "gradient.jpg" in printed and "no face" in printed


def test_process_folder_with_a_processor_writes_its_results_and_a_summary(
    triton_server, no_face_jpeg, tmp_path, capsys
):
    from pathlib import Path

    faces = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
    group = faces / "fr__two_people.jpg"
    if not group.is_file():
        pytest.skip(f"{group} is not available")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "group.jpg").write_bytes(group.read_bytes())
    (photos / "gradient.jpg").write_bytes(no_face_jpeg)
    out = tmp_path / "out"
    code = main(
        ["process", str(photos), "-o", str(out), "--url", triton_server.grpc_url,
         "--processor", "face_analyser", "--option", "annotate=true"]
    )  # fmt: skip
    assert code == 1  # the no-face photo counts
    assert sorted(p.name for p in out.iterdir()) == ["group.annotated.png", "group.json"]
    import json

    assert json.loads((out / "group.json").read_text())["face_count"] == 2
    printed = capsys.readouterr()
    assert printed.out.splitlines()[-1].split()[:4] == ["1", "1", "0", "2"]
    assert "face_analyser" in printed.err  # the progress bar names the processor


def test_process_refuses_a_bad_processor_option(triton_server, astronaut_jpeg, tmp_path, capsys):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    code = main(
        ["process", str(photo), "-o", str(tmp_path / "out"), "--url", triton_server.grpc_url,
         "--processor", "face_enhancer", "--option", "fidelity=3"]
    )  # fmt: skip
    assert code == 2 and "fidelity=3 is outside 0.0..1.0" in capsys.readouterr().err
