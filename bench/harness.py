"""``facecraft bench``: sequential in-process pipeline vs Triton over gRPC vs the gateway, one run.

Steps: prepare a benchmark copy of the model repository (configs for the device; ONNX exported
when missing), start the embedded Triton on free ports and the gateway as a subprocess, pick the
photos, then for enhance on/off run each scenario with a bounded number of requests at each
concurrency, diffing Triton's statistics around every Triton/gateway scenario. The sequential
baseline runs at concurrency 1 only (one caller, stages one after the other). Writes
``<out>/<timestamp>-<preset>-<device>.{md,json}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from facecraft import processors as registry
from facecraft.bench.load import run_async_load, run_sequential_load
from facecraft.bench.machine import (
    REFERENCE_GMAC,
    conv_probe,
    count_onnx_macs,
    describe_machine,
    peak_rss_of_tree,
)
from facecraft.bench.probes import ProbeLog
from facecraft.bench.report import build_report, render_markdown
from facecraft.bench.stats import diff_statistics, snapshot
from facecraft.client.batch import IMAGE_SUFFIXES, write_atomically
from facecraft.client.errors import FacecraftError, NoFaceDetected
from facecraft.client.options import PortraitOptions
from facecraft.export.catalog import MODEL_NAMES as EXPORTABLE_MODELS
from facecraft.export.quantize import HELD_OUT_PHOTOS
from facecraft.runtime.instance_plan import InstancePlan, model_filename, plan_instances

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
SHARED_FACES = REPO_ROOT.parent / "shared" / "data" / "faces"


def onnx_models(processor: registry.Processor) -> tuple[str, ...]:
    """The exportable ONNX models (``facecraft.export.catalog``) among ``processor``'s registry
    ``models``, in registry order: what the bench exports and configures for it."""
    return tuple(model for model in processor.models if model in EXPORTABLE_MODELS)


# The portrait scenarios of ``facecraft bench``: the portrait processor's models (codeformer, u2net).
ONNX_MODELS = onnx_models(registry.get("portrait"))
GENERATED = ("model*.onnx", "model.onnx.data", "export*.json", "__pycache__", "*.pyc")
# Single clearly frontal faces of the shared development set (see its SOURCES.md), varied sizes;
# held out of the default int8 calibration set.
DEFAULT_PHOTOS = HELD_OUT_PHOTOS


@dataclass
class BenchConfig:
    preset: str = "full"
    device: str = "cpu"
    quick: bool = False
    photos_dir: Path | None = None
    # ``--processor``: photos scaled down to at most this many px on their longer side (None: as they are)
    photo_max_side: int | None = None
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    requests: int = 16
    enhanced_requests: int | None = None  # requests per enhanced scenario (default: ``requests``)
    out_dir: Path = Path("benchmarks/results")
    repo: Path | None = None
    scenarios: tuple[str, ...] = ("sequential", "triton", "gateway")
    # Triton instance plan (facecraft.runtime.instance_plan); None: the automatic plan, as `facecraft serve`
    instances: int | None = None
    onnx_threads: int | None = None
    python_instances: int | None = None
    precision: str = "fp32"
    gpu_accelerator: str = "cuda"
    # instance plans to compare, each with its own Triton (parse_plan_spec); the first is the
    # reference for every ratio, the others only run the Triton scenarios
    plans: tuple[str, ...] = ("auto",)
    # rounds of the sequential baseline right before Triton gRPC at the top concurrency, per mode,
    # while the first plan's Triton is up: the headline Triton/sequential ratio is their median
    # (a machine that drifts over the run's half hour moves both halves of a pair alike)
    pairs: int = 0
    # timed runs of each ONNX model alone (one session, the plan's threads) for the report's
    # model_bound, CPU only; 0 = skip
    model_bound_runs: int = 0


def requests_for(config: BenchConfig, enhance: bool) -> int:
    return (config.enhanced_requests or config.requests) if enhance else config.requests


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- preparation -------------------------------------------------------------------------------


def instance_plan(config: BenchConfig) -> InstancePlan:
    """The Triton instance plan of the benchmark: the one `facecraft serve` would use on this host,
    unless the config overrides it."""
    return plan_instances(
        config.device,
        instances=config.instances,
        onnx_threads=config.onnx_threads,
        python_instances=config.python_instances,
        precision=config.precision,
        gpu_accelerator=config.gpu_accelerator,
    )


def parse_plan_spec(spec: str, base: InstancePlan) -> InstancePlan:
    """One ``--plans`` entry → a plan derived from ``base`` (the automatic or flag-given plan).

    ``auto``: ``base``; ``N``: N instances of each ONNX model with cores / N threads each; ``NxT``:
    N instances with T threads each; ``MODEL=NxT`` (joined by ``+``): that model only, e.g.
    ``u2net=1x2`` (one 2-thread U²-Net beside the base plan's CodeFormer). Raises ``ValueError``."""
    spec = spec.strip()
    if spec == "auto":
        return base

    def counts(text: str) -> tuple[int, int]:
        instances, _, threads = text.partition("x")
        n = int(instances)
        if n < 1:
            raise ValueError(f"plan {spec!r}: instances must be positive")
        t = int(threads) if threads else max(1, base.cores // n)
        if t < 1:
            raise ValueError(f"plan {spec!r}: instances and threads must be positive")
        return n, t

    try:
        if "=" not in spec:
            n, t = counts(spec)
            return replace(base, onnx_instances=n, onnx_threads=t, overrides=())
        overrides = []
        for part in spec.split("+"):
            model, _, text = part.partition("=")
            if model.strip() not in EXPORTABLE_MODELS:
                raise ValueError(f"plan {spec!r}: unknown ONNX model {model.strip()!r}")
            overrides.append((model.strip(), *counts(text)))
    except ValueError as error:
        raise ValueError(
            f"bad instance plan {spec!r} (auto, N, NxT or MODEL=NxT[+MODEL=NxT]): {error}"
        ) from error
    return replace(base, overrides=tuple(overrides))


def prepare_repository(
    config: BenchConfig, plan: InstancePlan, models: tuple[str, ...] = ONNX_MODELS
) -> Path:
    """The benchmark model repository: committed configs/Python models (refreshed), the ONNX
    exports of ``models`` (catalog names; made with ``facecraft.export`` at ``config.preset`` when
    missing, with the plan's precision; a model with a committed config in ``export/configs/``
    gets it from the export) and the instance groups, threads and batching of ``plan``."""
    from facecraft.runtime.instance_groups import configure_repository

    repo = (
        config.repo
        or REPO_ROOT / ".facecraft" / "bench" / f"{config.preset}-{config.device}" / "model_repository"
    )
    repo = Path(repo)
    repo.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(MODEL_REPOSITORY, repo, ignore=shutil.ignore_patterns(*GENERATED), dirs_exist_ok=True)
    export_missing(repo, models, preset=config.preset, precisions=plan.precision_for)
    configure_repository(repo, plan)
    return repo


def export_missing(
    repo: Path, models: tuple[str, ...], *, preset: str, precisions=lambda _name: "fp32"
) -> None:
    """Export each of ``models`` into ``repo`` whose ``model.onnx`` (or, for a precision other
    than fp32 — ``precisions(name)`` —, its ``model.<precision>.onnx``) is missing: seeded random
    weights (seed 0) at the tiny preset, the official ones when reachable at the full preset
    (else seeded random, labelled untrained in ``export.json``)."""
    missing = [(name, "fp32") for name in models if not (repo / name / "1" / "model.onnx").is_file()]
    missing += [
        (name, precisions(name))
        for name in models
        if precisions(name) != "fp32" and not (repo / name / "1" / model_filename(precisions(name))).is_file()
    ]
    if not missing:
        return
    from facecraft.export.exporter import export_model

    weights = "random" if preset == "tiny" else "auto"
    for name, precision in missing:
        log(f"exporting {name} {precision} (preset {preset}, weights {weights}) into {repo} ...")
        export_model(name, preset=preset, weights=weights, seed=0, repo=repo, progress=True,
                     precision=precision)  # fmt: skip


def export_records(repo: Path, models: tuple[str, ...] = ONNX_MODELS) -> dict[str, dict]:
    """``export.json`` of each of ``models`` in ``repo`` (trained flag, preset, weights source);
    ``{}`` for one without."""
    records = {}
    for name in models:
        path = repo / name / "1" / "export.json"
        try:
            records[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            records[name] = {}
    return records


def select_photos(
    photos_dir: Path | None, limit: int | None = None, names: tuple[str, ...] = DEFAULT_PHOTOS
) -> list[tuple[str, bytes]]:
    """(name, bytes) of the benchmark photos: ``photos_dir``'s images, else the shared photos
    ``names`` (default: the six single-face ones), else the public-domain astronaut from scikit-image."""
    if photos_dir is not None:
        paths = sorted(p for p in Path(photos_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no photos in {photos_dir}")
    else:
        paths = [SHARED_FACES / name for name in names if (SHARED_FACES / name).is_file()]
    photos = [(p.name, p.read_bytes()) for p in paths]
    if not photos:
        import io

        from PIL import Image
        from skimage import data

        buffer = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=92)
        photos = [("skimage_astronaut.jpg", buffer.getvalue())]
    return photos[:limit] if limit else photos


@contextlib.contextmanager
def gateway_process(grpc_url: str, repo: Path, max_concurrency: int):
    """Run ``python -m facecraft.gateway`` on a free loopback port; yields its base URL (or raises)."""
    from facecraft.runtime.http_probe import EXITED, OK, wait_for_http_ok
    from facecraft.runtime.server import free_port

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="facecraft-bench-gateway-"))
    env = dict(
        os.environ,
        FACECRAFT_HOST="127.0.0.1",
        FACECRAFT_PORT=str(port),
        FACECRAFT_TRITON_URL=grpc_url,
        FACECRAFT_MODEL_REPOSITORY=str(repo),
        FACECRAFT_OUTPUT_DIR=str(workdir / "outputs"),
        # the benchmark measures throughput, so the gateway must queue rather than shed load
        FACECRAFT_MAX_CONCURRENT_JOBS=str(max_concurrency),
        FACECRAFT_QUEUE_WAIT_S="3600",
        FACECRAFT_TRITON_TIMEOUT_S="3600",
        FACECRAFT_LOG_LEVEL="warning",
    )
    env.pop("FACECRAFT_API_KEY", None)
    log_path = workdir / "gateway.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "facecraft.gateway"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        health = wait_for_http_ok(f"{base_url}/health", process, 120, interval_s=0.5)
        if health == EXITED:
            raise RuntimeError(f"gateway exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if health != OK:
            raise RuntimeError(f"gateway not healthy after 120 s: {log_path.read_text()[-2000:]}")
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# --- scenarios ---------------------------------------------------------------------------------


def _progress(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="req", file=sys.stderr, leave=False)


def usable_photos(photos, call_sync) -> tuple[list, list[str]]:
    """Drop photos in which the pipeline finds no face (they would measure error paths)."""
    kept, dropped = [], []
    for name, data in photos:
        try:
            call_sync(data)
            kept.append((name, data))
        except NoFaceDetected:
            dropped.append(name)
    return kept, dropped


def measure_sequential(
    sequential,
    config: BenchConfig,
    photos: list[tuple[str, bytes]],
    enhance_modes,
    results: list[dict],
    label: str,
    probes: ProbeLog,
) -> None:
    """One pass of the sequential baseline (each enhance mode, concurrency 1); records carry
    ``"pass": label`` and ``probe_window`` (a conv probe follows each) and are appended to ``results``."""
    for enhance in enhance_modes:
        options = PortraitOptions(enhance=enhance)
        sequential.process(photos[0][1], options)  # warm-up
        before = probes.last
        with _progress(requests_for(config, enhance), f"sequential ({label}) enhance={enhance} c1") as bar:
            load = run_sequential_load(
                lambda data, _name, o=options: sequential.process(data, o),
                photos,
                requests=requests_for(config, enhance),
                on_request=bar.update,
            )
        after = probes.take(f"after sequential ({label}) enhance={enhance}")
        results.append(
            {"scenario": "sequential", "pass": label, "enhance": enhance, "concurrency": 1,
             **load.summary(), "probe_window": (before, after)}
        )  # fmt: skip
        log(_line(results[-1]))


async def measure_served_scenario(
    scenario: str,
    process: Callable[[bytes, str, PortraitOptions], Awaitable[object]],
    *,
    config: BenchConfig,
    photos: list[tuple[str, bytes]],
    enhance_modes: tuple[bool, ...],
    stats_url: str,
    results: list[dict],
    probes: ProbeLog,
) -> None:
    """Measure one served scenario (Triton direct or the gateway) at every concurrency.

    ``process(image_bytes, filename, options)`` sends one request. Each enhance mode gets a
    warm-up request; each concurrency is bracketed by Triton statistics snapshots so the record
    carries per-model queue/compute time and batch sizes; a conv probe follows each (``probe_window``).
    Records are appended to ``results``.
    """
    for enhance in enhance_modes:
        options = PortraitOptions(enhance=enhance)
        await process(photos[0][1], photos[0][0], options)  # warm-up
        await measure_concurrencies(
            scenario,
            lambda data, name, o=options: process(data, name, o),
            samples=photos,
            requests=requests_for(config, enhance),
            concurrency=config.concurrency,
            stats_url=stats_url,
            results=results,
            probes=probes,
            fields={"enhance": enhance},
        )


async def measure_pairs(
    sequential,
    process: Callable[[bytes, str, PortraitOptions], Awaitable[object]],
    *,
    config: BenchConfig,
    photos: list[tuple[str, bytes]],
    enhance_modes: tuple[bool, ...],
    stats_url: str,
    results: list[dict],
    probes: ProbeLog,
) -> None:
    """``config.pairs`` rounds, each enhance mode in turn, of one sequential pass immediately
    followed by Triton at the top concurrency (``process`` as in :func:`measure_served_scenario`,
    Triton already warm). Both records of round k carry ``"pair": k`` (the sequential one also
    ``"pass": "pair k"``) and their probe windows, so each pair's ratio comes from the same minutes."""
    top = max(config.concurrency)
    for round_ in range(1, config.pairs + 1):
        for enhance in enhance_modes:
            measure_sequential(sequential, config, photos, (enhance,), results, f"pair {round_}", probes)
            results[-1]["pair"] = round_
            options = PortraitOptions(enhance=enhance)
            await measure_concurrencies(
                "triton_grpc",
                lambda data, name, o=options: process(data, name, o),
                samples=photos,
                requests=requests_for(config, enhance),
                concurrency=[top],
                stats_url=stats_url,
                results=results,
                probes=probes,
                fields={"enhance": enhance, "pair": round_},
            )


async def measure_concurrencies(
    scenario: str,
    call: Callable[[object, str], Awaitable[object]],
    *,
    samples: list[tuple[str, object]],
    requests: int,
    concurrency: list[int],
    stats_url: str,
    results: list[dict],
    probes: ProbeLog,
    fields: dict,
) -> None:
    """``requests`` calls of ``call(sample, name)`` (round-robin over ``samples``) at each
    ``concurrency``, each bracketed by Triton statistics snapshots (per-model queue/compute time
    and batch sizes in ``triton_models``) and followed by a conv probe (``probe_window``). One
    record per concurrency (``scenario``, ``fields``, images/s, latencies) is appended to ``results``."""
    label = " ".join(f"{key}={value}" for key, value in fields.items())
    for level in concurrency:
        probe_before = probes.last
        before = snapshot(stats_url)
        with _progress(requests, f"{scenario} {label} c{level}") as bar:
            load = await run_async_load(
                call, samples, requests=requests, concurrency=level, on_request=bar.update
            )
        deltas = diff_statistics(before, snapshot(stats_url))
        probe_after = probes.take(f"after {scenario} {label} c{level}")
        results.append(
            {
                "scenario": scenario,
                **fields,
                "concurrency": level,
                "effective_concurrency": min(level, requests),
                **load.summary(),
                "triton_models": [d.to_dict() for d in deltas],
                "probe_window": (probe_before, probe_after),
            }
        )
        log(_line(results[-1]))


def start_triton(repo: Path, runtime_dir: Path, models: tuple[str, ...] | None = None):
    """The embedded Triton over ``repo`` on free loopback ports, started (every model ready; a
    generous 30 min for full models on loaded cores); ``models``: the Triton models to load
    (default: every model of ``repo``). The caller must ``stop()`` it."""
    from facecraft.runtime.server import TritonServer

    server = TritonServer(
        repo,
        runtime_dir=runtime_dir,
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        models=models,
        ready_timeout=1800,
        exit_timeout=5,
    )
    log(f"starting embedded Triton over {repo}{f' ({len(models)} models)' if models else ''} ...")
    server.start()
    return server


def measure_model_bound(repo: Path, plan: InstancePlan, runs: int, probes: ProbeLog) -> dict:
    """Each ONNX model of the portrait alone in one onnxruntime session with the plan's threads per
    instance (``machine.model_seconds_per_image``, median of ``runs``), then a probe: the bound a
    serving of ``plan.onnx_instances`` such instances cannot beat on these cores. Returns the
    report's ``model_bound`` (``threads``, ``instances``, ``seconds_per_image`` per model, ``runs``,
    ``probe_window``)."""
    import statistics

    from facecraft.bench.machine import model_seconds_per_image

    threads = plan.onnx_threads or plan.cores
    before = probes.last
    seconds = {}
    for name in ONNX_MODELS:
        log(f"model bound: {name} alone, {threads} thread(s), {runs} run(s) ...")
        seconds[name] = statistics.median(
            model_seconds_per_image(repo / name / "1" / "model.onnx", threads, runs)
        )
        log(f"model bound: {name} {seconds[name] * 1000:.0f} ms per image")
    after = probes.take("after the model bound")
    return {"threads": threads, "instances": plan.onnx_instances, "seconds_per_image": seconds, "runs": runs,
            "probe_window": (before, after)}  # fmt: skip


def serve_and_measure(
    repo: Path,
    runtime_dir: Path,
    *,
    config: BenchConfig,
    photos: list[tuple[str, bytes]],
    enhance_modes: tuple[bool, ...],
    results: list[dict],
    probes: ProbeLog,
    notes: list[str],
    plan_label: str,
    with_gateway: bool,
    pair_with=None,
) -> dict[str, dict[str, float]]:
    """Start the embedded Triton over ``repo`` (configured for one instance plan), run the Triton
    scenarios (records carry ``plan``: ``plan_label``), then with ``pair_with`` (the sequential
    pipeline) the paired rounds of :func:`measure_pairs`, and, ``with_gateway``, the gateway
    scenarios; stop it. Returns peak RSS per group (``triton``, ``gateway``)."""
    from facecraft.client.async_portrait_client import AsyncPortraitClient
    from facecraft.client.gateway_client import AsyncGatewayClient

    first = len(results)
    rss: dict[str, dict[str, float]] = {}
    server = start_triton(repo, runtime_dir)
    try:
        log(f"Triton ready: grpc {server.grpc_url}, http {server.http_url}")

        async def triton_scenarios() -> None:
            async with AsyncPortraitClient(server.grpc_url, "grpc", timeout_s=3600) as client:
                await measure_served_scenario(
                    "triton_grpc",
                    lambda data, _name, options: client.process_with(data, options),
                    config=config,
                    photos=photos,
                    enhance_modes=enhance_modes,
                    stats_url=server.http_url,
                    results=results,
                    probes=probes,
                )
                if pair_with is not None and config.pairs > 0:
                    await measure_pairs(
                        pair_with,
                        lambda data, _name, options: client.process_with(data, options),
                        config=config,
                        photos=photos,
                        enhance_modes=enhance_modes,
                        stats_url=server.http_url,
                        results=results,
                        probes=probes,
                    )

        if "triton" in config.scenarios:
            asyncio.run(triton_scenarios())

        if with_gateway:
            try:
                with gateway_process(server.grpc_url, repo, max(config.concurrency)) as (base_url, gateway):

                    async def gateway_scenarios() -> None:
                        async with AsyncGatewayClient(base_url, timeout_s=3600) as client:
                            await measure_served_scenario(
                                "gateway_http",
                                lambda data, name, options: client.process_with(data, options, filename=name),
                                config=config,
                                photos=photos,
                                enhance_modes=enhance_modes,
                                stats_url=server.http_url,
                                results=results,
                                probes=probes,
                            )

                    asyncio.run(gateway_scenarios())
                    rss["gateway"] = peak_rss_of_tree(gateway.pid)
            except (RuntimeError, OSError) as error:
                notes.append(f"gateway scenario not run: {error}")
                log(f"gateway scenario not run: {error}")
        rss["triton"] = peak_rss_of_tree(server.pid) if server.pid else {}
    finally:
        server.stop()
    for record in results[first:]:
        record["plan"] = plan_label
    return rss


def run_benchmark(config: BenchConfig) -> tuple[Path, Path]:
    """Run every scenario and write the Markdown + JSON report; returns their paths."""
    from facecraft.bench.sequential import SequentialPipeline
    from facecraft.runtime.instance_groups import configure_repository

    started_at = datetime.now(timezone.utc)
    log(f"preset {config.preset}, device {config.device}, concurrency {config.concurrency}, "
        f"{config.requests} requests per scenario ({requests_for(config, True)} enhanced)")  # fmt: skip
    machine = describe_machine()
    log("conv-throughput probe (onnxruntime) ...")
    first_probe = conv_probe(config.device)
    probes = ProbeLog(measure=lambda: conv_probe(config.device).gflops)
    probes.take("start", first_probe.gflops)
    log(f"probe: {first_probe.gflops:.1f} GFLOP/s ({first_probe.provider})")
    plans = [(label, parse_plan_spec(label, instance_plan(config))) for label in config.plans]
    plan = plans[0][1]
    log(f"Triton instance plan: {plan.describe()}")
    repo = prepare_repository(config, plan)
    records = export_records(repo)
    macs = {name: count_onnx_macs(repo / name / "1" / "model.onnx") for name in ONNX_MODELS}
    photos = select_photos(config.photos_dir)
    enhance_modes = (True, False)
    scenario_results: list[dict] = []
    notes: list[str] = []
    rss: dict[str, dict[str, float]] = {}

    sequential = None
    if "sequential" in config.scenarios:
        log("loading the sequential onnxruntime pipeline ...")
        sequential = SequentialPipeline(repo, config.device)
        photos, dropped = usable_photos(
            photos, lambda data: sequential.process(data, PortraitOptions(enhance=False))
        )
        if dropped:
            notes.append(f"photos without a detectable face were left out: {', '.join(dropped)}")
        if not photos:
            raise FacecraftError("no benchmark photo has a detectable face")
        measure_sequential(sequential, config, photos, enhance_modes, scenario_results, "start", probes)
        notes.append(
            "sequential = one caller in this process running the stages one after the other (concurrency 1 "
            "only); it runs at the start and again at the end, and a ratio without paired rounds uses the faster "
            "of the two passes"
        )

    model_bound = None
    if config.device == "cpu" and config.model_bound_runs > 0:
        model_bound = measure_model_bound(repo, plan, config.model_bound_runs, probes)

    runtime_dir = repo.parent / "runtime"
    for index, (label, served_plan) in enumerate(plans):
        if index:
            log(f"instance plan {label!r}: {served_plan.describe()}")
            configure_repository(repo, served_plan)
        served_rss = serve_and_measure(
            repo, runtime_dir, config=config, photos=photos, enhance_modes=enhance_modes,
            results=scenario_results, probes=probes, notes=notes, plan_label=label,
            with_gateway=index == 0 and "gateway" in config.scenarios,
            pair_with=sequential if index == 0 else None,
        )  # fmt: skip
        rss.update(served_rss if index == 0 else {f"triton[{label}]": served_rss["triton"]})
    if len(plans) > 1:
        configure_repository(repo, plan)  # leave the repository on the first plan

    if sequential is not None:
        # the same baseline again with Triton stopped: a machine that slowed down or sped up during
        # the run shows as two different passes instead of skewing the ratios
        measure_sequential(sequential, config, photos, enhance_modes, scenario_results, "end", probes)

    # a last probe: every scenario sits between two probes, and the roofline uses the fastest,
    # the best estimate of what the cores can do; the spread says how disturbed the run was
    log(f"probe again: {probes.samples[probes.take('end')]['gflops']:.1f} GFLOP/s")
    probe = replace(first_probe, gflops=max(s["gflops"] for s in probes.samples))
    report = build_report(
        config=config,
        started_at=started_at,
        machine=machine,
        probe=probe,
        probe_samples=probes.samples,
        records=records,
        macs=macs,
        photos=[name for name, _ in photos],
        scenarios=scenario_results,
        instance_plan=plan,
        model_bound=model_bound,
        rss=rss,
        notes=notes,
        reference_gmac=REFERENCE_GMAC,
    )
    return write_report(config.out_dir, started_at, f"{config.preset}-{config.device}", report,
                        render_markdown(report))  # fmt: skip


def write_report(out_dir: Path, started_at: datetime, suffix: str, report: dict, markdown: str):
    """Write ``<out_dir>/<UTC timestamp>-<suffix>.{json,md}`` atomically; returns (md, json) paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{suffix}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_atomically(json_path, json.dumps(report, indent=2).encode())
    write_atomically(md_path, markdown.encode())
    return md_path, json_path


def _line(result: dict) -> str:
    latency = result["latency_ms"]
    p50 = f"{latency['p50']:.0f}" if latency.get("p50") is not None else "-"
    name = f"{result['scenario']} ({result['pass']})" if result.get("pass") else result["scenario"]
    mode = f"enhance={str(result['enhance']):<5}" if "enhance" in result else result.get("processor", "")
    return (
        f"{name:<20} {mode} c{result['concurrency']:<3} "
        f"{result['images_per_s']:.3f} img/s  p50 {p50} ms  ok {result['ok']}/{result['requests']}"
    )
