"""Model management and system routes (FaceFusion-style): ``/api/v1/models``, ``/api/v1/system``,
``/api/v1/health``. Routes validate and delegate to :mod:`facecraft.gateway.models` and
:mod:`facecraft.gateway.system`; the admin routes (download, load, unload) answer 403
``admin_disabled`` when ``FACECRAFT_ADMIN_ROUTES`` is false."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from facecraft import __version__
from facecraft.gateway.errors import GatewayError, error_responses
from facecraft.gateway.models import list_models
from facecraft.gateway.security import require_api_key
from facecraft.gateway.system import cpu_info, disk_info, gpu_info, instance_plan, load_average, memory_info

router = APIRouter(prefix="/api/v1", tags=["models and system"])
protected = [Depends(require_api_key)]


async def require_admin(request: Request) -> None:
    """403 ``admin_disabled`` unless ``FACECRAFT_ADMIN_ROUTES`` is true (the default)."""
    if not request.app.state.settings.admin_routes:
        raise GatewayError(
            403, "admin_disabled", "model administration is switched off (FACECRAFT_ADMIN_ROUTES=false)"
        )


admin = [Depends(require_api_key), Depends(require_admin)]


class DownloadRequest(BaseModel):
    """``POST /api/v1/models/download``: e.g. ``{"models": ["u2netp"]}``; a bare JSON list of
    names is accepted too."""

    models: list[str] = Field(..., min_length=1, description="model names (GET /api/v1/models)")
    preset: str | None = Field(None, description="full | tiny; default: the repository's existing exports")


@router.get(
    "/models",
    dependencies=protected,
    summary="Every model: state, versions, platform, instance kinds, weights provenance, size, licence",
    responses=error_responses("unauthorized", "triton_unavailable", "triton_timeout"),
)
async def models(request: Request) -> dict:
    state = request.app.state
    manager = state.models
    return {"models": await list_models(state.triton, manager.model_repository, manager.triton_repository)}


@router.post(
    "/models/download",
    dependencies=admin,
    status_code=202,
    summary="Download official weights, export and load the models (an async operation to poll)",
    responses=error_responses(
        "unauthorized",
        "admin_disabled",
        "model_not_found",
        "repository_unknown",
        "export_unavailable",
        "invalid_request",
    ),
)
async def download(request: Request, body: DownloadRequest | list[str]) -> dict:
    names, preset = (body, None) if isinstance(body, list) else (body.models, body.preset)
    operation = request.app.state.models.start_download(list(names), preset)
    return {**operation.as_dict(), "status_url": f"/api/v1/models/download/{operation.id}"}


@router.get(
    "/models/download/{operation_id}",
    dependencies=protected,
    summary="Status and progress of a model download operation",
    responses=error_responses("unauthorized", "not_found"),
)
async def download_status(request: Request, operation_id: str) -> dict:
    return request.app.state.models.operation(operation_id).as_dict()


@router.post(
    "/models/{name}/load",
    dependencies=admin,
    summary="Load (or reload) a model of the repository into Triton",
    responses=error_responses(
        "unauthorized",
        "admin_disabled",
        "model_not_found",
        "model_load_failed",
        "triton_unavailable",
        "triton_timeout",
    ),
)
async def load(request: Request, name: str) -> dict:
    await request.app.state.models.load(name)
    return {"name": name, "state": "READY"}


@router.post(
    "/models/{name}/unload",
    dependencies=admin,
    summary="Unload a model from Triton (ensembles using it become unavailable: 503 model_unavailable)",
    responses=error_responses(
        "unauthorized", "admin_disabled", "model_not_found", "triton_unavailable", "triton_timeout"
    ),
)
async def unload(request: Request, name: str) -> dict:
    await request.app.state.models.unload(name)
    return {"name": name, "state": "UNLOADED"}


@router.get(
    "/system",
    dependencies=protected,
    summary="Host, GPUs, disk, Triton version, instance plan",
    responses=error_responses("unauthorized"),
)
async def system(request: Request) -> dict:
    state = request.app.state
    triton: dict = {"url": state.settings.triton_url}
    try:
        metadata = await state.triton.server_metadata()
        triton.update(reachable=True, version=metadata.get("version"))
    except GatewayError as error:
        triton.update(reachable=False, error=error.message)
    gpus, gpu_note = await asyncio.to_thread(gpu_info)
    return {
        "gateway_version": __version__,
        "cpu": cpu_info(),
        "memory": memory_info(),
        "load_average": load_average(),
        "gpus": gpus,
        "gpu_note": gpu_note,
        "disk": disk_info(state.settings.output_dir),
        "triton": triton,
        "instance_plan": instance_plan(state.models.triton_repository),
    }


@router.get("/health", summary="Liveness of the gateway and whether Triton answers (cheap, no inference)")
async def health(request: Request) -> dict:
    try:
        triton_ready = await request.app.state.triton.server_ready(timeout_s=2.0)
        reachable = True
    except GatewayError:
        triton_ready, reachable = False, False
    return {"status": "ok", "version": __version__, "triton": {"reachable": reachable, "ready": triton_ready}}
