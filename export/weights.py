"""Official checkpoints: registry, download into a cache, checksum/size checks, strict loading.

Every failure is a typed ``WeightsError`` with a message meant for the user.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facecraft.export.temporaries import remove_stale, temporary_path


class WeightsError(Exception):
    """Base class of all weights problems (message is user-facing)."""


class WeightsNotFoundError(WeightsError):
    """A local checkpoint path does not exist."""


class DownloadError(WeightsError):
    """A download failed. ``offline`` is true when the host could not be reached at all."""

    def __init__(self, message: str, *, offline: bool = False):
        super().__init__(message)
        self.offline = offline


class ChecksumMismatchError(WeightsError):
    """A file's sha256 or size differs from the registry."""


class CorruptCheckpointError(WeightsError):
    """A file is not a readable PyTorch checkpoint with a state dict."""


class ArchitectureMismatchError(WeightsError):
    """A checkpoint's keys or shapes do not match the network."""


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint.

    ``sha256`` is None where the authors publish no checksum; then only the size is checked
    (``approx_bytes`` within ``size_tolerance``, the authors state sizes rounded to 0.1 MB) and
    the strict architecture load is what proves the file right.
    """

    variant: str
    filename: str
    url: str
    sha256: str | None
    approx_bytes: int | None
    size_tolerance: float
    checkpoint_key: str | None
    source: str


def _gdrive(file_id: str) -> str:
    # The usercontent endpoint with confirm=t skips Drive's "cannot scan for viruses" page.
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {
    "codeformer": OfficialWeights(
        variant="codeformer",
        filename="codeformer.pth",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        sha256=None,  # not published by the authors (release v0.1.0 lists no checksum)
        approx_bytes=376_637_898,  # GitHub release asset, "359 MB"
        size_tolerance=0.02,
        checkpoint_key="params_ema",
        source="sczhou/CodeFormer release v0.1.0",
    ),
    "u2net": OfficialWeights(
        variant="u2net",
        filename="u2net.pth",
        url=_gdrive("1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ"),
        sha256=None,  # not published by the authors
        approx_bytes=176_300_000,  # README: "u2net.pth (176.3 MB)"
        size_tolerance=0.02,
        checkpoint_key=None,
        source="xuebinqin/U-2-Net README (Google Drive)",
    ),
    "u2net_human_seg": OfficialWeights(
        variant="u2net_human_seg",
        filename="u2net_human_seg.pth",
        url=_gdrive("1m_Kgs91b21gayc2XLW0ou8yugAIadWVP"),
        sha256=None,  # not published by the authors
        approx_bytes=176_300_000,  # same architecture and format as u2net.pth
        size_tolerance=0.02,
        checkpoint_key=None,
        source="xuebinqin/U-2-Net README, human segmentation section (Google Drive)",
    ),
    "u2netp": OfficialWeights(
        variant="u2netp",
        filename="u2netp.pth",
        url=_gdrive("1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy"),
        sha256=None,  # not published by the authors
        approx_bytes=4_700_000,  # README: "u2netp.pth (4.7 MB)"
        size_tolerance=0.05,
        checkpoint_key=None,
        source="xuebinqin/U-2-Net README (Google Drive)",
    ),
}


def cache_dir() -> Path:
    """``$FACECRAFT_CACHE_DIR`` or ``~/.cache/facecraft``; official checkpoints go in ``weights/``."""
    root = os.environ.get("FACECRAFT_CACHE_DIR") or Path.home() / ".cache" / "facecraft"
    return Path(root) / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, *, sha256: str | None, approx_bytes: int | None, size_tolerance: float) -> None:
    """Raise ``ChecksumMismatchError`` when the file's sha256 (or, without one, its size) is off."""
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            raise ChecksumMismatchError(f"{path.name}: sha256 {actual} does not match the expected {sha256}")
        return
    if approx_bytes is not None:
        size = path.stat().st_size
        if abs(size - approx_bytes) > size_tolerance * approx_bytes:
            raise ChecksumMismatchError(
                f"{path.name}: {size} bytes, expected about {approx_bytes} (±{size_tolerance:.0%}); "
                "the download is incomplete or not the official file"
            )


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    approx_bytes: int | None = None,
    size_tolerance: float = 0.0,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` via a temp file in the same folder, verify, then rename.

    Nothing is left at ``dest`` (or as a temp file) when anything fails.
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dest, "part")
    tmp = temporary_path(dest, "part")
    request = urllib.request.Request(url, headers={"User-Agent": "facecraft-export"})
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise DownloadError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from error
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(f"cannot reach {url}: {reason}", offline=True) from error
        with response:
            if "text/html" in response.headers.get("Content-Type", ""):
                raise DownloadError(
                    f"{url} returned a web page instead of the checkpoint (quota or confirmation page); "
                    "download it in a browser and pass the file path with --weights PATH"
                )
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                open(tmp, "wb") as handle,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                    file=sys.stderr,
                ) as bar,
            ):
                try:
                    while block := response.read(1 << 20):
                        handle.write(block)
                        bar.update(len(block))
                except (TimeoutError, ConnectionError, OSError) as error:
                    raise DownloadError(f"downloading {url} was interrupted: {error}") from error
        if total is not None and tmp.stat().st_size != total:
            raise DownloadError(f"downloading {url}: got {tmp.stat().st_size} of {total} bytes")
        verify_file(tmp, sha256=sha256, approx_bytes=approx_bytes, size_tolerance=size_tolerance)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_official(variant: str, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Path of the verified official checkpoint for ``variant``: from the cache, else downloaded."""
    entry = OFFICIAL_WEIGHTS[variant]
    path = cache_dir() / entry.filename
    if path.is_file():
        try:
            verify_file(
                path,
                sha256=entry.sha256,
                approx_bytes=entry.approx_bytes,
                size_tolerance=entry.size_tolerance,
            )
            return path
        except ChecksumMismatchError:
            path.unlink()  # a bad cached copy: fetch it again
    return download(
        entry.url,
        path,
        sha256=entry.sha256,
        approx_bytes=entry.approx_bytes,
        size_tolerance=entry.size_tolerance,
        progress=progress,
        timeout=timeout,
    )


def read_state_dict(path: Path, checkpoint_key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (tensors only, no pickled code) and return its state dict.

    Unwraps ``params_ema`` / ``params`` / ``state_dict`` containers (``checkpoint_key`` first)
    and a ``module.`` prefix left by ``DataParallel``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive (since 1.6) or, before, a pickle (protocol byte 0x80).
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CorruptCheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {head.hex() or 'nothing'}, "
            "not a zip archive or a pickle); pass the .pth file"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CorruptCheckpointError(
            f"{path} holds pickled objects other than tensors, which are not loaded (they could run "
            f"code); re-save its state dict with torch.save(model.state_dict(), ...) "
            f"({str(error).splitlines()[0][:200]})"
        ) from error
    except Exception as error:  # torch raises many types for a damaged file
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise CorruptCheckpointError(f"{path} is not a readable PyTorch checkpoint: {first_line}") from error
    if not isinstance(checkpoint, Mapping):
        raise CorruptCheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    for key in (checkpoint_key, "params_ema", "params", "state_dict"):
        if key and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise CorruptCheckpointError(f"{path} contains no tensors")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, label: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a readable ``ArchitectureMismatchError``.

    BatchNorm ``num_batches_tracked`` counters (absent from checkpoints saved by PyTorch < 0.4.1)
    are not required: they do not affect inference.
    """
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if wrong_shape:
            parts.append(
                f"{len(wrong_shape)} keys of the wrong shape (file vs model): {_listing(wrong_shape, 3)}"
            )
        raise ArchitectureMismatchError(f"{label} does not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
