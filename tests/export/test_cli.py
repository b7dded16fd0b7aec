import pytest
import torch

from facecraft.cli import main
from facecraft.export.u2net_arch import U2NET_TINY, U2Net


def _files(repo):
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) if repo.exists() else []


def test_unknown_model_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "gfpgan", "--repo", str(tmp_path)])
    assert info.value.code == 2
    assert "invalid choice: 'gfpgan'" in capsys.readouterr().err


def test_missing_weights_file_one_line_no_files(tmp_path, capsys):
    repo = tmp_path / "repo"
    code = main(
        ["export", "u2net", "--preset", "tiny", "--weights", str(tmp_path / "nope.pth"), "--repo", str(repo)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"facecraft: error: weights file not found: {tmp_path / 'nope.pth'}"
    assert _files(repo) == []


def test_wrong_architecture_checkpoint_one_line_no_onnx(tmp_path, capsys):
    path = tmp_path / "u2net.pth"
    torch.save(U2Net(U2NET_TINY).state_dict(), path)
    repo = tmp_path / "repo"
    code = main(["export", "codeformer", "--preset", "tiny", "--weights", str(path), "--repo", str(repo)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("facecraft: error: codeformer: ")
    assert "does not fit this architecture" in err[0] and "missing keys" in err[0]
    assert not any(name.endswith(".onnx") or ".tmp" in name for name in _files(repo))


def test_official_weights_for_tiny_preset_is_a_clear_error(tmp_path, capsys):
    code = main(["export", "u2net", "--preset", "tiny", "--weights", "official", "--repo", str(tmp_path)])
    assert code == 2
    assert "no official weights for the 'tiny' preset" in capsys.readouterr().err


def test_tiny_export_prints_progress_and_untrained_summary(tmp_path, capsys):
    repo = tmp_path / "repo"
    code = main(
        [
            "export",
            "u2net",
            "--variant",
            "u2netp",
            "--preset",
            "tiny",
            "--weights",
            "random",
            "--seed",
            "4",
            "--repo",
            str(repo),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert "parity" in err and "UNTRAINED" in err
    assert "exported u2net (u2netp, tiny" in out
    assert "UNTRAINED (random weights, seed 4)" in out and "parity max|diff| b1=" in out
    assert _files(repo) == ["u2net/1/export.json", "u2net/1/model.onnx"]


def test_u2netp_is_exported_by_name_with_its_config(tmp_path, capsys):
    from facecraft.runtime.model_config import load_config
    from tests.fixtures.triton import copy_model_repository

    repo = copy_model_repository(tmp_path / "repo")
    code = main(["export", "u2netp", "--preset", "tiny", "--weights", "random", "--repo", str(repo)])
    assert code == 0
    assert "exported u2netp (u2netp, tiny" in capsys.readouterr().out
    assert load_config(repo / "u2netp" / "config.pbtxt").name == "u2netp"
    assert (repo / "u2netp" / "1" / "model.onnx").is_file() and not (
        repo / "u2net" / "1" / "model.onnx"
    ).exists()
