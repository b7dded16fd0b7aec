from facecraft.export.metadata import metadata_path, read_export_metadata, write_json_atomic


def test_roundtrip_and_absent(tmp_path):
    model_dir = tmp_path / "u2net"
    assert read_export_metadata(model_dir) is None
    write_json_atomic(metadata_path(model_dir), {"model": "u2net", "trained": False})
    assert read_export_metadata(model_dir) == {"model": "u2net", "trained": False}
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["export.json"]


def test_unreadable_record_is_none(tmp_path):
    path = metadata_path(tmp_path / "codeformer")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_export_metadata(tmp_path / "codeformer") is None
    path.write_text("[1, 2]")
    assert read_export_metadata(tmp_path / "codeformer") is None
