"""Readiness (a real tiny inference through both ensembles) and the ``/status`` report.

Triton's own ready flag can stay green after a Python-backend stub died, so readiness is proven by
running :data:`PROBE_FACE_JPEG` through ``portrait`` and ``portrait_basic``. The verdict is cached
for ``FACECRAFT_READY_CACHE_S`` seconds and only one probe runs at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.probe_image import PROBE_FACE_JPEG
from facecraft.gateway.triton import ENSEMBLE_BASIC, ENSEMBLE_ENHANCED, PortraitRequest, TritonGateway

PROBE_REQUEST = PortraitRequest(
    width=64,
    height=64,
    background=(240, 240, 240),
    face_margin=0.3,
    oval_mask=False,
    enhance=True,
    fidelity=0.7,
    max_jpeg_kb=64,
)
PROBE_TIMEOUT_S = 60.0


@dataclass
class Readiness:
    ready: bool
    checked_at: float
    checks: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


class ReadinessProbe:
    """Runs (and caches) the end-to-end readiness check."""

    def __init__(self, triton: TritonGateway, cache_s: float):
        self.triton = triton
        self.cache_s = cache_s
        self._last: Readiness | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Readiness:
        async with self._lock:
            if self._last is not None and time.time() - self._last.checked_at < self.cache_s:
                return self._last
            self._last = await self._probe()
            return self._last

    async def _probe(self) -> Readiness:
        checks: dict[str, str] = {}
        try:
            metadata = await self.triton.server_metadata()
            checks["server"] = f"ok ({metadata.get('version', '?')})"
        except GatewayError as error:
            return Readiness(False, time.time(), {"server": error.message}, f"{error.error}: {error.message}")

        async def one(model: str, enhance: bool) -> tuple[str, str | None]:
            request = PortraitRequest(**{**PROBE_REQUEST.__dict__, "enhance": enhance})
            try:
                output = await asyncio.wait_for(
                    self.triton.infer_portrait(PROBE_FACE_JPEG, request), PROBE_TIMEOUT_S
                )
            except GatewayError as error:
                return model, f"{error.error}: {error.message}"
            except asyncio.TimeoutError:
                return model, "probe inference timed out"
            if not output.png or not output.jpeg or output.face_count < 1:
                return model, "probe inference returned empty outputs"
            return model, None

        results = await asyncio.gather(one(ENSEMBLE_ENHANCED, True), one(ENSEMBLE_BASIC, False))
        failures = []
        for model, problem in results:
            checks[model] = "ok (probe inference)" if problem is None else problem
            if problem is not None:
                failures.append(f"{model}: {problem}")
        return Readiness(not failures, time.time(), checks, "; ".join(failures) or None)


def read_export_info(repository: Path | None, model: str) -> dict | None:
    """``<repo>/<model>/<version>/export.json`` (highest version), or None when absent/unreadable."""
    if repository is None:
        return None
    folder = Path(repository) / model
    if not folder.is_dir():
        return None
    versions = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    for version in reversed(versions):
        path = version / "export.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
    return None


def weights_from_config(config: dict) -> str | None:
    """``trained``/``untrained`` from config ``parameters`` (keys ``trained`` or ``weights``), if any."""
    parameters = config.get("parameters") or {}
    for key in ("trained", "weights_trained", "weights"):
        entry = parameters.get(key)
        if not entry:
            continue
        value = str(entry.get("string_value", entry) if isinstance(entry, dict) else entry).lower()
        if value in ("true", "1", "trained", "official"):
            return "trained"
        if value in ("false", "0", "untrained", "random", "seeded-random"):
            return "untrained"
    return None


def instance_kinds(config: dict) -> list[str]:
    """Instance group kinds of a model config (``KIND_CPU``, ``KIND_GPU``, ...)."""
    return sorted({str(group.get("kind", "KIND_AUTO")) for group in config.get("instance_group") or []})


async def describe_models(triton: TritonGateway, repository: Path | None) -> list[dict]:
    """Per-model state, readiness, instance kinds and weights (trained/untrained/unknown)."""
    models = []
    for entry in await triton.repository_index():
        name = entry.get("name", "")
        info: dict = {"name": name, "version": entry.get("version"), "state": entry.get("state")}
        if entry.get("reason"):
            info["reason"] = entry["reason"]
        try:
            info["ready"] = await triton.model_ready(name)
            config = await triton.model_config(name)
        except GatewayError as error:
            info["ready"] = False
            info["error"] = error.message
            models.append(info)
            continue
        info["platform"] = config.get("platform") or config.get("backend")
        info["instance_kinds"] = instance_kinds(config)
        export = read_export_info(repository, name)
        if export is not None:
            trained = export.get("trained")
            info["weights"] = "trained" if trained else "untrained"
            info["weights_source"] = export.get("weights_source") or export.get("weights")
            info["preset"] = export.get("preset")
        else:
            from_config = weights_from_config(config)
            if from_config is not None:
                info["weights"] = from_config
            elif info["platform"] in ("onnxruntime", "onnxruntime_onnx"):
                info["weights"] = "unknown"
        models.append(info)
    return models


def device_of(models: list[dict]) -> str:
    kinds = {kind for model in models for kind in model.get("instance_kinds", [])}
    return "gpu" if "KIND_GPU" in kinds else "cpu" if kinds else "unknown"


UNTRAINED_WARNING = (
    "model weights are UNTRAINED (seeded random): the output is not a real restoration/segmentation"
)


class WeightsLabel:
    """Caches whether the served ONNX models carry trained weights, for labelling every result."""

    def __init__(self, triton: TritonGateway, repository: Path | None, cache_s: float = 60.0):
        self.triton = triton
        self.repository = repository
        self.cache_s = cache_s
        self._value = "unknown"
        self._checked_at = 0.0

    def update(self, models: list[dict]) -> str:
        labels = {model["weights"] for model in models if "weights" in model}
        if "untrained" in labels:
            self._value = "untrained"
        elif labels == {"trained"}:
            self._value = "trained"
        else:
            self._value = "unknown"
        self._checked_at = time.time()
        return self._value

    async def get(self) -> str:
        """``trained``, ``untrained`` or ``unknown`` (refreshed at most every ``cache_s``)."""
        if time.time() - self._checked_at >= self.cache_s:
            try:
                self.update(await describe_models(self.triton, self.repository))
            except GatewayError:
                self._checked_at = time.time()
        return self._value
