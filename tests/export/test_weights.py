import hashlib
from pathlib import Path

import pytest
import torch

from facecraft.export import weights
from facecraft.export.codeformer_arch import CODEFORMER_PRESETS, CodeFormer
from facecraft.export.u2net_arch import U2NET_TINY, U2Net
from facecraft.runtime.ports import free_port

PAYLOAD = b"facecraft-test-checkpoint" * 1000


def _closed_port() -> int:
    return free_port()


def test_download_verifies_checksum_and_renames(file_server, tmp_path):
    root, base = file_server
    (root / "ok.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "ok.pth"
    got = weights.download(f"{base}/ok.pth", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["ok.pth"]


def test_download_checksum_mismatch_leaves_nothing(file_server, tmp_path):
    root, base = file_server
    (root / "bad.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "bad.pth"
    with pytest.raises(weights.ChecksumMismatchError, match="sha256"):
        weights.download(f"{base}/bad.pth", dest, sha256="0" * 64, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_download_size_check_without_published_checksum(file_server, tmp_path):
    root, base = file_server
    (root / "small.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "small.pth"
    with pytest.raises(weights.ChecksumMismatchError, match="expected about"):
        weights.download(
            f"{base}/small.pth", dest, approx_bytes=10 * len(PAYLOAD), size_tolerance=0.02, progress=False
        )
    assert not dest.exists()


def test_download_404_is_a_download_error_not_offline(file_server, tmp_path):
    _, base = file_server
    with pytest.raises(weights.DownloadError, match="HTTP 404") as info:
        weights.download(f"{base}/missing.pth", tmp_path / "cache" / "m.pth", progress=False)
    assert not info.value.offline
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_host_is_offline(tmp_path):
    with pytest.raises(weights.DownloadError) as info:
        weights.download(
            f"http://127.0.0.1:{_closed_port()}/x.pth", tmp_path / "x.pth", progress=False, timeout=5
        )
    assert info.value.offline


def test_fetch_official_uses_cache_dir_and_then_the_cached_copy(file_server, tmp_path, monkeypatch):
    root, base = file_server
    (root / "u2netp.pth").write_bytes(PAYLOAD)
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path / "cache"))
    entry = weights.OfficialWeights(
        "u2netp",
        "u2netp.pth",
        f"{base}/u2netp.pth",
        hashlib.sha256(PAYLOAD).hexdigest(),
        None,
        0.0,
        None,
        "test",
    )
    monkeypatch.setitem(weights.OFFICIAL_WEIGHTS, "u2netp", entry)
    fetched = weights.fetch_official("u2netp", progress=False)
    assert fetched.path == tmp_path / "cache" / "weights" / "u2netp.pth"
    assert fetched.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    (root / "u2netp.pth").unlink()  # second call must not need the server
    assert weights.fetch_official("u2netp", progress=False).path == fetched.path


def test_a_mirror_serves_a_preset_with_its_published_sha256_and_reports_progress(
    file_server, tmp_path, monkeypatch
):
    root, base = file_server
    (root / "tiny").mkdir()
    (root / "tiny" / "u2netp.pth").write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    (root / "tiny" / "u2netp.pth.sha256").write_text(f"{digest}  u2netp.pth\n")
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(weights.MIRROR_ENV, base + "/")
    seen = []
    fetched = weights.fetch_official(
        "u2netp", preset="tiny", progress=False, on_progress=lambda done, total: seen.append((done, total))
    )
    assert fetched.url == f"{base}/tiny/u2netp.pth" and fetched.sha256 == digest
    assert fetched.path == tmp_path / "cache" / "weights" / "tiny" / "u2netp.pth"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_a_mirror_file_that_differs_from_its_sha256_is_refused(file_server, tmp_path, monkeypatch):
    root, base = file_server
    (root / "tiny").mkdir()
    (root / "tiny" / "u2netp.pth").write_bytes(PAYLOAD)
    (root / "tiny" / "u2netp.pth.sha256").write_text("0" * 64)
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(weights.MIRROR_ENV, base)
    with pytest.raises(weights.ChecksumMismatchError):
        weights.fetch_official("u2netp", preset="tiny", progress=False)
    assert not list((tmp_path / "cache" / "weights" / "tiny").iterdir())


def test_a_preset_without_official_weights_needs_a_mirror(monkeypatch):
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    with pytest.raises(weights.WeightsError, match="no official weights for the 'tiny' preset"):
        weights.fetch_official("u2netp", preset="tiny", progress=False)


def test_registry_covers_all_official_variants():
    assert set(weights.OFFICIAL_WEIGHTS) == {
        "codeformer", "u2net", "u2net_human_seg", "u2netp",
        "arcface_w600k_r50", "inswapper_128", "realesrgan_x4plus", "realesrgan_x2plus",
    }  # fmt: skip
    assert weights.OFFICIAL_WEIGHTS["codeformer"].url.endswith("/v0.1.0/codeformer.pth")
    assert weights.OFFICIAL_WEIGHTS["codeformer"].checkpoint_key == "params_ema"
    for entry in weights.OFFICIAL_WEIGHTS.values():
        # always something to verify
        assert entry.sha256 is not None or entry.approx_bytes or entry.hash_url
    x4, x2 = weights.OFFICIAL_WEIGHTS["realesrgan_x4plus"], weights.OFFICIAL_WEIGHTS["realesrgan_x2plus"]
    assert x4.url.endswith("/v0.1.0/RealESRGAN_x4plus.pth") and x4.checkpoint_key == "params_ema"
    assert x2.url.endswith("/v0.2.1/RealESRGAN_x2plus.pth") and x2.checkpoint_key == "params_ema"
    for name in ("arcface_w600k_r50", "inswapper_128"):
        entry = weights.OFFICIAL_WEIGHTS[name]
        assert entry.format == "onnx" and "/models-3.0.0/" in entry.url
        assert entry.hash_url == entry.url.removesuffix(".onnx") + ".hash"


def test_fetch_official_checks_the_published_crc32_hash_file(file_server, tmp_path, monkeypatch):
    import zlib

    root, base = file_server
    (root / "model.onnx").write_bytes(PAYLOAD)
    (root / "model.hash").write_text(f"{zlib.crc32(PAYLOAD):08x}")
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path / "cache"))
    entry = weights.OfficialWeights(
        "inswapper_128", "model.onnx", f"{base}/model.onnx", None, None, 0.0, None, "test",
        format="onnx", hash_url=f"{base}/model.hash",
    )  # fmt: skip
    monkeypatch.setitem(weights.OFFICIAL_WEIGHTS, "inswapper_128", entry)
    path = weights.fetch_official("inswapper_128", progress=False).path
    assert path.read_bytes() == PAYLOAD and (path.parent / "model.hash").is_file()
    # A published hash that does not match: the download is refused and nothing is kept.
    path.unlink()
    (path.parent / "model.hash").unlink()
    (root / "model.hash").write_text("deadbeef")
    with pytest.raises(weights.ChecksumMismatchError, match="CRC32"):
        weights.fetch_official("inswapper_128", progress=False)
    assert not path.exists()
    (root / "model.hash").write_text("<html>quota</html>")
    (path.parent / "model.hash").unlink()
    with pytest.raises(weights.ChecksumMismatchError, match="not a CRC32 hash file"):
        weights.fetch_official("inswapper_128", progress=False)


def test_official_format_codeformer_checkpoint_loads_strict(tmp_path):
    torch.manual_seed(1)
    source = CodeFormer(CODEFORMER_PRESETS["tiny"])
    path = tmp_path / "codeformer.pth"
    torch.save({"params_ema": source.state_dict()}, path)
    state = weights.read_state_dict(path, "params_ema")
    torch.manual_seed(2)
    target = CodeFormer(CODEFORMER_PRESETS["tiny"])
    weights.load_strict(target, state, label=path.name)
    assert torch.equal(target.quantize.embedding.weight, source.quantize.embedding.weight)


def test_u2net_checkpoint_without_bn_counters_and_with_module_prefix_loads(tmp_path):
    source = U2Net(U2NET_TINY)
    state = {
        f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "u2net.pth"
    torch.save(state, path)
    weights.load_strict(U2Net(U2NET_TINY), weights.read_state_dict(path), label="u2net.pth")


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "u2net.pth"
    torch.save(U2Net(U2NET_TINY).state_dict(), path)
    with pytest.raises(weights.ArchitectureMismatchError) as info:
        weights.load_strict(
            CodeFormer(CODEFORMER_PRESETS["tiny"]), weights.read_state_dict(path), label="u2net.pth"
        )
    message = str(info.value)
    assert "missing keys: position_emb, encoder.blocks.0.weight" in message
    assert "unexpected keys: stage1.rebnconvin.conv_s1.weight" in message
    assert "more)" in message  # truncated lists


def test_wrong_shapes_are_reported(tmp_path):
    from facecraft.export.u2net_arch import U2NETP

    with torch.device("meta"):
        bigger = U2Net(U2NETP).state_dict()
    with pytest.raises(weights.ArchitectureMismatchError, match="wrong shape"):
        weights.load_strict(U2Net(U2NET_TINY), bigger, label="u2netp.pth")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match="not found"):
        weights.read_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(
        weights.CorruptCheckpointError, match="is not a PyTorch checkpoint .*starts with 3c68746d"
    ):
        weights.read_state_dict(junk)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(64, 64)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(weights.CorruptCheckpointError, match="not a readable PyTorch checkpoint") as caught:
        weights.read_state_dict(truncated)
    assert "\n" not in str(caught.value)
    pickled = tmp_path / "pickled.pth"
    torch.save({"w": torch.zeros(2), "config": Path("x")}, pickled)  # an object beyond tensors
    with pytest.raises(weights.CorruptCheckpointError, match="pickled objects other than tensors") as caught:
        weights.read_state_dict(pickled)
    assert "\n" not in str(caught.value) and "weights_only set to False" not in str(caught.value)
    empty = tmp_path / "empty.pth"
    torch.save({"params_ema": {}}, empty)
    with pytest.raises(weights.CorruptCheckpointError):
        weights.read_state_dict(empty)


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("FACECRAFT_CACHE_DIR", raising=False)
    assert weights.cache_dir() == Path.home() / ".cache" / "facecraft" / "weights"
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path))
    assert weights.cache_dir() == tmp_path / "weights"
