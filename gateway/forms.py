"""The portrait option form fields shared by ``POST /api/v1/process`` and ``POST /api/v1/jobs``.

One FastAPI dependency declares them (so both routes document the same fields) and resolves them
against the settings' defaults into a validated :class:`PortraitRequest` (400 ``invalid_option``).
"""

from __future__ import annotations

import inspect

from fastapi import Form, Request, params

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.service import FIDELITY_RANGE, JPEG_KB_RANGE, MARGIN_RANGE, SIDE_RANGE, resolve_request
from facecraft.gateway.triton import PortraitRequest
from facecraft.pipeline.presets import LAYOUT_NAMES, PRESET_NAMES


def _span(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}..{bounds[1]:g}"


async def portrait_options(
    request: Request,
    width: int | None = Form(
        None, description=f"output width, {_span(SIDE_RANGE)} (default FACECRAFT_DEFAULT_WIDTH)"
    ),
    height: int | None = Form(
        None, description=f"output height, {_span(SIDE_RANGE)} (default FACECRAFT_DEFAULT_HEIGHT)"
    ),
    background_r: int | None = Form(None, description="JPEG background red 0..255"),
    background_g: int | None = Form(None, description="JPEG background green 0..255"),
    background_b: int | None = Form(None, description="JPEG background blue 0..255"),
    face_margin: float | None = Form(
        None, description=f"fraction of the face box added on each side, {_span(MARGIN_RANGE)}"
    ),
    use_oval_mask: bool | None = Form(None, description="feathered oval mask"),
    enhance_face: bool | None = Form(None, description="CodeFormer restoration (false: portrait_basic)"),
    enhance_fidelity: float | None = Form(
        None, description=f"CodeFormer fidelity w, {_span(FIDELITY_RANGE)}"
    ),
    max_jpeg_kb: int | None = Form(None, description=f"JPEG size cap in KB, {_span(JPEG_KB_RANGE)}"),
    touch_up: bool = Form(False, description="exposure, white balance, mild sharpening"),
    preset: str | None = Form(
        None, description=f"ID-photo preset ({', '.join(PRESET_NAMES)}; GET /api/v1/presets, docs/presets.md)"
    ),
    layout: str | None = Form(
        None, description=f"print sheet at 300 dpi ({', '.join(LAYOUT_NAMES)}); needs preset"
    ),
) -> PortraitRequest:
    return resolve_request(
        request.app.state.settings,
        width=width,
        height=height,
        background=(background_r, background_g, background_b),
        face_margin=face_margin,
        use_oval_mask=use_oval_mask,
        enhance_face=enhance_face,
        enhance_fidelity=enhance_fidelity,
        max_jpeg_kb=max_jpeg_kb,
        touch_up=touch_up,
        preset=preset,
        layout=layout,
    )


def form_fields(endpoint) -> tuple[str, ...]:
    """The multipart fields a route function declares (read from its signature, so they are named
    once): its ``File``/``Form`` parameters, and :func:`portrait_options`'s when it depends on it."""
    names: list[str] = []
    for parameter in inspect.signature(endpoint).parameters.values():
        default = parameter.default
        if isinstance(default, params.Form):  # File is a Form
            names.append(default.alias or parameter.name)
        elif isinstance(default, params.Depends) and default.dependency is portrait_options:
            names.extend(form_fields(portrait_options))
    return tuple(names)


def list_fields(endpoint) -> tuple[str, ...]:
    """The fields of :func:`form_fields` a route takes several times (annotated ``list[...]``,
    e.g. the batch's ``files``); every other field takes one value."""
    return tuple(
        parameter.default.alias or parameter.name
        for parameter in inspect.signature(endpoint).parameters.values()
        if isinstance(parameter.default, params.Form) and str(parameter.annotation).startswith("list[")
    )


PORTRAIT_FIELDS: tuple[str, ...] = form_fields(portrait_options)


async def refuse_fields(request: Request, fields, reason: str) -> None:
    """400 ``invalid_option`` naming every field of ``fields`` the request's form carries (an
    option the route would otherwise accept and ignore); ``reason`` says why they do not apply."""
    form = await request.form()  # parsed already for the route's own fields: no second read
    sent = [name for name in dict.fromkeys(fields) if name in form]
    if sent:
        raise GatewayError(400, "invalid_option", f"{', '.join(sent)}: {reason}")


def refuse_query_parameters(request: Request, known) -> None:
    """400 ``invalid_option`` for any query parameter of a form route (``known``: its form fields,
    named in the message): it reads none, so an option in the URL would be ignored."""
    if request.query_params:
        names = ", ".join(dict.fromkeys(request.query_params.keys()))
        raise GatewayError(
            400, "invalid_option",
            f"{names}: {request.url.path} reads no query parameters; send options as form fields "
            f"({', '.join(known)})",
        )  # fmt: skip


def refuse_repeated_fields(form, repeatable=()) -> None:
    """400 ``invalid_option`` naming every field ``form`` carries more than once, but those of
    ``repeatable`` (e.g. the batch's ``files``): a second value would otherwise replace or shadow
    the first without a word."""
    repeated = [
        name for name in dict.fromkeys(form.keys()) if name not in repeatable and len(form.getlist(name)) > 1
    ]
    if repeated:
        raise GatewayError(
            400,
            "invalid_option",
            f"{', '.join(repeated)}: sent more than once; each field takes one value",
        )


async def refuse_unknown_fields(request: Request, known, repeatable=()) -> None:
    """400 ``invalid_option`` for any query parameter (:func:`refuse_query_parameters`), for form
    fields the route does not take (``known``: its fields) and for a field sent twice but those of
    ``repeatable`` (:func:`refuse_repeated_fields`)."""
    refuse_query_parameters(request, known)
    form = await request.form()
    names = list(dict.fromkeys(form.keys()))
    await refuse_fields(
        request,
        [name for name in names if name not in set(known)],
        f"not a field of {request.url.path} (it takes {', '.join(known)})",
    )
    refuse_repeated_fields(form, repeatable)
