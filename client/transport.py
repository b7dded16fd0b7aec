"""Protocol plumbing shared by the sync and asyncio clients: URLs, tritonclient modules, request tensors."""

from __future__ import annotations

import importlib
from types import ModuleType

from facecraft.client.options import OUTPUT_NAMES, TensorSpec

PROTOCOLS = ("grpc", "http")


def normalise_url(url: str, protocol: str) -> str:
    """``host:port`` as tritonclient expects it (scheme prefixes such as ``http://`` are dropped)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for prefix in ("http://", "grpc://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    if url.startswith("https://"):
        raise ValueError("https is not supported by this client; use a plain host:port")
    return url.rstrip("/")


def protocol_module(protocol: str, *, asyncio: bool = False) -> ModuleType:
    """``tritonclient.grpc`` / ``tritonclient.http`` (or their ``.aio`` variants)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return importlib.import_module(f"tritonclient.{protocol}" + (".aio" if asyncio else ""))


def base_module(protocol: str) -> ModuleType:
    """The sync module, which also holds ``InferInput``/``InferRequestedOutput`` for the aio clients."""
    return protocol_module(protocol, asyncio=False)


def build_inputs(protocol: str, specs: list[TensorSpec], *, skip: tuple[str, ...] = ()) -> list:
    """``InferInput`` objects with data set for every spec whose name is not in ``skip``."""
    module = base_module(protocol)
    inputs = []
    for spec in specs:
        infer_input = module.InferInput(spec.name, list(spec.value.shape), spec.datatype)
        if spec.name not in skip:
            if protocol == "http":
                infer_input.set_data_from_numpy(spec.value, binary_data=True)
            else:
                infer_input.set_data_from_numpy(spec.value)
        inputs.append(infer_input)
    return inputs


def build_outputs(protocol: str, names: tuple[str, ...] = OUTPUT_NAMES) -> list:
    """Requested outputs (the portrait's by default; a processor's from the registry)."""
    module = base_module(protocol)
    if protocol == "http":
        return [module.InferRequestedOutput(name, binary_data=True) for name in names]
    return [module.InferRequestedOutput(name) for name in names]
