"""Running processors (``facecraft.processors``): one image, a chain, a chain as an async job.

The routes (``routes_processors``) and the job runner (``runner``, for both job backends) call
these functions; the queue mechanics stay in ``jobs.py`` / ``redis_jobs.py`` — a processors-chain
job is executed by :func:`execute_chain_job` alone. Inference shares the portrait's slots (``PortraitService.inference_slot``) and is counted
per processor in ``facecraft_gateway_processor_*`` metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from facecraft import processors as registry
from facecraft.client.processors import MEDIA_TYPES, ProcessorResult
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.security import validate_image_bytes
from facecraft.gateway.service import PortraitService, resolve_request
from facecraft.gateway.storage import JobGone, JobRecord

RESULT_STEM = "result"
FILE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "application/json": "json",
    "video/mp4": "mp4",  # video jobs (facecraft.gateway.video_jobs)
    "video/webm": "webm",
    "application/x-ndjson": "jsonl",
}


def unknown_processor(name: str) -> GatewayError:
    """404 ``not_found`` listing the valid processor names."""
    return GatewayError(404, "not_found", f"unknown processor {name!r}; valid: {', '.join(registry.names())}")


def disabled_processor(name: str) -> GatewayError:
    """403 ``processor_disabled``: the operator switched ``name`` off (FACECRAFT_DISABLED_PROCESSORS)."""
    return GatewayError(
        403,
        "processor_disabled",
        f"processor {name!r} is disabled on this server by its operator (FACECRAFT_DISABLED_PROCESSORS)",
    )


def check_enabled(names, disabled) -> None:
    """Raise :func:`disabled_processor` for the first of ``names`` in ``disabled``."""
    for name in names:
        if name in disabled:
            raise disabled_processor(name)


def resolve_options(name: str, values: dict[str, object]) -> dict[str, object]:
    """Every option of processor ``name`` (registry defaults filled in; for ``portrait`` only the
    given ones and ``format``, so the gateway's settings supply the rest, as on ``/process``): 404
    for an unknown processor, 400 ``invalid_option`` naming the option for an unknown option or a
    bad value."""
    if name not in registry.PROCESSORS:
        raise unknown_processor(name)
    try:
        resolved = registry.get(name).resolve(values)
    except registry.OptionError as error:
        raise GatewayError(400, "invalid_option", f"{name}: {error}") from None
    if name == "portrait":  # unset options keep the gateway's FACECRAFT_DEFAULT_* settings
        given = {key: resolved[key] for key, value in values.items() if value is not None}
        return {**given, "format": resolved["format"]}
    return resolved


async def check_segmentation_model(service: PortraitService, model: str) -> None:
    """503 ``model_unavailable`` unless the Triton model behind background_remover's ``model``
    is ready; the message lists the variants that are."""
    triton_model = registry.SEGMENTATION_MODELS[model]
    if await _ready(service, triton_model):
        return
    ready = [name for name, served in registry.SEGMENTATION_MODELS.items() if await _ready(service, served)]
    raise GatewayError(
        503,
        "model_unavailable",
        f"background_remover model={model} needs the Triton model {triton_model}, which is not loaded; "
        f"available: {', '.join(ready) or 'none'}; load it with POST /api/v1/models/{triton_model}/load, "
        f"or export it first (`facecraft export {triton_model}` or POST /api/v1/models/download)",
        headers={"Retry-After": str(service.settings.retry_after_s)},
    )


async def _ready(service: PortraitService, model: str) -> bool:
    try:
        return await service.triton.model_ready(model)
    except GatewayError as error:
        if error.error == "triton_unavailable":
            raise
        return False


async def run_processor(
    service: PortraitService,
    name: str,
    image: bytes | dict[str, bytes],
    options: dict[str, object],
    wait_s: float | None = None,
) -> ProcessorResult:
    """One image through processor ``name`` (``options`` resolved by :func:`resolve_options`);
    ``image``: a processor with several images (face_swapper) takes tensor name → bytes.

    Raises :class:`GatewayError`: the upload checks (415, 400), ``no_face_detected`` (400),
    ``invalid_option``, ``model_unavailable`` (503), ``server_busy`` and the Triton errors.
    """
    for data in image.values() if isinstance(image, dict) else (image,):  # face_swapper: SOURCE, TARGET
        if isinstance(data, (bytes, bytearray, memoryview)):  # not a precomputed SOURCE_EMBEDDING
            validate_image_bytes(data, service.settings.max_image_pixels)
    metrics = service.metrics
    started = time.perf_counter()
    try:
        if name == "portrait":
            return await _run_portrait(service, image, options, wait_s)
        if name == "background_remover":
            await check_segmentation_model(service, str(options["model"]))
        async with service.inference_slot(wait_s):
            result = await service.triton.infer_processor(name, image, options)
    except GatewayError as error:
        metrics.processor_requests.labels(name, error.error).inc()
        raise
    finally:
        metrics.processor_latency.labels(name).observe(time.perf_counter() - started)
    metrics.processor_requests.labels(name, "ok").inc()
    return result


async def _run_portrait(
    service: PortraitService, image: bytes, options: dict[str, object], wait_s: float | None
) -> ProcessorResult:
    """``portrait`` through the Facecraft service; the PNG or the JPEG by ``format`` (an ID-photo
    preset's compliance report and print sheet are on ``POST /api/v1/process``)."""
    background = options.get("background")
    request = resolve_request(
        service.settings,
        width=options.get("width"),
        height=options.get("height"),
        background=(None, None, None) if background is None else tuple(background),
        face_margin=options.get("face_margin"),
        use_oval_mask=options.get("oval_mask"),
        enhance_face=options.get("enhance"),
        enhance_fidelity=options.get("fidelity"),
        max_jpeg_kb=options.get("max_jpeg_kb"),
        touch_up=options.get("touch_up"),
        preset=options.get("preset"),
    )
    outcome = await service.infer(image, request, wait_s=wait_s)
    if outcome.output is None:
        raise GatewayError(400, "no_face_detected", outcome.error_message or "no face found")
    jpeg = options.get("format") == "jpeg"
    return ProcessorResult(
        "portrait",
        data=outcome.output.jpeg if jpeg else outcome.output.png,
        media_type=MEDIA_TYPES["jpeg" if jpeg else "png"],
        output_size=outcome.output.output_size,
        face_count=outcome.output.face_count,
        options=options,
    )


def parse_chain(text: str) -> tuple[str, ...]:
    """The ``processors`` form field → ordered names: 404 for an unknown one, 400 otherwise."""
    try:
        chain = registry.parse_chain(text)
    except KeyError:
        unknown = next(
            p.strip() for p in text.split(",") if p.strip() and p.strip() not in registry.PROCESSORS
        )
        raise unknown_processor(unknown) from None
    except ValueError as error:
        raise GatewayError(400, "invalid_option", f"processors: {error}") from None
    return chain


def job_upload_fields(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The multipart file fields a job with ``chain`` takes beside ``file`` (the image the chain
    carries): each processor's ``extra_inputs`` in lower case (face_swapper: ``source``), once."""
    fields: list[str] = []
    for name in chain:
        fields += [
            tensor.lower() for tensor in registry.get(name).extra_inputs if tensor.lower() not in fields
        ]
    return tuple(fields)


def check_job_uploads(chain: tuple[str, ...] | None, given: dict[str, bool]) -> None:
    """The extra uploads of ``POST /api/v1/jobs`` (``given``: field → sent) against ``chain``:
    422 ``invalid_request`` when one the chain needs is missing (face_swapper without ``source``),
    400 ``invalid_option`` when one is sent that no processor of the chain takes (never ignored)."""
    wanted = job_upload_fields(chain or ())
    for field in wanted:
        if not given.get(field):
            takers = [n for n in chain if field.upper() in registry.get(n).extra_inputs]
            raise GatewayError(
                422,
                "invalid_request",
                f"the multipart field `{field}` (an image) is required: {takers[0]} takes it beside `file`",
            )
    stray = [field for field, sent in given.items() if sent and field not in wanted]
    if stray:
        takers = [n for n in registry.names() if stray[0].upper() in registry.get(n).extra_inputs]
        what = "the portrait job" if chain is None else f"processors={','.join(chain)}"
        raise GatewayError(
            400,
            "invalid_option",
            f"`{stray[0]}` was sent but {what} takes no `{stray[0]}` file "
            f"(it is for {', '.join(takers) or 'no processor'})",
        )


def resolve_chain_options(chain: tuple[str, ...], text: str | None) -> dict[str, dict[str, object]]:
    """``processor_options`` (JSON ``{"<processor>": {"<option>": value}}``, optional) → every
    option of every processor of the chain. Intermediate results travel as PNG, so ``format``
    applies to the last processor only."""
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise GatewayError(400, "invalid_option", f"processor_options is not JSON: {error}") from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise GatewayError(
            400, "invalid_option", 'processor_options must be {"<processor>": {"<option>": value}}'
        )
    stray = set(given) - set(chain)
    if stray:
        raise GatewayError(
            400, "invalid_option", f"processor_options names processors not in the chain: {sorted(stray)}"
        )
    resolved = {name: resolve_options(name, given.get(name, {})) for name in chain}
    for name in chain[:-1]:
        if "format" in resolved[name]:
            resolved[name]["format"] = "png"
    return resolved


def step_images(name: str, image: bytes, extras: dict[str, object] | None):
    """What processor ``name`` of a chain is given: ``image`` (the one the chain carries), or,
    for a processor with ``extra_inputs`` (face_swapper), tensor → data with ``image`` as its last
    image input (``TARGET``) and the job's ``extras`` (``SOURCE`` bytes, or its precomputed
    ``SOURCE_EMBEDDING``) for the others."""
    processor = registry.get(name)
    if not processor.extra_inputs:
        return image
    extras = extras or {}
    images: dict[str, object] = {processor.image_inputs[-1]: image}
    for tensor in processor.extra_inputs:
        identity = processor.identity
        if identity is not None and tensor == identity.image and identity.tensor in extras:
            images[identity.tensor] = extras[identity.tensor]
        else:
            images[tensor] = extras[tensor]
    return images


async def source_identities(
    service: PortraitService,
    chain: tuple[str, ...],
    options: dict[str, dict[str, object]],
    extras: dict[str, bytes],
    wait_s: float | None = None,
) -> dict[str, object]:
    """``extras`` with each identity of the chain's processors computed once (``Processor.identity``:
    face_swapper's ``SOURCE`` → ``SOURCE_EMBEDDING``, one Triton call), for a job that sends the
    same source with many frames. Raises :class:`GatewayError` (``no_source_face`` 400,
    ``model_unavailable``...)."""
    computed: dict[str, object] = dict(extras)
    for name in chain:
        identity = registry.get(name).identity
        if identity is None or identity.tensor in computed or identity.image not in extras:
            continue
        validate_image_bytes(extras[identity.image], service.settings.max_image_pixels)
        async with service.inference_slot(wait_s):
            computed[identity.tensor] = await service.triton.identity(
                name, extras[identity.image], options[name]
            )
    return computed


async def run_chain(
    service: PortraitService,
    chain: tuple[str, ...],
    image: bytes,
    options: dict[str, dict[str, object]],
    wait_s: float | None = None,
    extras: dict[str, object] | None = None,
) -> ProcessorResult:
    """``image`` through each processor of ``chain`` in order, each one's output the next one's
    input (``extras``: the job's other uploads by tensor, :func:`step_images`); the last result
    (with ``options`` naming the whole chain)."""
    result: ProcessorResult | None = None
    for name in chain:
        result = await run_processor(
            service, name, step_images(name, image, extras), options[name], wait_s=wait_s
        )
        image = result.data
    return replace(result, options={"processors": list(chain), **options})


def result_summary(result: ProcessorResult) -> dict:
    """The ``result`` of a job record / route body for a processor result."""
    summary: dict = {"processor": result.processor, "media_type": result.media_type}
    if result.face_count is not None:
        summary["face_count"] = result.face_count
    if result.output_size is not None:
        summary["output_size"] = {"width": result.output_size[0], "height": result.output_size[1]}
    if result.report is not None:
        summary["face_count"] = result.report["face_count"]
    return summary


def media_type_of(file_name: str) -> str:
    """The media type of a stored result file (by the extension :func:`result_file` gave it)."""
    extension = file_name.rsplit(".", 1)[-1]
    return next(media for media, ext in FILE_EXTENSIONS.items() if ext == extension)


def result_file(result: ProcessorResult) -> tuple[str, bytes]:
    """(file name, bytes) to store for a result: the image, or the JSON report."""
    if result.report is not None:
        return f"{RESULT_STEM}.json", json.dumps(result.report_with_image()).encode("utf-8")
    return f"{RESULT_STEM}.{FILE_EXTENSIONS[result.media_type]}", result.data


async def execute_chain_job(
    service: PortraitService, record: JobRecord, image: bytes, extras: dict[str, bytes] | None = None
) -> bool:
    """The work of an async job with ``processors``: run the chain (``extras``: the job's other
    uploads by tensor, face_swapper's ``SOURCE``), store its result file
    (``record.files["result"]``), fill ``record.result``. False when the job was deleted
    meanwhile. Raises :class:`GatewayError` (the queue retries or fails the job with it)."""
    started = time.perf_counter()
    chain = tuple(record.processors or ())
    result = await run_chain(
        service, chain, image, record.options, wait_s=service.settings.triton_timeout_s, extras=extras
    )
    name, data = result_file(result)
    try:
        await asyncio.to_thread(service.storage.write_file, record.job_id, name, data, create=False)
    except JobGone:
        return False
    record.files = {"result": name}
    record.result = {**result_summary(result), "processors": list(chain)}
    record.processing_time_ms = (time.perf_counter() - started) * 1000.0
    return True
