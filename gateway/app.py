"""The FastAPI application: ``create_app(settings)`` wires settings, storage, Triton, jobs, routes.

The lifespan creates the output folder, starts the async job backend (``FACECRAFT_JOB_BACKEND``:
the local queue recovers and starts its workers; the Redis one connects and reconciles), and runs
the periodic cleanup of old jobs; on shutdown it stops them and closes the Triton channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facecraft import __version__
from facecraft.gateway import routes_jobs, routes_models, routes_ops, routes_process, routes_processors
from facecraft.gateway.errors import ErrorResponse, GatewayError
from facecraft.gateway.health import ReadinessProbe, WeightsLabel
from facecraft.gateway.jobs import create_job_backend
from facecraft.gateway.metrics import GatewayMetrics, MetricsMiddleware
from facecraft.gateway.models import ModelManager
from facecraft.gateway.security import check_api_key
from facecraft.gateway.service import PortraitService
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import JobStorage
from facecraft.gateway.tasks import cancel_and_wait
from facecraft.gateway.triton import TritonGateway
from facecraft.gateway.video_jobs import upload_cap

log = logging.getLogger("facecraft.gateway")

MULTIPART_OVERHEAD_BYTES = 1024 * 1024
DESCRIPTION = """Facecraft portrait service (CodeFormer + U²-Net + dlib) served by Triton.

Every error response has the shape `{"success": false, "error": "<code>", "error_message": "..."}`.
When `FACECRAFT_API_KEY` is set, `/api/v1/*` (except `/api/v1/health`) requires the `X-API-Key` header.
Results made with seeded random weights are labelled `weights: "untrained"`.
"""


def error_response(status: int, error: str, message: str, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=error, error_message=message).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


class BodySizeLimitMiddleware:
    """Rejects request bodies above a cap with 413 ``file_too_large`` while they stream in.

    The cap is the per-file upload cap (plus multipart overhead), times the batch file limit on the
    batch route; ``POST /api/v1/jobs`` takes videos, up to ``FACECRAFT_VIDEO_MAX_MB`` (the route
    holds an image to the image cap). A declared Content-Length above it is rejected before
    reading anything.
    """

    def __init__(self, app, settings: GatewaySettings):
        self.app = app
        self.single_cap = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        self.batch_cap = settings.max_upload_bytes * settings.batch_max_files + MULTIPART_OVERHEAD_BYTES
        self.jobs_cap = upload_cap(settings) + MULTIPART_OVERHEAD_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "").rstrip("/")
        cap = self.batch_cap if path.endswith("/batch") else self.single_cap
        if path == "/api/v1/jobs":
            cap = self.jobs_cap
        too_large = error_response(413, "file_too_large", f"request body is larger than {cap} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > cap:
                await too_large(scope, receive, send)
                return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > cap:
                    state["exceeded"] = True
                    raise GatewayError(413, "file_too_large", f"request body is larger than {cap} bytes")
            return message

        async def guarded_send(message):
            if state["exceeded"]:
                return  # the app's own answer to the aborted body is replaced by the 413 below
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except GatewayError:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await too_large(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, error: GatewayError):
        return error_response(error.status_code, error.error, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError):
        parts = []
        for item in error.errors():
            location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "file_too_large"}
        code = codes.get(
            error.status_code, "invalid_request" if error.status_code < 500 else "internal_error"
        )
        detail = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
        return error_response(error.status_code, code, detail, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"unexpected {type(error).__name__}")


async def _cleanup_loop(app: FastAPI) -> None:
    settings: GatewaySettings = app.state.settings
    while True:
        try:
            removed = await asyncio.to_thread(app.state.storage.cleanup, settings.cleanup_age_s)
            if removed:
                app.state.metrics.cleanup_removed.inc(len(removed))
                log.info("cleanup removed %d jobs older than %g h", len(removed), settings.cleanup_age_hours)
        except Exception:
            log.exception("cleanup failed")
        await asyncio.sleep(settings.cleanup_interval_s)


QUEUE_UI_PATH = "/api/v1/queue-ui"


def _mount_queue_ui(app: FastAPI) -> None:
    """SAQ's web UI of the shared queue at :data:`QUEUE_UI_PATH`, behind ``FACECRAFT_API_KEY``
    (the ``X-API-Key`` header, as for every ``/api/v1`` route)."""
    from saq.web.starlette import saq_web

    ui = saq_web(QUEUE_UI_PATH, queues=[app.state.jobs.queue])

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            secret = app.state.settings.api_key
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            try:
                check_api_key(secret.get_secret_value() if secret else None, headers.get("x-api-key"))
            except GatewayError as error:
                await error_response(error.status_code, error.error, error.message)(scope, receive, send)
                return
        await ui(scope, receive, send)

    app.mount(QUEUE_UI_PATH, guarded)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway app; nothing connects or touches the disk until the lifespan starts."""
    settings = settings or GatewaySettings()
    metrics = GatewayMetrics()
    storage = JobStorage(settings.output_dir)
    served_repository = settings.triton_repository or settings.model_repository
    triton = TritonGateway(
        settings.triton_url,
        settings.triton_timeout_s,
        settings.retry_after_s,
        repository=served_repository,
        recover_stubs=settings.recover_unhealthy_stubs,
        on_recovery=metrics.count_stub_recovery,
    )
    model_manager = ModelManager(triton, settings.model_repository, settings.triton_repository)
    service = PortraitService(settings, triton, storage, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        storage.ensure_ready()
        await app.state.jobs.start()
        cleanup = asyncio.create_task(_cleanup_loop(app), name="facecraft-cleanup")
        log.info("gateway %s: Triton %s, outputs in %s", __version__, settings.triton_url, storage.root)
        try:
            yield
        finally:
            await cancel_and_wait(lambda: [cleanup])
            await model_manager.stop()
            await app.state.jobs.stop()
            await triton.close()

    app = FastAPI(
        title="Facecraft gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.storage = storage
    app.state.triton = triton
    app.state.service = service
    app.state.models = model_manager
    app.state.jobs = create_job_backend(settings, service, storage, metrics)
    app.state.readiness = ReadinessProbe(triton, settings.ready_cache_s)
    app.state.weights = WeightsLabel(triton, settings.model_repository)
    _install_error_handlers(app)
    app.include_router(routes_process.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_processors.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_models.router)
    if settings.uses_redis:
        _mount_queue_ui(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(BodySizeLimitMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
