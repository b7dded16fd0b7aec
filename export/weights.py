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
import zlib
from collections.abc import Callable, Mapping
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
    """A file's sha256, CRC32 (published ``.hash`` file) or size differs from the registry."""


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

    ``format`` is ``"pth"`` (a PyTorch state dict, loaded strictly into our definition) or
    ``"onnx"`` (published as ONNX only: installed as the published file, see
    ``facecraft.export.onnx_install``). ``hash_url`` is a published CRC32 ``.hash`` file (8 hex
    digits, FaceFusion's asset convention) that the download is checked against.
    """

    variant: str
    filename: str
    url: str
    sha256: str | None
    approx_bytes: int | None
    size_tolerance: float
    checkpoint_key: str | None
    source: str
    format: str = "pth"
    hash_url: str | None = None


def _facefusion_asset(release: str, filename: str) -> str:
    return f"https://github.com/facefusion/facefusion-assets/releases/download/{release}/{filename}"


def _facefusion_onnx(variant: str, original: str) -> OfficialWeights:
    """An insightface ONNX-only model as FaceFusion's ``models-3.0.0`` asset, checked against the
    CRC32 ``.hash`` file FaceFusion publishes beside it (no sha256 or size is published)."""
    return OfficialWeights(
        variant=variant,
        filename=f"{variant}.onnx",
        url=_facefusion_asset("models-3.0.0", f"{variant}.onnx"),
        sha256=None,
        approx_bytes=None,
        size_tolerance=0.0,
        checkpoint_key=None,
        source=f"{original}, as FaceFusion's models-3.0.0 asset",
        format="onnx",
        hash_url=_facefusion_asset("models-3.0.0", f"{variant}.hash"),
    )


def _realesrgan(variant: str, filename: str, release: str) -> OfficialWeights:
    """A Real-ESRGAN release asset (weights under ``params_ema``), checked by size and strict load."""
    return OfficialWeights(
        variant=variant,
        filename=filename,
        url=f"https://github.com/xinntao/Real-ESRGAN/releases/download/{release}/{filename}",
        sha256=None,  # not published by the authors
        approx_bytes=66_800_000,
        size_tolerance=0.03,
        checkpoint_key="params_ema",
        source=f"xinntao/Real-ESRGAN release {release}",
    )


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
    "arcface_w600k_r50": _facefusion_onnx("arcface_w600k_r50", "insightface buffalo_l w600k_r50.onnx"),
    "inswapper_128": _facefusion_onnx("inswapper_128", "insightface inswapper_128.onnx"),
    # No checksum is published; ≈ 66.8 MB is 16.70 M float32 parameters (our count, not a published size).
    "realesrgan_x4plus": _realesrgan("realesrgan_x4plus", "RealESRGAN_x4plus.pth", "v0.1.0"),
    "realesrgan_x2plus": _realesrgan("realesrgan_x2plus", "RealESRGAN_x2plus.pth", "v0.2.1"),
}

MIRROR_ENV = "FACECRAFT_WEIGHTS_MIRROR"
# (bytes received, bytes expected or None) after each block of a download.
ProgressCallback = Callable[[int, "int | None"], None]


def cache_dir() -> Path:
    """``$FACECRAFT_CACHE_DIR`` or ``~/.cache/facecraft``; official checkpoints go in ``weights/``."""
    root = os.environ.get("FACECRAFT_CACHE_DIR") or Path.home() / ".cache" / "facecraft"
    return Path(root) / "weights"


def mirror_url() -> str | None:
    """``$FACECRAFT_WEIGHTS_MIRROR`` without a trailing slash, or None when unset.

    A mirror is an HTTP(S) folder an operator fills with the official files (air-gapped hosts):
    ``<mirror>/<filename>`` for the ``full`` preset, ``<mirror>/<preset>/<filename>`` for others,
    each optionally beside ``<file>.sha256`` (``sha256sum`` format) which must then match.
    """
    value = (os.environ.get(MIRROR_ENV) or "").strip()
    return value.rstrip("/") or None


@dataclass(frozen=True)
class FetchedWeights:
    """A verified checkpoint on disk: where it came from and its sha256 (hex)."""

    path: Path
    url: str
    sha256: str


def weights_location(variant: str, preset: str = "full") -> tuple[str, Path]:
    """(URL, cache path) of ``variant``'s checkpoint for ``preset``.

    The registry's URL for ``full``; with a mirror (:func:`mirror_url`) the mirror's file. Presets
    other than ``full`` have no published weights: only a mirror can serve them
    (``WeightsError`` otherwise).
    """
    entry = OFFICIAL_WEIGHTS[variant]
    mirror = mirror_url()
    folder = "" if preset == "full" else f"{preset}/"
    if mirror is None and preset != "full":
        raise WeightsError(
            f"there are no official weights for the {preset!r} preset; use --preset full "
            f"(or serve them from a mirror, ${MIRROR_ENV})"
        )
    url = entry.url if mirror is None else f"{mirror}/{folder}{entry.filename}"
    return url, cache_dir() / folder / entry.filename


def _mirror_checksum(url: str, timeout: float) -> str | None:
    """The sha256 published beside a mirror file (``<url>.sha256``), None when there is none."""
    try:
        with urllib.request.urlopen(f"{url}.sha256", timeout=timeout) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise DownloadError(f"reading {url}.sha256 failed: HTTP {error.code} {error.reason}") from error
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
        raise DownloadError(
            f"cannot reach {url}.sha256: {getattr(error, 'reason', error)}", offline=True
        ) from error
    digest = text.split()[0].lower() if text.split() else ""
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise DownloadError(f"{url}.sha256 does not hold a sha256 digest")
    return digest


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def crc32_of(path: Path, chunk: int = 1 << 20) -> str:
    """The file's CRC32 as 8 lower-case hex digits (the form of FaceFusion's ``.hash`` files)."""
    value = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            value = zlib.crc32(block, value)
    return f"{value & 0xFFFFFFFF:08x}"


def verify_file(
    path: Path,
    *,
    sha256: str | None,
    approx_bytes: int | None,
    size_tolerance: float,
    crc32: str | None = None,
) -> None:
    """Raise ``ChecksumMismatchError`` when the file's sha256 or CRC32 (or, without either, its
    size) is off."""
    if crc32 is not None:
        actual = crc32_of(path)
        if actual != crc32.strip().lower():
            raise ChecksumMismatchError(
                f"{path.name}: CRC32 {actual} does not match the published {crc32.strip()}"
            )
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
    crc32: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download ``url`` to ``dest`` via a temp file in the same folder, verify, then rename.

    ``on_progress(received_bytes, total_bytes_or_None)`` is called after every block (the
    gateway's download operations report it). Nothing is left at ``dest`` (or as a temp file)
    when anything fails.
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
                received = 0
                try:
                    while block := response.read(1 << 20):
                        handle.write(block)
                        bar.update(len(block))
                        received += len(block)
                        if on_progress is not None:
                            on_progress(received, total)
                except (TimeoutError, ConnectionError, OSError) as error:
                    raise DownloadError(f"downloading {url} was interrupted: {error}") from error
        if total is not None and tmp.stat().st_size != total:
            raise DownloadError(f"downloading {url}: got {tmp.stat().st_size} of {total} bytes")
        verify_file(tmp, sha256=sha256, approx_bytes=approx_bytes, size_tolerance=size_tolerance, crc32=crc32)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


HASH_SUFFIX = ".hash"


def _published_crc32(entry: OfficialWeights, *, timeout: float) -> str | None:
    """The CRC32 of ``entry``'s published ``.hash`` file (cached beside the weights), or None."""
    if entry.hash_url is None:
        return None
    path = cache_dir() / (Path(entry.filename).stem + HASH_SUFFIX)
    if not path.is_file():
        download(entry.hash_url, path, progress=False, timeout=timeout)
    text = path.read_text(encoding="ascii", errors="replace").strip().lower()
    if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
        path.unlink()
        raise ChecksumMismatchError(f"{entry.hash_url} is not a CRC32 hash file (got {text[:40]!r})")
    return text


def fetch_official(
    variant: str,
    *,
    preset: str = "full",
    progress: bool = True,
    timeout: float = 30.0,
    on_progress: ProgressCallback | None = None,
) -> FetchedWeights:
    """The verified official checkpoint for ``variant`` (and ``preset``): from the cache, else
    downloaded (:func:`weights_location`; a mirror's ``.sha256`` is checked besides the registry's).

    Entries with a ``hash_url`` (FaceFusion's ONNX assets) are also checked against the CRC32 it
    publishes (fetched first, cached beside the file) unless a mirror is in use.

    Raises ``DownloadError`` (``offline`` when the host cannot be reached), ``ChecksumMismatchError``,
    or ``WeightsError`` for a preset without official weights and no mirror.
    """
    entry = OFFICIAL_WEIGHTS[variant]
    url, path = weights_location(variant, preset)
    expected = entry.sha256
    if mirror_url() is not None:
        published = _mirror_checksum(url, timeout)
        if expected and published and published != expected.lower():
            raise ChecksumMismatchError(
                f"{url}.sha256 says {published}, the registry says {expected} for {entry.filename}"
            )
        expected = expected or published
    if preset != "full" and expected is None:
        raise WeightsError(f"{url}: a {preset!r} checkpoint needs its sha256 beside it ({url}.sha256)")
    crc32 = _published_crc32(entry, timeout=timeout) if mirror_url() is None else None
    checks = {
        "sha256": expected,
        "approx_bytes": None if expected else entry.approx_bytes,
        "size_tolerance": entry.size_tolerance,
        "crc32": crc32,
    }
    if path.is_file():
        try:
            verify_file(path, **checks)
            return FetchedWeights(path, url, expected or sha256_of(path))
        except ChecksumMismatchError:
            path.unlink()  # a bad cached copy: fetch it again
    download(url, path, progress=progress, timeout=timeout, on_progress=on_progress, **checks)
    return FetchedWeights(path, url, expected or sha256_of(path))


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
