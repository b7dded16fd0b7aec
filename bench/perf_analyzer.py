"""Install NVIDIA's ``perf_analyzer`` binary without changing the installed tritonclient.

    python -m facecraft.bench.perf_analyzer install     # or: make perf-analyzer

The PyPI package ``perf-analyzer`` ships no binary; the ``tritonclient==2.51.0`` wheel does
(``tritonclient-2.51.0.data/data/bin/perf_analyzer``, a wheel data file), and it runs on glibc ≥ 2.36 with Debian's ``libb64-0d`` and the
CUDA runtime that the nvidia-pytriton wheel bundles (``site-packages/nvidia_pytriton.libs``). This
script downloads that wheel with ``pip download --no-deps`` into a cache folder, extracts only the
binary to ``.facecraft/bin/perf_analyzer`` and prints how to run it with the right
``LD_LIBRARY_PATH``. Nothing is installed into the environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

WHEEL_VERSION = "2.51.0"
WHEEL_MEMBER = f"tritonclient-{WHEEL_VERSION}.data/data/bin/perf_analyzer"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BIN_DIR = REPO_ROOT / ".facecraft" / "bin"
DEFAULT_CACHE_DIR = REPO_ROOT / ".facecraft" / "cache" / "wheels"
DEFAULT_LIB_DIR = REPO_ROOT / ".facecraft" / "lib"


def pytriton_libs_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"


def library_path(lib_dir: Path = DEFAULT_LIB_DIR) -> str:
    """``LD_LIBRARY_PATH`` for the binary: the soname links made by ``link_missing_libraries``."""
    existing = os.environ.get("LD_LIBRARY_PATH")
    return os.pathsep.join([str(lib_dir)] + ([existing] if existing else []))


def missing_libraries(binary: Path, lib_dir: Path = DEFAULT_LIB_DIR) -> list[str]:
    """Sonames ``ldd`` cannot resolve for ``binary`` (e.g. ``libcudart.so.12``)."""
    env = dict(os.environ, LD_LIBRARY_PATH=library_path(lib_dir))
    completed = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True, check=False)
    return [line.split("=>")[0].strip() for line in completed.stdout.splitlines() if "not found" in line]


def link_missing_libraries(binary: Path, lib_dir: Path = DEFAULT_LIB_DIR) -> list[str]:
    """Link each missing soname to nvidia-pytriton's bundled copy; returns sonames still missing.

    auditwheel renamed the bundled libraries (``libcudart-09529672.so.12.6.77``), so the soname
    the binary asks for (``libcudart.so.12``) is created as a symlink in ``lib_dir``.
    """
    lib_dir.mkdir(parents=True, exist_ok=True)
    bundled = pytriton_libs_dir()
    for soname in missing_libraries(binary, lib_dir):
        base, _, version = soname.partition(".so")
        candidates = sorted(bundled.glob(f"{base}-*.so{version}*")) if bundled.is_dir() else []
        if candidates:
            link = lib_dir / soname
            link.unlink(missing_ok=True)
            link.symlink_to(candidates[0])
    return missing_libraries(binary, lib_dir)


def download_wheel(cache_dir: Path) -> Path:
    """``pip download tritonclient==2.51.0 --no-deps`` into ``cache_dir`` (reused when present)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(f"tritonclient-{WHEEL_VERSION}-*manylinux*x86_64.whl"))
    if wheels:
        return wheels[-1]
    command = [
        sys.executable, "-m", "pip", "download", f"tritonclient=={WHEEL_VERSION}", "--no-deps",
        "--only-binary=:all:", "--platform", "manylinux1_x86_64", "--dest", str(cache_dir),
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    wheels = sorted(cache_dir.glob(f"tritonclient-{WHEEL_VERSION}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download produced no tritonclient {WHEEL_VERSION} wheel in {cache_dir}")
    return wheels[-1]


def extract_binary(wheel: Path, bin_dir: Path) -> Path:
    """Copy the ``perf_analyzer`` data file out of ``wheel`` into ``bin_dir`` (atomically, executable)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "perf_analyzer"
    temporary = bin_dir / ".perf_analyzer.tmp"
    with zipfile.ZipFile(wheel) as archive:
        if WHEEL_MEMBER not in archive.namelist():
            raise RuntimeError(f"{wheel.name} has no {WHEEL_MEMBER}")
        with archive.open(WHEEL_MEMBER) as source, open(temporary, "wb") as destination:
            shutil.copyfileobj(source, destination)
    temporary.chmod(temporary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(temporary, target)
    return target


def check_binary(binary: Path) -> tuple[bool, str]:
    """Run ``perf_analyzer --version``; returns (ok, output)."""
    env = dict(os.environ, LD_LIBRARY_PATH=library_path())
    try:
        completed = subprocess.run(
            [str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60
        )
    except OSError as error:
        return False, str(error)
    output = (completed.stdout + completed.stderr).strip()
    return completed.returncode == 0, output


def install(bin_dir: Path = DEFAULT_BIN_DIR, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    wheel = download_wheel(cache_dir)
    binary = extract_binary(wheel, bin_dir)
    print(f"perf_analyzer extracted from {wheel.name} to {binary}")
    still_missing = link_missing_libraries(binary)
    if still_missing:
        print(f"warning: shared libraries not found: {', '.join(still_missing)}")
        print("install Debian's libb64-0d (make system-deps) and the server extra (nvidia-pytriton)")
    ok, output = check_binary(binary)
    if not ok:
        print(f"warning: {binary} --version failed:\n{output}")
    else:
        print(output.splitlines()[0] if output else "perf_analyzer runs")
    print("\nRun it with:")
    print(f"  LD_LIBRARY_PATH={library_path()} \\")
    print(f"    {binary} -m portrait -u 127.0.0.1:8001 -i grpc --input-data perf.json \\")
    print("    --concurrency-range 1:4 --measurement-mode count_windows --measurement-request-count 20")
    print("(make the input data with: facecraft perf-data PHOTO_DIR -o perf.json)")
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facecraft.bench.perf_analyzer", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install_parser = sub.add_parser(
        "install", help="download the tritonclient 2.51.0 wheel and extract perf_analyzer"
    )
    install_parser.add_argument("--bin-dir", type=Path, default=DEFAULT_BIN_DIR)
    install_parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    sub.add_parser("env", help="print the LD_LIBRARY_PATH the binary needs")
    args = parser.parse_args(argv)
    if args.command == "env":
        print(library_path())
        return 0
    try:
        install(args.bin_dir, args.cache_dir)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        print(f"perf_analyzer install failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
