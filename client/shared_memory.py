"""Triton *system* shared memory for the ``IMAGE`` input (client and server on the same host).

The encoded image is serialised as a Triton BYTES tensor (4-byte little-endian length + bytes)
into a POSIX shared-memory segment that is registered with the server; the request then carries
only the region name. Regions are per request and always unregistered and destroyed afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np


@dataclass
class ImageRegion:
    """A created (not yet registered) shared-memory region holding one serialised IMAGE tensor."""

    name: str
    key: str
    byte_size: int
    handle: object

    def destroy(self) -> None:
        import tritonclient.utils.shared_memory as shm

        shm.destroy_shared_memory_region(self.handle)


def serialized_image(image_bytes: bytes) -> bytes:
    """The wire form of a BYTES ``[1,1]`` tensor holding ``image_bytes``."""
    from tritonclient.utils import serialize_byte_tensor

    serialized = serialize_byte_tensor(np.array([[bytes(image_bytes)]], dtype=np.object_))
    return serialized.item() if serialized.size else b""


def create_image_region(image_bytes: bytes) -> ImageRegion:
    """Create a shared-memory segment named uniquely and copy the serialised image into it."""
    import tritonclient.utils.shared_memory as shm

    payload = serialized_image(image_bytes)
    suffix = uuid.uuid4().hex[:16]
    name, key = f"facecraft_image_{suffix}", f"/facecraft_image_{suffix}"
    handle = shm.create_shared_memory_region(name, key, len(payload))
    try:
        shm.set_shared_memory_region(handle, [np.frombuffer(payload, dtype=np.uint8)])
    except BaseException:
        shm.destroy_shared_memory_region(handle)
        raise
    return ImageRegion(name=name, key=key, byte_size=len(payload), handle=handle)
