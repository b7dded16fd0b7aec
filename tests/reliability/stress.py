"""Stress reproducer for the embedded Triton's Python-backend crashes (docs/reliability.md).

NOT part of the test suite (no ``test_`` prefix: pytest does not collect it). Run it by hand::

    make stress                                   # 10 minutes, 12 threads, the committed settings
    .venv/bin/python -m tests.reliability.stress --minutes 30 --threads 16
    .venv/bin/python -m tests.reliability.stress --python-shm triton-default   # Triton's 1 MiB / 1 MiB

It starts the embedded ``tritonserver`` (``facecraft.runtime.server.TritonServer``) over a
tiny-preset, seeded-random copy of ``model_repository/`` (exported once, cached under
``.facecraft/stress/``) and hammers it from ``--threads`` closed-loop clients (half HTTP, half
gRPC) with a mix of ``portrait``, ``portrait_basic``, ``face_enhancer``, ``face_analyser`` and
``background_remover`` requests, some asking for only a subset of the outputs.

Inputs are real photos (``../shared/data/faces``) resized to sizes that are unique per variant
(0.1–6 MP, PNG or JPEG, up to ≈ 15 MB), and every thread owns its variants and its portrait
widths, so no two requests in flight share an output size. Every answer is checked against its
own request: ``OUTPUT_SIZE`` and the encoded image's own header must give the size this request
implies (the input's size for the processors, ``WIDTH × HEIGHT`` for the portraits). A response
that carries another request's image is reported as ``mismatch``.

The run reports (stdout + ``--report`` JSON): requests by outcome, every mismatch, every server
death (exit code, the crash lines of its log: ``Signal``, ``terminate called``, ``lock_exception``,
``Non-graceful termination``, "is not healthy"); after a death the server is restarted and the
run goes on. Exit status 1 when anything crashed or mismatched.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import re
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES_DIR = REPO_ROOT.parent / "shared" / "data" / "faces"
CACHE_DIR = REPO_ROOT / ".facecraft" / "stress"
PROCESSORS = ("face_enhancer", "face_analyser", "background_remover")
PORTRAITS = ("portrait", "portrait_basic")
# Output names per model and the subsets the stress clients ask for (None = every output).
OUTPUT_SUBSETS = {
    "portrait": (None, ("PNG", "OUTPUT_SIZE"), ("JPEG", "OUTPUT_SIZE", "FACE_COUNT")),
    "portrait_basic": (None, ("PNG", "OUTPUT_SIZE"), ("JPEG", "OUTPUT_SIZE")),
    "face_enhancer": (None, ("OUTPUT", "OUTPUT_SIZE")),
    "face_analyser": (None, ("JSON", "ANNOTATED")),
    "background_remover": (None, ("OUTPUT", "OUTPUT_SIZE")),
}
ALL_OUTPUTS = {
    "portrait": ("PNG", "JPEG", "FACE_BOX", "FACE_COUNT", "JPEG_CAP_MET", "OUTPUT_SIZE", "COMPLIANCE"),
    "portrait_basic": ("PNG", "JPEG", "FACE_BOX", "FACE_COUNT", "JPEG_CAP_MET", "OUTPUT_SIZE"),
    "face_enhancer": ("OUTPUT", "OUTPUT_SIZE", "FACE_COUNT"),
    "face_analyser": ("JSON", "ANNOTATED", "FACE_COUNT"),
    "background_remover": ("OUTPUT", "OUTPUT_SIZE"),
}


# -- inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One encoded input photo of a size no other variant has."""

    name: str
    data: bytes
    size: tuple[int, int]  # (w, h)


def make_variants(count: int, seed: int, max_megapixels: float) -> list[Variant]:
    """``count`` photos from ``FACES_DIR`` resized to unique sizes (0.1 MP … ``max_megapixels``),
    encoded as PNG (fast, large files) or JPEG q95."""
    rng = random.Random(seed)
    photos = sorted(p for p in FACES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {FACES_DIR}")
    sources = []
    for path in photos:
        with Image.open(path) as image:
            sources.append((path.stem, image.convert("RGB")))
    variants, seen = [], set()
    while len(variants) < count:
        stem, image = sources[len(variants) % len(sources)]
        megapixels = 0.1 + (max_megapixels - 0.1) * rng.random() ** 1.5
        scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        size = (max(64, round(image.width * scale)), max(64, round(image.height * scale)))
        while size in seen:
            size = (size[0] + 1, size[1])
        seen.add(size)
        resized = image.resize(size, Image.BILINEAR)
        buffer = io.BytesIO()
        if rng.random() < 0.6:
            resized.save(buffer, format="PNG", compress_level=1)
        else:
            resized.save(buffer, format="JPEG", quality=95)
        variants.append(Variant(f"{stem}@{size[0]}x{size[1]}", buffer.getvalue(), size))
    return variants


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) from a PNG/JPEG header, None when the bytes are empty or not an image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - anything unreadable is reported as such
        return None


# -- the model repository and the server -----------------------------------------------------------


def prepare_repository(run_dir: Path, cache: Path) -> Path:
    """A tiny-preset copy of ``model_repository/`` in ``run_dir`` (its own per run: never a
    repository another run's server is serving); the ONNX exports are made once and kept in
    ``cache``."""
    from facecraft.export.exporter import export_model
    from tests.fixtures.triton import MODEL_REPOSITORY, ONNX_MODELS, copy_model_repository

    repo = run_dir / "model_repository"
    stash = cache / "onnx"
    copy_model_repository(repo)
    for name in ONNX_MODELS:
        if not (MODEL_REPOSITORY / name / "config.pbtxt").is_file():
            continue
        saved = stash / name
        if not (saved / "model.onnx").is_file():
            export_model(name, preset="tiny", weights="random", seed=0, repo=repo, progress=False)
            saved.mkdir(parents=True, exist_ok=True)
            for item in (repo / name / "1").iterdir():
                (saved / item.name).write_bytes(item.read_bytes())
        else:
            for item in saved.iterdir():
                (repo / name / "1" / item.name).write_bytes(item.read_bytes())
    return repo


# -- the clients -----------------------------------------------------------------------------------


@dataclass
class Tally:
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    mismatches: list[dict] = field(default_factory=list)
    face_counts: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str) -> None:
        with self.lock:
            self.outcomes[key] += 1

    def error(self, model: str, message: str) -> None:
        short = " ".join(message.split())[:160]
        with self.lock:
            self.outcomes[f"{model}: error"] += 1
            self.errors[f"{model}: {short}"] += 1

    def mismatch(self, record: dict) -> None:
        with self.lock:
            self.outcomes[f"{record['model']}: MISMATCH"] += 1
            self.mismatches.append(record)
            print(f"MISMATCH {json.dumps(record)}", flush=True)


def _input(module, name: str, array: np.ndarray, dtype: str):
    tensor = module.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def build_request(module, model: str, variant: Variant, width: int, rng: random.Random):
    """(inputs, requested output names, expected output size) for one request."""
    inputs = [_input(module, "IMAGE", np.array([[variant.data]], dtype=np.object_), "BYTES")]
    if model in PORTRAITS:
        height = round(width * 1.25)
        inputs.append(_input(module, "WIDTH", np.array([[width]], dtype=np.int32), "INT32"))
        inputs.append(_input(module, "HEIGHT", np.array([[height]], dtype=np.int32), "INT32"))
        expected = (width, height)
    else:
        expected = variant.size
        if model == "face_analyser":
            inputs.append(_input(module, "ANNOTATE", np.array([[True]], dtype=np.bool_), "BOOL"))
        if model in ("face_enhancer", "background_remover"):
            inputs.append(_input(module, "FORMAT", np.array([[b"png"]], dtype=np.object_), "BYTES"))
    subset = rng.choice(OUTPUT_SUBSETS[model])
    return inputs, subset or ALL_OUTPUTS[model], expected


def check_answer(model: str, outputs: dict[str, np.ndarray], expected: tuple[int, int]) -> list[str]:
    """What in one successful answer contradicts its own request (empty when it matches)."""
    problems = []
    if "OUTPUT_SIZE" in outputs:
        size = tuple(int(v) for v in np.asarray(outputs["OUTPUT_SIZE"]).reshape(-1)[:2])
        if size != expected:
            problems.append(f"OUTPUT_SIZE {size} != {expected}")
    for name in ("PNG", "JPEG", "OUTPUT", "ANNOTATED"):
        if name in outputs:
            data = bytes(np.asarray(outputs[name]).reshape(-1)[0])
            size = encoded_size(data)
            if size != expected:
                problems.append(f"{name} header size {size} != {expected} ({len(data)} bytes)")
    return problems


UNHEALTHY_STUB = re.compile(r"Stub process '([^']+)' is not healthy")


class StubRecovery:
    """``--recover``: what the gateway does on "Stub process '<instance>' is not healthy"
    (``facecraft.gateway.triton.TritonGateway.recover_stub``): reload that instance's model, so
    that a new stub replaces the one that is an answer behind. One reload per model at a time."""

    def __init__(self, server):
        self.server, self.lock, self.running = server, threading.Lock(), set()
        self.reloads: list[dict] = []

    def __call__(self, message: str) -> None:
        found = UNHEALTHY_STUB.search(message)
        if not found:
            return
        model = re.sub(r"(_\d+){1,2}$", "", found.group(1))
        with self.lock:
            if model in self.running:
                return
            self.running.add(model)
        try:
            import urllib.request

            url = f"http://{self.server.http_url}/v2/repository/models/{model}/load"
            with urllib.request.urlopen(
                urllib.request.Request(url, data=b"{}", method="POST"), timeout=120
            ) as answer:
                status = answer.status
            self.reloads.append({"time": time.strftime("%H:%M:%S"), "model": model, "status": status})
            print(f"stress: reloaded {model} after its stub went unhealthy (HTTP {status})", flush=True)
        except OSError as error:
            print(f"stress: reloading {model} failed: {error}", flush=True)
        finally:
            with self.lock:
                self.running.discard(model)


class Client(threading.Thread):
    def __init__(
        self, index: int, args, server, variants: list[Variant], tally: Tally, stop: threading.Event
    ):
        super().__init__(name=f"stress-{index}", daemon=True)
        self.recovery = None
        self.index, self.args, self.server, self.tally, self.stop_event = index, args, server, tally, stop
        self.variants = variants[index :: args.threads]
        self.rng = random.Random(args.seed * 1000 + index)
        self.protocol = "grpc" if index % 2 else "http"
        # Portrait widths of this thread only: unique among the requests in flight.
        self.widths = [160 + 24 * index + k for k in range(24)]

    def _client(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            return module, module.InferenceServerClient(self.server.grpc_url)
        import tritonclient.http as module

        return module, module.InferenceServerClient(
            self.server.http_url, connection_timeout=600, network_timeout=600
        )

    def run(self) -> None:
        module, client = self._client()
        models = list(self.args.models)
        while not self.stop_event.is_set():
            model = self.rng.choice(models)
            variant = self.rng.choice(self.variants)
            inputs, names, expected = build_request(
                module, model, variant, self.rng.choice(self.widths), self.rng
            )
            requested = [module.InferRequestedOutput(name) for name in names]
            try:
                if self.protocol == "grpc":
                    result = client.infer(model, inputs, outputs=requested, client_timeout=600)
                else:
                    result = client.infer(model, inputs, outputs=requested)
            except Exception as error:  # noqa: BLE001 - every failure is counted by its message
                message = getattr(error, "message", lambda: None)() or str(error)
                self.tally.error(model, message)
                if self.recovery is not None:
                    self.recovery(message)
                if not self.server.is_ready():  # down or restarting: wait, then reconnect
                    self.stop_event.wait(1.0)
                    module, client = self._client()
                continue
            outputs = {name: result.as_numpy(name)[0] for name in names}
            extra = [n for n in ALL_OUTPUTS[model] if n not in names and result.as_numpy(n) is not None]
            problems = check_answer(model, outputs, expected)
            if extra:
                problems.append(f"outputs not requested came back: {extra}")
            if problems:
                self.tally.mismatch(
                    {
                        "model": model,
                        "protocol": self.protocol,
                        "variant": variant.name,
                        "expected": expected,
                        "requested": list(names),
                        "problems": problems,
                        "time": time.strftime("%H:%M:%S"),
                    }
                )
            else:
                self.tally.add(f"{model}: ok")


class StubFreezer(threading.Thread):
    """Every ``every`` seconds, SIGSTOP the Python stub of one of ``models`` for ``seconds`` (then
    SIGCONT): what a starved stub looks like to Triton on an overloaded machine. Python backend
    r24.10 gives up on a stub whose health flag stays unset for ≈ 1 s ("Stub process '…' is not
    healthy", python_be.cc ``ReceiveMessageFromStub``) while the stub still works on the batch."""

    def __init__(self, server, models: list[str], every: float, seconds: float, stop: threading.Event):
        super().__init__(name="stub-freezer", daemon=True)
        self.server, self.models, self.every, self.seconds, self.stop_event = (
            server,
            models,
            every,
            seconds,
            stop,
        )
        self.freezes: list[dict] = []

    def _stub(self, model: str):
        import psutil

        for child in psutil.Process(self.server.pid).children():
            try:
                argv = child.cmdline()  # a reloaded model's old stub can linger as a zombie
            except psutil.Error:
                continue
            if len(argv) > 8 and argv[8].startswith(f"{model}_"):
                return child
        return None

    def run(self) -> None:
        import signal

        rng = random.Random(7)
        while not self.stop_event.wait(self.every):
            model = rng.choice(self.models)
            try:
                stub = self._stub(model)
                if stub is None:
                    continue
                stub.send_signal(signal.SIGSTOP)
                self.stop_event.wait(self.seconds)
                stub.send_signal(signal.SIGCONT)
                self.freezes.append(
                    {"time": time.strftime("%H:%M:%S"), "model": model, "seconds": self.seconds}
                )
                print(f"stress: froze the {model} stub for {self.seconds} s", flush=True)
            except Exception as error:  # noqa: BLE001 - a stub gone with a dead server
                print(f"stress: freezer: {error}", flush=True)


# A process of its own (no GIL shared with the clients) that does what the stub's health thread
# does: sleep 300 ms, wake, note how late it woke. Python backend r24.10 declares a stub unhealthy
# when its health thread has not run for ≈ 1 s while Triton waits for it.
LAG_PROBE = """
import json, sys, time
worst, late, wakes = 0.0, 0, 0
while True:
    start = time.monotonic()
    time.sleep(0.3)
    lag = time.monotonic() - start - 0.3
    wakes += 1
    worst = max(worst, lag)
    late += lag > 0.7
    if wakes % 10 == 0:
        with open(sys.argv[1], "w") as out:
            json.dump({"wakes": wakes, "max_lag_s": round(worst, 3), "wakes_late_over_0_7_s": late}, out)
"""


def read_lag(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- main ------------------------------------------------------------------------------------------


def shm_args(choice: str, default_mb: int, growth_mb: int) -> dict:
    """TritonServer keyword arguments for ``--python-shm``."""
    if choice == "triton-default":
        return {"python_shm_default_mb": 0, "python_shm_growth_mb": 0}
    if choice == "custom":
        return {"python_shm_default_mb": default_mb, "python_shm_growth_mb": growth_mb}
    return {}  # "committed": TritonServer's own defaults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=12)
    parser.add_argument("--variants", type=int, default=48, help="distinct input photos (sizes)")
    parser.add_argument("--max-megapixels", type=float, default=6.0)
    parser.add_argument("--models", nargs="+", default=[*PORTRAITS, *PROCESSORS])
    parser.add_argument(
        "--python-shm",
        choices=("committed", "triton-default", "custom"),
        default="committed",
        help="Python backend shared memory: TritonServer's defaults (committed), Triton's own "
        "1 MiB / 1 MiB (triton-default), or --shm-default-mb / --shm-growth-mb (custom)",
    )
    parser.add_argument("--shm-default-mb", type=int, default=64)
    parser.add_argument("--shm-growth-mb", type=int, default=64)
    parser.add_argument(
        "--freeze-every",
        type=float,
        default=0.0,
        help="seconds between stub freezes (SIGSTOP/SIGCONT of one Python stub; 0 = never)",
    )
    parser.add_argument("--freeze-seconds", type=float, default=2.5)
    parser.add_argument("--freeze-models", nargs="+", default=["faces", "decode", "compose"])
    parser.add_argument(
        "--recover",
        action="store_true",
        help="reload a model whose stub Triton declared unhealthy, as the gateway does",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=CACHE_DIR)
    parser.add_argument("--report", type=Path, default=None, help="JSON report (default: under --cache)")
    args = parser.parse_args(argv)

    from facecraft.runtime.server import TritonServer, TritonStartError, crash_lines

    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.cache / f"run-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path = args.report or run_dir / "report.json"
    print(f"stress: preparing the tiny repository and {args.variants} input variants…", flush=True)
    repo = prepare_repository(run_dir, args.cache)
    variants = make_variants(args.variants, args.seed, args.max_megapixels)
    sizes = [len(v.data) for v in variants]
    print(
        f"stress: inputs {min(sizes) / 1e6:.2f}–{max(sizes) / 1e6:.2f} MB (median "
        f"{sorted(sizes)[len(sizes) // 2] / 1e6:.2f} MB)",
        flush=True,
    )
    server = TritonServer(
        repo,
        runtime_dir=run_dir,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout=3,
        ready_timeout=600,
        **shm_args(args.python_shm, args.shm_default_mb, args.shm_growth_mb),
    )
    print(f"stress: starting Triton: {' '.join(server.command()[1:])}", flush=True)
    server.start()
    print(f"stress: Triton ready ({server.http_url}, log {server.log_path})", flush=True)

    tally, deaths = Tally(), []
    stop = threading.Event()
    clients = [Client(i, args, server, variants, tally, stop) for i in range(args.threads)]
    recovery = StubRecovery(server) if args.recover else None
    for client in clients:
        client.recovery = recovery
    for client in clients:
        client.start()
    import subprocess

    lag_path = run_dir / "lag.json"
    lag_probe = subprocess.Popen([sys.executable, "-c", LAG_PROBE, str(lag_path)])
    freezer = None
    if args.freeze_every > 0:
        freezer = StubFreezer(server, args.freeze_models, args.freeze_every, args.freeze_seconds, stop)
        freezer.start()
    deadline = time.monotonic() + args.minutes * 60
    next_print = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            time.sleep(1.0)
            if not server.is_running():
                code = server.process.poll() if server.process else None
                lines = server.crash_evidence()
                death = {"time": time.strftime("%H:%M:%S"), "exit_code": code, "crash_lines": lines}
                deaths.append(death)
                print(f"stress: TRITON DIED (exit {code}):\n  " + "\n  ".join(lines), flush=True)
                try:
                    server.start()
                except TritonStartError as error:
                    print(f"stress: restart failed: {error}", flush=True)
                    break
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + 30
                with tally.lock:
                    done = sum(tally.outcomes.values())
                    bad = len(tally.mismatches)
                print(
                    f"stress: {time.time() - started:6.0f} s  {done} answers, {bad} mismatches, "
                    f"{len(deaths)} deaths, wake-up lag {read_lag(lag_path)}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)
        log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        unhealthy = crash_lines(log_text, limit=200)
        server.stop()
        lag_probe.terminate()

    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "threads": args.threads,
        "models": args.models,
        "python_shm": args.python_shm,
        "command": server.command()[1:],
        "input_bytes": {"min": min(sizes), "max": max(sizes), "median": sorted(sizes)[len(sizes) // 2]},
        "outcomes": dict(sorted(tally.outcomes.items())),
        "errors": dict(tally.errors.most_common(30)),
        "mismatches": tally.mismatches,
        "deaths": deaths,
        "freezes": freezer.freezes if freezer else [],
        "reloads": recovery.reloads if recovery else [],
        "wake_up_lag": read_lag(lag_path),
        "crash_lines_in_log": unhealthy,
        "log": str(server.log_path),
    }
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("seconds", "outcomes", "errors")}, indent=2))
    print(
        f"stress: {len(tally.mismatches)} mismatches, {len(deaths)} Triton deaths, "
        f"{len(unhealthy)} crash lines in the log; report {report_path}",
        flush=True,
    )
    return 1 if tally.mismatches or deaths or unhealthy else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(2)
