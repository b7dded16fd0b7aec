"""Processing: validated options → bounded Triton inference → stored job outputs.

Routes call these functions; nothing here knows about HTTP forms. Concurrency towards Triton is
bounded by a semaphore of ``FACECRAFT_MAX_CONCURRENT_JOBS``: a synchronous request that cannot get
a slot within ``FACECRAFT_QUEUE_WAIT_S`` gets 503 ``server_busy`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import time
import uuid
from dataclasses import asdict, dataclass

from facecraft import processors
from facecraft.client.result import PortraitResult
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.security import validate_image_bytes
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobRecord, JobStorage
from facecraft.gateway.triton import PortraitRequest, TritonGateway
from facecraft.pipeline.errors import PipelineError
from facecraft.pipeline.options import resolve_id_photo
from facecraft.pipeline.presets import PRESETS


def _portrait_range(option: str) -> tuple[float, float]:
    """(low, high) of a portrait option: the registry's, which reads them from pipeline/options.py."""
    spec = processors.get("portrait").option(option)
    return spec.low, spec.high


SIDE_RANGE = _portrait_range("width")
MARGIN_RANGE = _portrait_range("face_margin")
FIDELITY_RANGE = _portrait_range("fidelity")
JPEG_KB_RANGE = _portrait_range("max_jpeg_kb")


def new_job_id() -> str:
    """A fresh job id: uuid4 as 32 lowercase hex characters."""
    return uuid.uuid4().hex


def check_range(name: str, value: float, low: float, high: float) -> None:
    """400 ``invalid_option`` naming the form field ``name`` unless ``low <= value <= high`` (finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise GatewayError(400, "invalid_option", f"{name} must be a finite number")
    if not low <= value <= high:
        raise GatewayError(400, "invalid_option", f"{name} must be in {low}..{high}, got {value}")


def resolve_request(
    settings: GatewaySettings,
    *,
    width: int | None = None,
    height: int | None = None,
    background: tuple[int | None, int | None, int | None] = (None, None, None),
    face_margin: float | None = None,
    use_oval_mask: bool | None = None,
    enhance_face: bool | None = None,
    enhance_fidelity: float | None = None,
    max_jpeg_kb: int | None = None,
    touch_up: bool | None = None,
    preset: str | None = None,
    layout: str | None = None,
) -> PortraitRequest:
    """Fill unset options from settings and validate every range (400 ``invalid_option``).

    With an ID-photo ``preset`` the unset background and JPEG cap come from the preset
    (``facecraft.pipeline.presets``); the pipeline then fixes size and geometry."""
    id_photo = resolve_preset(preset, layout)
    defaults_bg = settings.default_background
    if id_photo.preset is not None and PRESETS[id_photo.preset].geometry != "badge":
        defaults_bg = PRESETS[id_photo.preset].default_background
        if max_jpeg_kb is None and PRESETS[id_photo.preset].max_kb is not None:
            max_jpeg_kb = PRESETS[id_photo.preset].max_kb
    resolved_bg = tuple(
        default if value is None else value for value, default in zip(background, defaults_bg, strict=True)
    )
    request = PortraitRequest(
        width=settings.default_width if width is None else width,
        height=settings.default_height if height is None else height,
        background=resolved_bg,
        face_margin=settings.default_face_margin if face_margin is None else face_margin,
        oval_mask=settings.default_use_oval_mask if use_oval_mask is None else use_oval_mask,
        enhance=settings.default_enhance_face if enhance_face is None else enhance_face,
        fidelity=settings.default_enhance_fidelity if enhance_fidelity is None else enhance_fidelity,
        max_jpeg_kb=settings.default_max_jpeg_kb if max_jpeg_kb is None else max_jpeg_kb,
        touch_up=bool(touch_up),
        preset=id_photo.preset,
        layout=id_photo.layout,
    )
    check_range("width", request.width, *SIDE_RANGE)
    check_range("height", request.height, *SIDE_RANGE)
    for channel, value in zip("rgb", request.background, strict=True):
        check_range(f"background_{channel}", value, 0, 255)
    check_range("face_margin", request.face_margin, *MARGIN_RANGE)
    check_range("enhance_fidelity", request.fidelity, *FIDELITY_RANGE)
    check_range("max_jpeg_kb", request.max_jpeg_kb, *JPEG_KB_RANGE)
    return request


def resolve_preset(preset: str | None, layout: str | None):
    """The pipeline's validation of ``preset`` / ``layout`` as a 400 ``invalid_option``."""
    try:
        return resolve_id_photo(preset, layout)
    except PipelineError as error:
        raise GatewayError(400, "invalid_option", error.detail) from None


@dataclass
class ProcessOutcome:
    """A finished portrait with its timing; ``output`` is None when no face was found."""

    output: PortraitResult | None
    processing_time_ms: float
    error: str | None = None
    error_message: str | None = None


def result_summary(output: PortraitResult, model: str) -> dict:
    """The contract's ``result`` object (plus extras) for a successful portrait."""
    x, y, w, h = output.face_box
    return {
        "face_detected": True,
        "face_count": output.face_count,
        "face_position": {"x": x, "y": y, "width": w, "height": h},
        "output_size": {"width": output.output_size[0], "height": output.output_size[1]},
        "file_size_bytes": len(output.jpeg),
        "png_size_bytes": len(output.png),
        "jpeg_cap_met": output.jpeg_cap_met,
        "model": model,
        **({"compliance": output.compliance} if output.compliance is not None else {}),
    }


NO_FACE_RESULT = {
    "face_detected": False,
    "face_count": 0,
    "face_position": None,
    "output_size": None,
    "file_size_bytes": 0,
}


class PortraitService:
    """Runs portraits through Triton with bounded concurrency and stores the results."""

    def __init__(
        self, settings: GatewaySettings, triton: TritonGateway, storage: JobStorage, metrics: GatewayMetrics
    ):
        self.settings = settings
        self.triton = triton
        self.storage = storage
        self.metrics = metrics
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        self.statistics = {"processed": 0, "no_face": 0, "failed": 0}

    def busy_error(self) -> GatewayError:
        return GatewayError(
            503,
            "server_busy",
            f"all {self.settings.max_concurrent_jobs} inference slots are busy; retry later",
            headers={"Retry-After": str(self.settings.retry_after_s)},
        )

    @contextlib.asynccontextmanager
    async def inference_slot(self, wait_s: float | None = None):
        """Hold one of the ``FACECRAFT_MAX_CONCURRENT_JOBS`` inference slots for the block; waits
        ≤ ``wait_s`` (default QUEUE_WAIT_S), else 503 ``server_busy``. Shared by the portrait and
        the processors (facecraft.gateway.processors_service)."""
        wait_s = self.settings.queue_wait_s if wait_s is None else wait_s
        self.metrics.inferences_waiting.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=max(wait_s, 0.001))
        except asyncio.TimeoutError:
            raise self.busy_error() from None
        finally:
            self.metrics.inferences_waiting.dec()
        self.metrics.inferences_in_flight.inc()
        try:
            yield
        finally:
            self.metrics.inferences_in_flight.dec()
            self._slots.release()

    async def infer(
        self, image: bytes, request: PortraitRequest, wait_s: float | None = None
    ) -> ProcessOutcome:
        """Validate the bytes, wait for a slot (≤ ``wait_s``, default QUEUE_WAIT_S), run Triton.

        ``no_face_detected`` is returned as an outcome (not raised): each route decides its status.
        Every other failure raises :class:`GatewayError`.
        """
        validate_image_bytes(image, self.settings.max_image_pixels)
        started = time.perf_counter()
        model = request.model_name
        async with self.inference_slot(wait_s):
            inference_started = time.perf_counter()
            try:
                output = await self.triton.infer_portrait(image, request)
            except GatewayError as error:
                self.metrics.inference_outcomes.labels(model, error.error).inc()
                if error.error == "no_face_detected":
                    self.statistics["no_face"] += 1
                    return ProcessOutcome(
                        None, (time.perf_counter() - started) * 1000.0, error.error, error.message
                    )
                self.statistics["failed"] += 1
                raise
            finally:
                self.metrics.inference_latency.labels(model).observe(time.perf_counter() - inference_started)
        self.metrics.inference_outcomes.labels(model, "ok").inc()
        self.statistics["processed"] += 1
        return ProcessOutcome(output, (time.perf_counter() - started) * 1000.0)

    def store_outputs(
        self, job_id: str, output: PortraitResult, stem: str = "portrait", *, create: bool = True
    ) -> dict[str, str]:
        """Write PNG and JPEG atomically into the job folder; returns format → file name
        (``create=False``: the job must still exist, see ``JobStorage.write_file``)."""
        files = {"png": f"{stem}.png", "jpg": f"{stem}.jpg"}
        self.storage.write_file(job_id, files["png"], output.png, create=create)
        self.storage.write_file(job_id, files["jpg"], output.jpeg, create=create)
        if output.print_sheet is not None:
            files["layout"] = f"{stem}-sheet.jpg"
            self.storage.write_file(job_id, files["layout"], output.print_sheet, create=create)
        return files

    async def process_and_store(
        self, image: bytes, request: PortraitRequest, filename: str | None = None
    ) -> tuple[str, ProcessOutcome]:
        """The work of ``POST /api/v1/process``: infer, then persist outputs + a completed record."""
        outcome = await self.infer(image, request)
        job_id = new_job_id()
        if outcome.output is None:
            return job_id, outcome
        now = time.time()
        record = JobRecord(
            job_id=job_id,
            kind="process",
            status="completed",
            created_at=now,
            updated_at=now,
            options=asdict(request),
            filename=filename,
            result=result_summary(outcome.output, request.model_name),
            processing_time_ms=outcome.processing_time_ms,
        )
        await asyncio.to_thread(self._store_job, record, outcome.output)
        return job_id, outcome

    def _store_job(self, record: JobRecord, output: PortraitResult) -> None:
        """Outputs then metadata; on a disk error the whole job folder is removed (nothing partial)."""
        try:
            record.files = self.store_outputs(record.job_id, output)
            self.storage.save(record)
        except GatewayError:
            with contextlib.suppress(GatewayError):
                self.storage.delete(record.job_id)
            raise


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
