"""``GET /api/v1/processors[/{name}]`` and ``POST /api/v1/processors/{name}``: validate, delegate.

One route per registry entry (``facecraft.processors``), its multipart form (``file`` + the
processor's options) documented in OpenAPI from the registry; any other name gets 404 with the
valid ones. The work is ``facecraft.gateway.processors_service.run_processor``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from facecraft import processors as registry
from facecraft.gateway.errors import GatewayError, error_responses
from facecraft.gateway.forms import refuse_query_parameters, refuse_repeated_fields
from facecraft.gateway.health import UNTRAINED_WARNING
from facecraft.gateway.processors_service import (
    check_enabled,
    resolve_options,
    run_processor,
    unknown_processor,
)
from facecraft.gateway.routes_process import INFERENCE_ERRORS, UPLOAD_ERRORS
from facecraft.gateway.schemas import ProcessorList
from facecraft.gateway.security import read_upload_capped, require_api_key
from facecraft.pipeline.decode import SUPPORTED_TYPES

router = APIRouter(prefix="/api/v1", tags=["processors"], dependencies=[Depends(require_api_key)])

PROCESSOR_ERRORS = (
    *UPLOAD_ERRORS, *INFERENCE_ERRORS, "no_face_detected", "model_unavailable", "not_found", "processor_disabled",
    "no_source_face",
)  # fmt: skip
_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "choice": "string", "color": "string"}


def option_schema(option: registry.Option) -> dict:
    """The OpenAPI schema of one option as a form field."""
    schema: dict = {"type": _JSON_TYPES[option.kind], "description": f"{option.doc} ({option.range_text})"}
    if option.default is not None:
        default = option.default
        schema["default"] = "#{:02x}{:02x}{:02x}".format(*default) if option.kind == "color" else default
    if option.kind in ("int", "float"):
        schema.update(minimum=option.low, maximum=option.high)
    if option.kind == "choice":
        schema["enum"] = list(option.choices)
    return schema


def request_body(processor: registry.Processor) -> dict:
    """``openapi_extra`` of a processor route: its multipart form from the registry."""
    fields = upload_fields(processor)
    properties = {
        field: {"type": "string", "format": "binary", "description": f"{SUPPORTED_TYPES} image"}
        for field in fields
    }
    properties.update({option.name: option_schema(option) for option in processor.options})
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": list(fields), "properties": properties}
                }
            },
        }
    }


def upload_fields(processor: registry.Processor) -> dict[str, str]:
    """Multipart file field → ensemble image tensor: ``file`` → ``IMAGE``; a processor with several
    images (face_swapper) has one field per tensor, lower-case (``source``, ``target``)."""
    if processor.image_inputs == ("IMAGE",):
        return {"file": "IMAGE"}
    return {tensor.lower(): tensor for tensor in processor.image_inputs}


def success_content(processor: registry.Processor) -> dict:
    if processor.output_kind == "json":
        return {"application/json": {}}
    return {("image/png" if fmt == "png" else "image/jpeg"): {} for fmt in processor.output_formats}


async def read_form(request: Request, name: str) -> tuple[bytes | dict[str, bytes], dict[str, object]]:
    """(upload bytes — for a processor with several images, image tensor → bytes —, resolved
    options) from the multipart form; 422 ``invalid_request`` without a ``file`` (face_swapper:
    ``source`` and ``target``), 400 ``invalid_option`` for an unknown option or a bad value."""
    fields = upload_fields(registry.get(name))
    refuse_query_parameters(request, [*fields, *(option.name for option in registry.get(name).options)])
    try:
        form = await request.form()
    except Exception as error:  # noqa: BLE001 - a body that is not a multipart form
        raise GatewayError(
            422, "invalid_request", f"expected a multipart form with a file: {error}"
        ) from None
    refuse_repeated_fields(form)
    uploads = {}
    for field, tensor in fields.items():
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise GatewayError(
                422, "invalid_request", f"the multipart field `{field}` (an image) is required"
            )
        uploads[tensor] = upload
    values: dict[str, object] = {}
    for key, value in form.multi_items():
        if key in fields:
            continue
        if not isinstance(value, str):
            takes = ", ".join(f"`{field}`" for field in fields)
            raise GatewayError(
                400, "invalid_option", f"{name}: `{key}` is a file, but {name} takes its images as {takes}"
                if key == "file" else f"{name}: option {key} must be a plain form value"
            )  # fmt: skip
        values[key] = value
    options = resolve_options(name, values)
    cap = request.app.state.settings.max_upload_bytes
    images = {tensor: await read_upload_capped(upload, cap) for tensor, upload in uploads.items()}
    return (images["IMAGE"] if list(images) == ["IMAGE"] else images), options


def processor_route(name: str):
    async def handler(request: Request) -> Response:
        check_enabled((name,), request.app.state.settings.disabled_processors)
        image, options = await read_form(request, name)
        result = await run_processor(request.app.state.service, name, image, options)
        weights = await request.app.state.weights.get()
        if result.report is not None:
            body = {"success": True, "processor": name, **result.report_with_image(), "weights": weights}
            if weights == "untrained":
                body["warning"] = UNTRAINED_WARNING
            return JSONResponse(body)
        headers = {"X-Facecraft-Weights": weights}
        if result.face_count is not None:
            headers["X-Face-Count"] = str(result.face_count)
        if result.output_size is not None:
            headers["X-Output-Size"] = f"{result.output_size[0]}x{result.output_size[1]}"
        return Response(result.data, media_type=result.media_type, headers=headers)

    handler.__name__ = f"process_{name}"
    return handler


@router.get(
    "/processors",
    response_model=ProcessorList,
    summary="Every processor: options (type, range, default), output, ensembles, models",
    responses=error_responses("unauthorized"),
)
async def list_processors(request: Request) -> dict:
    disabled = request.app.state.settings.disabled_processors
    return {"processors": [p.as_dict() for p in registry.PROCESSORS.values() if p.name not in disabled]}


for _processor in registry.PROCESSORS.values():
    router.add_api_route(
        f"/processors/{_processor.name}",
        processor_route(_processor.name),
        methods=["POST"],
        response_class=Response,
        summary=f"{_processor.name}: {_processor.description}",
        description=f"Multipart {' + '.join(f'`{f}`' for f in upload_fields(_processor))} + the options "
        "below (form fields). "
        + (f"Note: {_processor.notes}. " if _processor.notes else "")
        + "No face (face processors) → 400 `no_face_detected`.",
        openapi_extra=request_body(_processor),
        responses={
            200: {
                "content": success_content(_processor),
                "description": f"the {_processor.output_kind} result",
            },
            **error_responses(*PROCESSOR_ERRORS),
        },
    )


@router.get(
    "/processors/{name}",
    summary="One processor: its options (type, range, default), output, ensembles, models",
    responses=error_responses("unauthorized", "not_found", "processor_disabled"),
)
async def describe_processor(request: Request, name: str) -> dict:
    """The entry of ``GET /api/v1/processors`` for ``name``; 404 listing the valid names for an
    unknown one, 403 ``processor_disabled`` for one the operator switched off."""
    if name not in registry.PROCESSORS:
        raise unknown_processor(name)
    check_enabled([name], request.app.state.settings.disabled_processors)
    return registry.get(name).as_dict()


@router.post(
    "/processors/{name}",
    summary="Any other name: 404 listing the valid processors",
    responses=error_responses("not_found", "unauthorized"),
    include_in_schema=False,
)
async def unknown(name: str) -> Response:
    raise unknown_processor(name)
