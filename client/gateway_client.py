"""``AsyncGatewayClient``: the same ``process`` call over the gateway's REST API (``POST /api/v1/process``).

Used by ``facecraft process --via-gateway URL`` and by the benchmark. Options map onto the REST
form fields of DESIGN §7; omitted options are not sent, so the gateway's settings apply.
"""

from __future__ import annotations

import base64

import httpx

from facecraft.client.errors import ERROR_CLASSES, FacecraftError, ServerUnavailable
from facecraft.client.options import PortraitOptions
from facecraft.client.processors import ProcessorResult, resolve_processor_options
from facecraft.client.result import PortraitResult


def gateway_form_fields(options: PortraitOptions, *, return_base64: bool = True) -> dict[str, str]:
    """REST form fields for ``options`` (only the options that are set, plus enhance/return_base64)."""
    form = {"enhance_face": _flag(options.enhance), "return_base64": _flag(return_base64)}
    if options.width is not None:
        form["width"] = str(options.width)
    if options.height is not None:
        form["height"] = str(options.height)
    if options.background is not None:
        form["background_r"], form["background_g"], form["background_b"] = (
            str(c) for c in options.background
        )
    if options.face_margin is not None:
        form["face_margin"] = repr(float(options.face_margin))
    if options.oval_mask is not None:
        form["use_oval_mask"] = _flag(options.oval_mask)
    if options.fidelity is not None:
        form["enhance_fidelity"] = repr(float(options.fidelity))
    if options.max_jpeg_kb is not None:
        form["max_jpeg_kb"] = str(options.max_jpeg_kb)
    if options.touch_up is not None:
        form["touch_up"] = _flag(options.touch_up)
    if options.preset is not None:
        form["preset"] = options.preset
    if options.layout is not None:
        form["layout"] = options.layout
    return form


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _upload_files(images, filename: str) -> dict:
    """Multipart files of a processor request: ``file``, or for a processor with several images
    (face_swapper: tensor name → bytes) one lower-case field each (``source``, ``target``)."""
    if isinstance(images, dict):
        return {tensor.lower(): (f"{tensor.lower()}-{filename}", data, "application/octet-stream")
                for tensor, data in images.items()}  # fmt: skip
    return {"file": (filename, images, "application/octet-stream")}


def error_from_gateway(status_code: int, body: object) -> FacecraftError:
    """Map a gateway error response (``{"error": code, "error_message": ...}`` or FastAPI's ``detail``)."""
    if isinstance(body, dict):
        code = body.get("error")
        message = body.get("error_message") or body.get("detail") or str(body)
        if isinstance(code, str) and code in ERROR_CLASSES:
            return ERROR_CLASSES[code](f"{code}: gateway: {message}", step="gateway", detail=str(message))
        if isinstance(body.get("detail"), dict):
            return error_from_gateway(status_code, body["detail"])
        text = str(message)
    else:
        text = str(body)
    if status_code in (502, 503, 504):
        return ServerUnavailable(f"gateway answered {status_code}: {text}")
    return FacecraftError(f"gateway answered {status_code}: {text}")


class AsyncGatewayClient:
    """Async REST client for the gateway at ``base_url`` (e.g. ``http://127.0.0.1:8080``)."""

    def __init__(self, base_url: str, *, timeout_s: float = 300.0, api_key: str | None = None):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=headers)

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def process_with(
        self, image_bytes: bytes, options: PortraitOptions, filename: str = "image"
    ) -> PortraitResult:
        """POST the photo with ``return_base64=true``; fall back to the download URLs when no base64 comes back."""
        try:
            response = await self._http.post(
                "/api/v1/process",
                files=_upload_files(image_bytes, filename),
                data=gateway_form_fields(options),
            )
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"gateway {self.base_url} unreachable: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("success"):
            raise error_from_gateway(response.status_code, body)
        png = await self._payload(body, "png")
        jpeg = await self._payload(body, "jpg")
        sheet = await self._payload(body, "layout") if body.get("layout_url") else None
        result = body.get("result") or {}
        position = result.get("face_position") or {}
        size = result.get("output_size") or [0, 0]
        if isinstance(size, dict):
            size = [size.get("width", 0), size.get("height", 0)]
        return PortraitResult(
            png=png,
            jpeg=jpeg,
            face_box=tuple(int(position.get(k, 0)) for k in ("x", "y", "width", "height")),
            face_count=int(result.get("face_count", 1)),
            jpeg_cap_met=result.get("jpeg_cap_met") is not False,
            output_size=(int(size[0]), int(size[1])),
            compliance=result.get("compliance"),
            print_sheet=sheet,
        )

    async def _payload(self, body: dict, kind: str) -> bytes:
        encoded = body.get(f"{kind}_base64")
        if encoded:
            return base64.b64decode(encoded)
        url = body.get(f"{kind}_url")
        if not url:
            raise FacecraftError(f"gateway response has neither {kind}_base64 nor {kind}_url")
        response = await self._http.get(url)
        if response.status_code != 200:
            raise error_from_gateway(response.status_code, response.text)
        return response.content

    async def run_processor(
        self, name: str, image_bytes: bytes, filename: str = "image", **options
    ) -> ProcessorResult:
        """``POST /api/v1/processors/{name}`` with ``options`` as form fields (validated here by the
        registry first); the image result, or ``report`` for ``face_analyser``."""
        resolved = resolve_processor_options(name, options)
        fields = {key: _form_value(value) for key, value in options.items() if value is not None}
        try:
            response = await self._http.post(
                f"/api/v1/processors/{name}", files=_upload_files(image_bytes, filename), data=fields
            )
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"gateway {self.base_url} unreachable: {error}") from error
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise error_from_gateway(response.status_code, body)
        count = response.headers.get("x-face-count")
        if response.headers.get("content-type", "").startswith("application/json"):
            report = response.json()
            annotated = report.pop("annotated_png_base64", None)
            return ProcessorResult(
                name,
                media_type="application/json",
                face_count=report.get("face_count"),
                report={"faces": report.get("faces", []), "face_count": report.get("face_count")},
                annotated=base64.b64decode(annotated) if annotated else b"",
                options=resolved,
            )
        size = response.headers.get("x-output-size")
        return ProcessorResult(
            name,
            data=response.content,
            media_type=response.headers.get("content-type", "image/png"),
            output_size=tuple(int(v) for v in size.split("x")) if size else None,
            face_count=int(count) if count else None,
            options=resolved,
        )

    async def submit_job(
        self,
        data: bytes,
        processors: str | list[str] | tuple[str, ...],
        *,
        source: bytes | None = None,
        processor_options: dict[str, dict[str, object]] | None = None,
        video_format: str | None = None,
        filename: str = "input",
    ) -> dict:
        """``POST /api/v1/jobs``: ``data`` (a photo or a video) through the ``processors`` chain as
        an async job; ``source``: face_swapper's identity photo (required when the chain has
        face_swapper). Returns the 202 body (``job_id``, ``status_url``, ``result_url``); raises the
        gateway's error (``InvalidOption``, ``ServerUnavailable``...) otherwise."""
        import json

        chain = processors if isinstance(processors, str) else ",".join(processors)
        form = {"processors": chain}
        if processor_options:
            form["processor_options"] = json.dumps(processor_options)
        if video_format is not None:
            form["video_format"] = video_format
        files = {"file": (filename, data, "application/octet-stream")}
        if source is not None:
            files["source"] = (f"source-{filename}", source, "application/octet-stream")
        response = await self._request("POST", "/api/v1/jobs", files=files, data=form)
        if response.status_code != 202:
            raise error_from_gateway(response.status_code, _body(response))
        return response.json()

    async def job_status(self, job_id: str) -> dict:
        """``GET /api/v1/jobs/{id}``: the job's status (``status``, ``progress`` of a video job...)."""
        response = await self._request("GET", f"/api/v1/jobs/{job_id}")
        if response.status_code != 200:
            raise error_from_gateway(response.status_code, _body(response))
        return response.json()

    async def wait_for_job(self, job_id: str, *, poll_s: float = 0.5, on_status=None) -> dict:
        """Poll :meth:`job_status` until the job is ``completed`` (returned); ``on_status(body)``
        after each poll (e.g. a progress bar from ``progress``). A failed or cancelled job raises
        its error (``NoSourceFace``, ``NoFaceDetected``...)."""
        import asyncio

        while True:
            body = await self.job_status(job_id)
            if on_status is not None:
                on_status(body)
            if body["status"] == "completed":
                return body
            if body["status"] in ("failed", "cancelled"):
                raise error_from_gateway(
                    409, {"error": body.get("error"), "error_message": body.get("error_message")}
                )
            await asyncio.sleep(poll_s)

    async def job_result(self, job_id: str) -> bytes:
        """``GET /api/v1/jobs/{id}/result``: the completed job's output file (image, JSON, video)."""
        response = await self._request("GET", f"/api/v1/jobs/{job_id}/result")
        if response.status_code != 200:
            raise error_from_gateway(response.status_code, _body(response))
        return response.content

    async def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"gateway {self.base_url} unreachable: {error}") from error


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


def _form_value(value: object) -> str:
    """A registry option value as a form field (booleans lower-case, colours r,g,b)."""
    if isinstance(value, bool):
        return _flag(value)
    if isinstance(value, (tuple, list)):
        return ",".join(str(int(v)) for v in value)
    return str(value)
