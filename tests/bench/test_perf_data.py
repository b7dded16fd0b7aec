"""perf_analyzer input data: length-prefixed BYTES payload, shape [1], round-robin entries."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from facecraft.bench.perf_data import build_perf_input_data, perf_input_entry, serialize_bytes_element
from facecraft.cli import main


def test_entry_is_length_prefixed_and_matches_tritonclient_serialisation():
    image = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
    entry = perf_input_entry(image)
    assert entry["IMAGE"]["shape"] == [1]
    payload = base64.b64decode(entry["IMAGE"]["content"]["b64"])
    assert payload[:4] == struct.pack("<I", len(image))
    assert payload[4:] == image
    assert payload == serialize_byte_tensor(np.array([image], dtype=np.object_)).item()
    assert serialize_bytes_element(b"") == b"\x00\x00\x00\x00"


def test_build_requires_images():
    with pytest.raises(ValueError):
        build_perf_input_data([])


def test_perf_data_cli_writes_one_entry_per_photo(tmp_path, astronaut_jpeg, astronaut_png, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(astronaut_jpeg)
    (photos / "b.png").write_bytes(astronaut_png)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "data.json"
    assert main(["perf-data", str(photos), "-o", str(out)]) == 0
    document = json.loads(out.read_text())
    assert list(document) == ["data"]
    assert len(document["data"]) == 2
    decoded = [base64.b64decode(e["IMAGE"]["content"]["b64"])[4:] for e in document["data"]]
    assert decoded == [astronaut_jpeg, astronaut_png]
    assert "wrote 2" in capsys.readouterr().out


def test_perf_data_cli_reports_missing_folder(tmp_path, capsys):
    assert main(["perf-data", str(tmp_path / "missing"), "-o", str(tmp_path / "x.json")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
