"""Python client for the Facecraft portrait ensembles on Triton (HTTP/gRPC, sync and asyncio).

    from facecraft.client import PortraitClient
    with PortraitClient("127.0.0.1:8001") as client:
        result = client.process(open("me.jpg", "rb").read(), width=600, height=600)
        open("me.png", "wb").write(result.png)

The ``facecraft process`` command lives in ``facecraft.client.cli``; the benchmark harness is
``facecraft.bench``.
"""

from facecraft.client.async_portrait_client import AsyncPortraitClient
from facecraft.client.errors import (
    FacecraftError,
    ImageTooLarge,
    InternalServerError,
    InvalidImage,
    InvalidOption,
    NoFaceDetected,
    ServerUnavailable,
    parse_error_message,
)
from facecraft.client.options import BASIC_MODEL, ENHANCED_MODEL, PortraitOptions
from facecraft.client.portrait_client import PortraitClient
from facecraft.client.result import PortraitResult

__all__ = [
    "BASIC_MODEL",
    "ENHANCED_MODEL",
    "AsyncPortraitClient",
    "FacecraftError",
    "ImageTooLarge",
    "InternalServerError",
    "InvalidImage",
    "InvalidOption",
    "NoFaceDetected",
    "PortraitClient",
    "PortraitOptions",
    "PortraitResult",
    "ServerUnavailable",
    "parse_error_message",
]
