"""``AsyncPortraitClient``: the asyncio twin of ``PortraitClient`` (``tritonclient.grpc.aio`` / ``.http.aio``).

One instance can serve many concurrent ``await client.process(...)`` calls.
"""

from __future__ import annotations

import contextlib

from facecraft.client.errors import FacecraftError, ServerUnavailable, error_from_exception
from facecraft.client.options import PortraitOptions, encode_inputs
from facecraft.client.processors import (
    ProcessorResult,
    identity_from_outputs,
    identity_request,
    processor_request,
    result_from_processor_outputs,
)
from facecraft.client.result import PortraitResult, result_from_outputs
from facecraft.client.shared_memory import create_image_region
from facecraft.client.transport import build_inputs, build_outputs, normalise_url, protocol_module


class AsyncPortraitClient:
    """Asyncio client for the portrait ensembles; same options and errors as ``PortraitClient``."""

    def __init__(
        self,
        url: str,
        protocol: str = "grpc",
        *,
        timeout_s: float = 300.0,
        use_shared_memory: bool = False,
    ):
        self.protocol = protocol
        self.url = normalise_url(url, protocol)
        self.timeout_s = timeout_s
        self.use_shared_memory = use_shared_memory
        module = protocol_module(protocol, asyncio=True)
        try:
            if protocol == "http":
                self._client = module.InferenceServerClient(self.url, conn_timeout=timeout_s)
            else:
                self._client = module.InferenceServerClient(self.url)
        except Exception as error:
            raise ServerUnavailable(f"cannot create a {protocol} client for {self.url}: {error}") from error

    async def __aenter__(self) -> AsyncPortraitClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, enhance: bool = True) -> bool:
        model = PortraitOptions(enhance=enhance).model_name
        try:
            return bool(await self._client.is_server_live() and await self._client.is_model_ready(model))
        except Exception:
            return False

    async def process(
        self,
        image_bytes: bytes,
        *,
        enhance: bool = True,
        width: int | None = None,
        height: int | None = None,
        background: tuple[int, int, int] | None = None,
        face_margin: float | None = None,
        oval_mask: bool | None = None,
        fidelity: float | None = None,
        max_jpeg_kb: int | None = None,
        touch_up: bool | None = None,
        preset: str | None = None,
        layout: str | None = None,
    ) -> PortraitResult:
        """See ``PortraitClient.process``."""
        options = PortraitOptions(
            enhance=enhance,
            width=width,
            height=height,
            background=background,
            face_margin=face_margin,
            oval_mask=oval_mask,
            fidelity=fidelity,
            max_jpeg_kb=max_jpeg_kb,
            touch_up=touch_up,
            preset=preset,
            layout=layout,
        )
        return await self.process_with(image_bytes, options)

    async def process_with(self, image_bytes: bytes, options: PortraitOptions) -> PortraitResult:
        specs = encode_inputs(image_bytes, options)
        if not self.use_shared_memory:
            return await self._infer(options.model_name, build_inputs(self.protocol, specs))
        region = create_image_region(image_bytes)
        registered = False
        try:
            await self._client.register_system_shared_memory(region.name, region.key, region.byte_size)
            registered = True
            inputs = build_inputs(self.protocol, specs, skip=("IMAGE",))
            inputs[0].set_shared_memory(region.name, region.byte_size)
            return await self._infer(options.model_name, inputs)
        except FacecraftError:
            raise
        except Exception as error:
            raise error_from_exception(error) from error
        finally:
            if registered:
                with contextlib.suppress(Exception):
                    await self._client.unregister_system_shared_memory(region.name)
            region.destroy()

    async def _call(self, model_name: str, inputs: list, outputs: list):
        """One inference; tritonclient's exceptions become ``FacecraftError``."""
        try:
            if self.protocol == "grpc":
                response = await self._client.infer(
                    model_name, inputs, outputs=outputs, client_timeout=self.timeout_s
                )
            else:
                # conn_timeout (set in __init__) bounds the whole HTTP request in tritonclient.http.aio
                response = await self._client.infer(model_name, inputs, outputs=outputs)
        except Exception as error:
            raise error_from_exception(error) from error
        return response

    async def _infer(self, model_name: str, inputs: list) -> PortraitResult:
        response = await self._call(model_name, inputs, build_outputs(self.protocol))
        return result_from_outputs(response.as_numpy)

    # -- processors (facecraft.processors; docs/processors.md) ----------------------------------

    async def run_processor(self, name: str, image_bytes: bytes, **options) -> ProcessorResult:
        """Run processor ``name``'s ensemble on one encoded image; ``options`` by registry name
        (unset ones get the registry default). Raises ``InvalidOption``, ``NoFaceDetected``,
        ``ModelUnavailable``... (``FacecraftError`` subclasses)."""
        model, specs, output_names, resolved = processor_request(name, image_bytes, options)
        outputs = build_outputs(self.protocol, output_names)
        response = await self._call(model, build_inputs(self.protocol, specs), outputs)
        return result_from_processor_outputs(name, response.as_numpy, resolved)

    async def identity(self, name: str, image_bytes: bytes, **options):
        """The identity embedding of processor ``name`` (face_swapper: the source face's ArcFace
        embedding, float32 [512], through ``face_swapper_source``), to send instead of the image
        with every frame of a video: ``run_processor(name, {"SOURCE_EMBEDDING": e, "TARGET": ...})``.
        Raises ``NoSourceFace``, ``ModelUnavailable``... (``FacecraftError`` subclasses)."""
        model, specs, output_names = identity_request(name, image_bytes, options)
        outputs = build_outputs(self.protocol, output_names)
        response = await self._call(model, build_inputs(self.protocol, specs), outputs)
        return identity_from_outputs(name, response.as_numpy)

    async def enhance_faces(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``face_enhancer``: every face restored by CodeFormer, the whole image back (PNG/JPEG)."""
        return await self.run_processor("face_enhancer", image_bytes, **options)

    async def remove_background(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``background_remover``: U²-Net alpha at full resolution (RGBA PNG, background, mask)."""
        return await self.run_processor("background_remover", image_bytes, **options)

    async def analyse_faces(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``face_analyser``: every face's box, score, 68 landmarks and roll (``result.report``)."""
        return await self.run_processor("face_analyser", image_bytes, **options)

    async def swap_faces(self, source_bytes: bytes, target_bytes: bytes, **options) -> ProcessorResult:
        """``face_swapper``: the source's face (identity) onto the target's faces, the target image
        back (PNG/JPEG, the target's size). Raises ``NoSourceFace`` / ``NoFaceDetected`` (target),
        ``ModelUnavailable`` (swap models not exported)..."""
        images = {"SOURCE": source_bytes, "TARGET": target_bytes}
        return await self.run_processor("face_swapper", images, **options)  # type: ignore[arg-type]
