"""Operations: ``/health`` (liveness), ``/ready`` (real probe inference), ``/status``, ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from facecraft import __version__
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.health import describe_models, device_of
from facecraft.gateway.schemas import HealthResponse, ReadyResponse, StatusResponse

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthResponse, summary="Liveness: the gateway process answers")
async def health() -> dict:
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: Triton reachable and both ensembles answer a real probe inference",
    responses={
        503: {"model": ReadyResponse, "description": "not ready; `reason` says why (Retry-After set)"}
    },
)
async def ready(request: Request):
    verdict = await request.app.state.readiness.check()
    request.app.state.metrics.triton_ready.set(1 if verdict.ready else 0)
    body = {
        "ready": verdict.ready,
        "checks": verdict.checks,
        "reason": verdict.reason,
        "checked_at": verdict.checked_at,
    }
    if verdict.ready:
        return body
    retry_after = str(request.app.state.settings.retry_after_s)
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})


@router.get(
    "/status",
    response_model=StatusResponse,
    summary="Version, uptime, Triton, per-model readiness / instance kind / weights, statistics",
)
async def status(request: Request) -> dict:
    state = request.app.state
    settings = state.settings
    triton_info: dict = {"url": settings.triton_url}
    models: list[dict] = []
    try:
        metadata = await state.triton.server_metadata()
        triton_info.update(reachable=True, version=metadata.get("version"), name=metadata.get("name"))
        models = await describe_models(state.triton, settings.model_repository)
        state.weights.update(models)
    except GatewayError as error:
        triton_info.update(reachable=False, error=error.message)
    return {
        "version": __version__,
        "uptime_s": round(time.time() - state.metrics.started_at, 1),
        "device": device_of(models),
        "weights": await state.weights.get() if models else "unknown",
        "triton": triton_info,
        "models": models,
        "statistics": {
            **state.service.statistics,
            "job_queue_depth": state.jobs.depth,
            "inference_slots": settings.max_concurrent_jobs,
        },
    }


@router.get("/metrics", summary="Prometheus metrics (facecraft_gateway_*)", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    await request.app.state.jobs.refresh_metrics()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
