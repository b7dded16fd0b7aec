"""``facecraft bench --processor NAME``: one processor ensemble through Triton gRPC, images/s at
each concurrency (default 1 and 16), with the harness's conv probes, statistics and report writer.

The processor, its ensemble, its input kind and its models come from the registry
(``facecraft.processors``), so a processor added there is benchmarked without a change here as
long as this module knows its input kind (:data:`INPUT_KINDS`). Processors that detect every face
(their models include the multi-face step ``faces``) run over group photos; the others over the
harness's single-face photos. Options are the registry defaults.

Steps (:func:`run_processor_benchmark`): the benchmark model repository and instance plan of
``facecraft bench`` (ONNX exported when missing), the embedded Triton on free ports, then
:func:`measure_processor`: a warm-up request, ``requests`` requests at each concurrency with
Triton statistics and a conv probe around each, the ``c<max>/c1`` ratio with its probe spread.
Writes ``<out>/<timestamp>-processor-<name>-<preset>-<device>.{md,json}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from facecraft import processors as registry
from facecraft.bench.harness import (
    BenchConfig,
    export_records,
    instance_plan,
    log,
    measure_concurrencies,
    prepare_repository,
    select_photos,
    start_triton,
    write_report,
)
from facecraft.bench.machine import conv_probe, describe_machine
from facecraft.bench.probes import DISTURBED_SPREAD, ProbeLog, ratio_spread, summary
from facecraft.bench.report import _fmt, machine_lines, weights_label

REPORT_VERSION = 1
# Small group photos of the shared set (2-3 annotated faces each, 360-500 px; ../shared/data/faces/
# SOURCES.md): every face of an image is processed, so a face processor is measured on several.
GROUP_PHOTOS = (
    "dlib__2008_001322.jpg",
    "dlib__2008_002506.jpg",
    "dlib__2008_001009.jpg",
    "dlib__2009_004587.jpg",
)
DEFAULT_CONCURRENCY = (1, 16)


@dataclass(frozen=True)
class InputKind:
    """How the bench feeds processors of one registry ``input_kind``.

    ``samples(photos)``: the (label, request input) pairs the load generator cycles over, from
    (name, encoded image bytes) photos; ``send(client, processor, sample)``: one request with the
    asyncio Triton client (``AsyncPortraitClient``). A two-input processor (e.g. a face swapper:
    source + target) gets an entry that pairs photos and passes both images.
    """

    samples: Callable[[list[tuple[str, bytes]]], list[tuple[str, object]]]
    send: Callable[[object, str, object], Awaitable[object]]


INPUT_KINDS: dict[str, InputKind] = {
    "image": InputKind(
        samples=lambda photos: list(photos),
        send=lambda client, name, image: client.run_processor(name, image),
    ),
}


def input_kind(processor: registry.Processor) -> InputKind:
    """The :class:`InputKind` of ``processor``; ``ValueError`` naming the kinds the bench knows."""
    try:
        return INPUT_KINDS[processor.input_kind]
    except KeyError:
        raise ValueError(
            f"processor {processor.name} takes input {processor.input_kind!r}; the processor bench "
            f"feeds {', '.join(INPUT_KINDS)} (add an InputKind in facecraft.bench.processors)"
        ) from None


def photo_names(processor: registry.Processor) -> tuple[str, ...] | None:
    """The shared photos for ``processor``: :data:`GROUP_PHOTOS` when it handles every face (its
    models include ``faces``), else None (the harness default, single frontal faces)."""
    return GROUP_PHOTOS if "faces" in processor.models else None


def processor_photos(config: BenchConfig, processor: registry.Processor) -> list[tuple[str, bytes]]:
    """(name, bytes) photos of ``processor``'s bench: ``config.photos_dir`` or the shared set."""
    names = photo_names(processor)
    if names is None:
        return select_photos(config.photos_dir)
    return select_photos(config.photos_dir, names=names)


def measure_processor(
    config: BenchConfig,
    name: str,
    *,
    grpc_url: str,
    stats_url: str,
    records: dict[str, dict],
    plan,
) -> dict:
    """Benchmark processor ``name`` on the running Triton at ``grpc_url`` (statistics from
    ``stats_url``, host:port of its HTTP endpoint); returns the report dict.

    ``records``: ``export.json`` by ONNX model (``export_records``); ``plan``: the Triton
    instance plan it runs with (for the report). Raises ``KeyError`` for an unknown processor,
    ``ValueError`` for an input kind the bench cannot feed, and the client's ``FacecraftError``
    when the warm-up request fails (a benchmark of error answers would measure nothing).
    """
    from facecraft.client.async_portrait_client import AsyncPortraitClient

    processor = registry.get(name)
    kind = input_kind(processor)
    started_at = datetime.now(timezone.utc)
    concurrency = list(config.concurrency)
    log(f"processor {name} ({processor.ensembles[0]}), preset {config.preset}, device {config.device}, "
        f"concurrency {concurrency}, {config.requests} requests each")  # fmt: skip
    machine = describe_machine()
    first_probe = conv_probe(config.device)
    probes = ProbeLog(measure=lambda: conv_probe(config.device).gflops)
    probes.take("start", first_probe.gflops)
    log(f"probe: {first_probe.gflops:.1f} GFLOP/s ({first_probe.provider})")
    photos = processor_photos(config, processor)
    samples = kind.samples(photos)
    results: list[dict] = []

    async def scenarios() -> None:
        async with AsyncPortraitClient(grpc_url, "grpc", timeout_s=3600) as client:
            await kind.send(client, name, samples[0][1])  # warm-up
            await measure_concurrencies(
                "triton_grpc",
                lambda sample, _label: kind.send(client, name, sample),
                samples=samples,
                requests=config.requests,
                concurrency=concurrency,
                stats_url=stats_url,
                results=results,
                probes=probes,
                fields={"processor": name},
            )

    asyncio.run(scenarios())
    log(f"probe again: {probes.samples[probes.take('end')]['gflops']:.1f} GFLOP/s")
    return build_processor_report(
        config=config,
        processor=processor,
        started_at=started_at,
        machine=machine,
        probe=replace(first_probe, gflops=max(s["gflops"] for s in probes.samples)),
        probe_samples=probes.samples,
        records=records,
        photos=[label for label, _ in samples],
        scenarios=results,
        plan=plan,
    )


def build_processor_report(
    *, config, processor, started_at, machine, probe, probe_samples, records, photos, scenarios, plan
) -> dict:
    """The processor report as a JSON-serialisable dict (fields: docs/benchmarks.md)."""
    by_concurrency = {s["concurrency"]: s for s in scenarios}
    low, high = min(by_concurrency), max(by_concurrency)
    ratio = spread = None
    if high != low and by_concurrency[low]["images_per_s"]:
        ratio = by_concurrency[high]["images_per_s"] / by_concurrency[low]["images_per_s"]
        spread = ratio_spread(probe_samples, by_concurrency[high], by_concurrency[low])
    models = {
        model: {
            "trained": record.get("trained"),
            "weights_source": record.get("weights_source"),
            "preset": record.get("preset"),
            "precision": record.get("precision"),
        }
        for model, record in records.items()
        if model in processor.models
    }
    notes = [f"options: the registry defaults ({', '.join(o.name for o in processor.options) or 'none'})"]
    untrained = [model for model, m in models.items() if m["trained"] is not True]
    if untrained:
        notes.append(
            f"UNTRAINED weights (seeded random) for: {', '.join(untrained)} — timings are valid, outputs are not real"
        )
    if config.device == "cpu":
        notes.append("CPU only: relative numbers on this machine; absolute times only from a GPU run")
    return {
        "report_version": REPORT_VERSION,
        "kind": "processor",
        "processor": processor.name,
        "ensemble": processor.ensembles[0],
        "input_kind": processor.input_kind,
        "triton_models": list(processor.models),
        "timestamp": started_at.isoformat(),
        "preset": config.preset,
        "device": config.device,
        "requests_per_scenario": config.requests,
        "concurrency": [s["concurrency"] for s in scenarios],
        "machine": machine,
        "instance_plan": {**asdict(plan), "description": plan.describe()},
        "conv_probe": asdict(probe),
        "conv_probe_series": {
            **summary([s["gflops"] for s in probe_samples]),
            "threshold": DISTURBED_SPREAD,
            "samples": list(probe_samples),
        },
        "models": models,
        "photos": photos,
        "scenarios": scenarios,
        "images_per_s": {f"c{s['concurrency']}": s["images_per_s"] for s in scenarios},
        "ratio": {
            "name": f"c{high}_over_c{low}",
            "value": ratio,
            "probe_spread": spread,
            "disturbed": spread is not None and spread > DISTURBED_SPREAD,
        },
        "notes": notes,
    }


def render_processor_markdown(report: dict) -> str:
    """A Markdown version of a processor report (same numbers as the JSON)."""
    ratio = report["ratio"]
    flag = " — **DISTURBED**: the machine's conv throughput moved" if ratio["disturbed"] else ""
    spread = f" (probe spread {ratio['probe_spread']:.0%}{flag})" if ratio["probe_spread"] is not None else ""
    lines = [
        f"# Facecraft processor benchmark — `{report['processor']}`, preset `{report['preset']}`, "
        f"device `{report['device']}`",
        "",
        f"{report['timestamp']} · ensemble `{report['ensemble']}` over Triton gRPC · input "
        f"{report['input_kind']} · {report['requests_per_scenario']} requests per concurrency",
        "",
        f"Photos: {', '.join(report['photos'])}",
        "",
        *machine_lines(report),
        "",
        "## Models",
        "",
        "| model | preset | precision | weights |",
        "|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        lines.append(
            f"| {name} | {model['preset']} | {model['precision']} | {weights_label(model['trained'])} |"
        )
    lines += [
        "",
        "## Images/s over Triton gRPC",
        "",
        "| concurrency (effective) | ok / requests | images/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        latency = s["latency_ms"]
        lines.append(
            f"| {s['concurrency']} ({s['effective_concurrency']}) | {s['ok']} / {s['requests']} | "
            f"{s['images_per_s']:.3f} | {_fmt(latency.get('p50'), 0)} | {_fmt(latency.get('p95'), 0)} | "
            f"{_fmt(latency.get('p99'), 0)} |"
        )
    lines += ["", f"- {ratio['name']}: {_fmt(ratio['value'])}{spread}"]
    for s in report["scenarios"]:
        if s["errors"]:
            lines.append(f"- errors at c{s['concurrency']}: {'; '.join(s['errors'])}")
    lines += ["", "## Notes", "", *(f"- {note}" for note in report["notes"]), ""]
    return "\n".join(lines)


def run_processor_benchmark(config: BenchConfig, name: str):
    """Prepare the benchmark repository, start Triton, :func:`measure_processor`, write the report;
    returns (markdown path, JSON path)."""
    processor = registry.get(name)
    input_kind(processor)  # refuse an input kind the bench cannot feed before exporting anything
    plan = instance_plan(config)
    log(f"Triton instance plan: {plan.describe()}")
    repo = prepare_repository(config, plan)
    server = start_triton(repo, repo.parent / "runtime")
    try:
        report = measure_processor(
            config, name, grpc_url=server.grpc_url, stats_url=server.http_url,
            records=export_records(repo), plan=plan,
        )  # fmt: skip
    finally:
        server.stop()
    started_at = datetime.fromisoformat(report["timestamp"])
    return write_report(
        config.out_dir, started_at, f"processor-{name}-{config.preset}-{config.device}", report,
        render_processor_markdown(report),
    )  # fmt: skip
