"""The client against the real embedded Triton (tiny untrained models): HTTP/gRPC, sync/async,
system shared memory, typed errors."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from facecraft.client import (
    AsyncPortraitClient,
    InvalidImage,
    InvalidOption,
    NoFaceDetected,
    PortraitClient,
    PortraitResult,
    ServerUnavailable,
)
from facecraft.runtime.server import free_port

pytestmark = pytest.mark.integration


def url_for(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def assert_portrait(result: PortraitResult, width: int, height: int) -> None:
    assert result.output_size == (width, height)
    png = Image.open(io.BytesIO(result.png))
    assert png.mode == "RGBA" and png.size == (width, height)
    jpeg = Image.open(io.BytesIO(result.jpeg))
    assert jpeg.format == "JPEG" and jpeg.size == (width, height)
    assert result.face_count >= 1
    x, y, w, h = result.face_box
    assert w > 0 and h > 0 and x >= 0 and y >= 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("enhance", [True, False])
def test_sync_process(triton_server, astronaut_jpeg, protocol, enhance):
    with PortraitClient(url_for(triton_server, protocol), protocol) as client:
        assert client.is_ready(enhance)
        result = client.process(astronaut_jpeg, enhance=enhance, width=256, height=320, oval_mask=False)
    assert_portrait(result, 256, 320)
    x, y, w, h = result.face_box
    assert x + w <= 512 and y + h <= 512  # in the 512x512 astronaut


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_process_concurrently(triton_server, astronaut_jpeg, astronaut_png, protocol):
    async def run():
        async with AsyncPortraitClient(url_for(triton_server, protocol), protocol) as client:
            assert await client.is_ready()
            return await asyncio.gather(
                client.process(astronaut_jpeg, width=128, height=128),
                client.process(astronaut_png, enhance=False, width=160, height=128, background=(0, 0, 255)),
            )

    first, second = asyncio.run(run())
    assert_portrait(first, 128, 128)
    assert_portrait(second, 160, 128)


def test_omitted_options_use_ensemble_defaults(triton_server, astronaut_jpeg):
    with PortraitClient(triton_server.grpc_url) as client:
        result = client.process(astronaut_jpeg, enhance=False)
    assert result.output_size == (648, 648)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shared_memory_input(triton_server, astronaut_jpeg, protocol):
    def ours(regions) -> list[str]:
        names = (
            [r["name"] for r in regions]
            if isinstance(regions, list)
            else [r.name for r in regions.regions.values()]
        )
        return [n for n in names if n.startswith("facecraft_image_")]

    with PortraitClient(url_for(triton_server, protocol), protocol, use_shared_memory=True) as client:
        result = client.process(astronaut_jpeg, enhance=False, width=200, height=200)
        assert_portrait(result, 200, 200)
        # Every region the client registered is unregistered again. Triton may list one until
        # the request that read it is released, just after its answer (seen once under load).
        deadline = time.monotonic() + 30
        while left := ours(client._client.get_system_shared_memory_status()):
            assert time.monotonic() < deadline, left
            time.sleep(0.1)


def test_async_shared_memory_input(triton_server, astronaut_jpeg):
    async def run():
        async with AsyncPortraitClient(triton_server.grpc_url, use_shared_memory=True) as client:
            return await client.process(astronaut_jpeg, enhance=False, width=96, height=96)

    assert_portrait(asyncio.run(run()), 96, 96)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_no_face_is_typed(triton_server, no_face_jpeg, protocol):
    with (
        PortraitClient(url_for(triton_server, protocol), protocol) as client,
        pytest.raises(NoFaceDetected) as raised,
    ):
        client.process(no_face_jpeg, enhance=False)
    assert raised.value.code == "no_face_detected"
    assert raised.value.step == "detect"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_invalid_image_is_typed(triton_server, protocol):
    with (
        PortraitClient(url_for(triton_server, protocol), protocol) as client,
        pytest.raises(InvalidImage) as raised,
    ):
        client.process(b"this is not an image", enhance=False)
    assert raised.value.step == "decode"


def test_async_invalid_image_is_typed(triton_server):
    async def run():
        async with AsyncPortraitClient(triton_server.http_url, "http") as client:
            await client.process(np.zeros(10, np.uint8).tobytes())

    with pytest.raises(InvalidImage):
        asyncio.run(run())


def test_invalid_option_is_rejected_before_sending(triton_server, astronaut_jpeg):
    with PortraitClient(triton_server.grpc_url) as client, pytest.raises(InvalidOption):
        client.process(astronaut_jpeg, width=10)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_nothing_listening_is_server_unavailable(astronaut_jpeg, protocol):
    with (
        PortraitClient(f"127.0.0.1:{free_port()}", protocol, timeout_s=5) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.process(astronaut_jpeg)
