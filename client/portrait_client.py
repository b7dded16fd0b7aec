"""``PortraitClient``: synchronous client for the ``portrait`` / ``portrait_basic`` ensembles.

One instance holds one tritonclient connection; use one instance per thread (tritonclient's sync
clients are not meant to be shared between threads). For concurrency use ``AsyncPortraitClient``.
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


class PortraitClient:
    """Process photos with the Triton portrait ensembles over gRPC or HTTP.

    ``url`` is ``host:port`` (Triton's gRPC port 8001 or HTTP port 8000 by default).
    ``use_shared_memory=True`` passes the image through Triton system shared memory (same host only).
    """

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
        module = protocol_module(protocol)
        try:
            if protocol == "http":
                self._client = module.InferenceServerClient(
                    self.url, connection_timeout=timeout_s, network_timeout=timeout_s
                )
            else:
                self._client = module.InferenceServerClient(self.url)
        except Exception as error:  # tritonclient raises plain exceptions for bad URLs
            raise ServerUnavailable(f"cannot create a {protocol} client for {self.url}: {error}") from error

    def __enter__(self) -> PortraitClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def is_ready(self, enhance: bool = True) -> bool:
        """True when the server is live and the matching ensemble is ready."""
        model = PortraitOptions(enhance=enhance).model_name
        try:
            return bool(self._client.is_server_live() and self._client.is_model_ready(model))
        except Exception:
            return False

    def process(
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
        """Turn one encoded photo (JPEG/PNG/WebP/BMP bytes) into a portrait.

        Options left as ``None`` are not sent (the ensemble's defaults apply). ``enhance=False``
        uses ``portrait_basic`` (no CodeFormer). ``preset`` (an ID-photo preset name, docs/presets.md)
        fixes size, DPI and head geometry and fills ``compliance``; ``layout`` (4x6, 10x15, a4) adds a
        ``print_sheet``. Raises a ``FacecraftError`` subclass on failure.
        """
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
        return self.process_with(image_bytes, options)

    def process_with(self, image_bytes: bytes, options: PortraitOptions) -> PortraitResult:
        """``process`` with a prepared ``PortraitOptions``."""
        specs = encode_inputs(image_bytes, options)
        if not self.use_shared_memory:
            return self._infer(options.model_name, build_inputs(self.protocol, specs))
        region = create_image_region(image_bytes)
        registered = False
        try:
            self._client.register_system_shared_memory(region.name, region.key, region.byte_size)
            registered = True
            inputs = build_inputs(self.protocol, specs, skip=("IMAGE",))
            inputs[0].set_shared_memory(region.name, region.byte_size)
            return self._infer(options.model_name, inputs)
        except FacecraftError:
            raise
        except Exception as error:
            raise error_from_exception(error) from error
        finally:
            if registered:
                # if the server is gone this fails; the local segment is still destroyed below
                with contextlib.suppress(Exception):
                    self._client.unregister_system_shared_memory(region.name)
            region.destroy()

    def _call(self, model_name: str, inputs: list, outputs: list):
        """One inference; tritonclient's exceptions become ``FacecraftError``."""
        try:
            if self.protocol == "grpc":
                response = self._client.infer(
                    model_name, inputs, outputs=outputs, client_timeout=self.timeout_s
                )
            else:
                response = self._client.infer(model_name, inputs, outputs=outputs)
        except Exception as error:
            raise error_from_exception(error) from error
        return response

    def _infer(self, model_name: str, inputs: list) -> PortraitResult:
        response = self._call(model_name, inputs, build_outputs(self.protocol))
        return result_from_outputs(response.as_numpy)

    # -- processors (facecraft.processors; docs/processors.md) ----------------------------------

    def run_processor(self, name: str, image_bytes: bytes, **options) -> ProcessorResult:
        """Run processor ``name``'s ensemble on one encoded image; ``options`` by registry name
        (unset ones get the registry default). Raises ``InvalidOption``, ``NoFaceDetected``,
        ``ModelUnavailable``... (``FacecraftError`` subclasses)."""
        model, specs, output_names, resolved = processor_request(name, image_bytes, options)
        outputs = build_outputs(self.protocol, output_names)
        response = self._call(model, build_inputs(self.protocol, specs), outputs)
        return result_from_processor_outputs(name, response.as_numpy, resolved)

    def identity(self, name: str, image_bytes: bytes, **options):
        """The identity embedding of processor ``name`` (face_swapper: the source face's ArcFace
        embedding, float32 [512], through ``face_swapper_source``), to send instead of the image
        with every frame of a video: ``run_processor(name, {"SOURCE_EMBEDDING": e, "TARGET": ...})``.
        Raises ``NoSourceFace``, ``ModelUnavailable``... (``FacecraftError`` subclasses)."""
        model, specs, output_names = identity_request(name, image_bytes, options)
        outputs = build_outputs(self.protocol, output_names)
        response = self._call(model, build_inputs(self.protocol, specs), outputs)
        return identity_from_outputs(name, response.as_numpy)

    def enhance_faces(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``face_enhancer``: every face restored by CodeFormer, the whole image back (PNG/JPEG)."""
        return self.run_processor("face_enhancer", image_bytes, **options)

    def remove_background(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``background_remover``: U²-Net alpha at full resolution (RGBA PNG, background, mask)."""
        return self.run_processor("background_remover", image_bytes, **options)

    def analyse_faces(self, image_bytes: bytes, **options) -> ProcessorResult:
        """``face_analyser``: every face's box, score, 68 landmarks and roll (``result.report``)."""
        return self.run_processor("face_analyser", image_bytes, **options)

    def swap_faces(self, source_bytes: bytes, target_bytes: bytes, **options) -> ProcessorResult:
        """``face_swapper``: the source's face (identity) onto the target's faces, the target image
        back (PNG/JPEG, the target's size). Raises ``NoSourceFace`` / ``NoFaceDetected`` (target),
        ``ModelUnavailable`` (swap models not exported)..."""
        images = {"SOURCE": source_bytes, "TARGET": target_bytes}
        return self.run_processor("face_swapper", images, **options)  # type: ignore[arg-type]
