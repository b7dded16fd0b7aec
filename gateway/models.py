"""Model management at run time: the models list, download → export → load operations, load/unload.

Triton runs in explicit model-control mode (docs/runtime.md), so the gateway loads and unloads
models through Triton's repository API. A download is an asynchronous *operation*: for each name,
the official weights are fetched (``facecraft.export.weights``: registry URL or
``FACECRAFT_WEIGHTS_MIRROR``, checksum, cache), exported (ONNX + parity + ``export.json``) into
``FACECRAFT_MODEL_REPOSITORY``, linked into the folder Triton serves when that is a runtime copy
(``FACECRAFT_TRITON_REPOSITORY``), then loaded. Operations run one at a time, in this process;
their state is kept in memory (the last :data:`KEPT_OPERATIONS`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facecraft.export.catalog import CONFIG_TEMPLATES, LICENCES, MODEL_NAMES
from facecraft.gateway.errors import GatewayError
from facecraft.gateway.health import instance_kinds, read_export_info
from facecraft.gateway.tasks import cancel_and_wait
from facecraft.gateway.triton import TritonGateway

log = logging.getLogger("facecraft.gateway.models")

KEPT_OPERATIONS = 100
SETTLE_TIMEOUT_S, SETTLE_POLL_S = 30.0, 0.1
# Share of an item's progress taken by its stages (the download is what a user waits on).
DOWNLOAD_SHARE, EXPORT_SHARE = 0.6, 0.3
PROVENANCE = {"official": "official", "path": "local", "random": "random"}


def unknown_model(name: str, valid: list[str] | tuple[str, ...]) -> GatewayError:
    """404 ``model_not_found`` listing the valid names."""
    return GatewayError(
        404, "model_not_found", f"unknown model {name!r}; valid models: {', '.join(sorted(valid))}"
    )


def require_known(name: str, known: list[str]) -> None:
    """404 ``model_not_found`` unless ``name`` is in the repository (``known``); a model this
    project can export but this deployment has not gets a message saying how to download it."""
    if name in known:
        return
    if name in MODEL_NAMES:
        raise GatewayError(
            404,
            "model_not_found",
            f"model {name!r} is not exported in this deployment; download it with "
            f'POST /api/v1/models/download ["{name}"] (or `facecraft export {name}`)',
        )
    raise unknown_model(name, known)


def provenance(export: dict | None) -> dict:
    """Weights fields of a model from its ``export.json`` record (None: not an export).

    ``provenance``: ``official`` (downloaded from the registry or a mirror), ``local`` (a file
    given with ``--weights PATH``), ``random`` (seeded, untrained) or ``unknown``.
    """
    if export is None:
        return {"provenance": "unknown", "weights": "unknown"}
    return {
        "provenance": PROVENANCE.get(str(export.get("weights_source")), "unknown"),
        "weights": "trained" if export.get("trained") else "untrained",
        "weights_sha256": export.get("weights_sha256"),
        "weights_url": export.get("weights_url"),
        "onnx_sha256": export.get("onnx_sha256"),
        "variant": export.get("variant"),
        "preset": export.get("preset"),
        "seed": export.get("seed"),
    }


def size_on_disk(folder: Path) -> int:
    """Bytes of the files under ``folder`` (symlinks followed: a runtime copy links its exports)."""
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


def config_summary(repository: Path | None, name: str) -> dict:
    """Platform/backend, instance kinds and max batch size from ``<repository>/<name>/config.pbtxt``
    ({} when it cannot be read)."""
    if repository is None:
        return {}
    from google.protobuf import json_format

    from facecraft.runtime.model_config import ConfigEditError, load_config

    try:
        config = load_config(Path(repository) / name / "config.pbtxt")
    except (OSError, ConfigEditError):
        return {}
    as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return {
        "platform": config.platform or config.backend or None,
        "instance_kinds": instance_kinds(as_dict) if config.platform != "ensemble" else [],
        "max_batch_size": config.max_batch_size,
    }


async def list_models(
    triton: TritonGateway, model_repository: Path | None, triton_repository: Path | None
) -> list[dict]:
    """Every model of Triton's repository index (state, versions, platform, instance kinds,
    weights provenance, size on disk, licence), then every exportable model not in it
    (``state: "NOT_EXPORTED"``, ``downloadable: true``)."""
    served = triton_repository or model_repository
    by_name: dict[str, dict] = {}
    for entry in await triton.repository_index():
        name = entry.get("name", "")
        info = by_name.setdefault(
            name, {"name": name, "versions": [], "state": entry.get("state") or "UNLOADED"}
        )
        if entry.get("version"):
            info["versions"].append(entry["version"])
        if entry.get("reason"):
            info["reason"] = entry["reason"]
    models = []
    for name, info in sorted(by_name.items()):
        info.update(config_summary(served, name))
        if info.get("platform") is None and info["state"] == "READY":
            try:
                config = await triton.model_config(name)
                info["platform"] = config.get("platform") or config.get("backend")
                info["instance_kinds"] = instance_kinds(config)
            except GatewayError:
                pass
        export = read_export_info(model_repository or served, name)
        if export is not None or info.get("platform") in ("onnxruntime", "onnxruntime_onnx"):
            info.update(provenance(export))
        if served is not None and (Path(served) / name).is_dir():
            info["size_bytes"] = size_on_disk(Path(served) / name)
        info["licence"] = LICENCES.get(name)
        info["downloadable"] = name in MODEL_NAMES
        models.append(info)
    for name in MODEL_NAMES:
        if name not in by_name:
            models.append(
                {
                    "name": name,
                    "state": "NOT_EXPORTED",
                    "versions": [],
                    "downloadable": True,
                    "licence": LICENCES[name],
                }
            )
    return models


@dataclass
class DownloadItem:
    """One model of a download operation; ``status``: queued → exporting (weights download,
    ONNX export, parity) → loading → ready, or failed (``error``)."""

    name: str
    status: str = "queued"
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    provenance: dict | None = None

    @property
    def progress(self) -> float:
        if self.status == "ready":
            return 1.0
        if self.status == "loading":
            return DOWNLOAD_SHARE + EXPORT_SHARE
        if self.status == "exporting" and self.bytes_total:
            return DOWNLOAD_SHARE * min(1.0, self.bytes_done / self.bytes_total)
        return 0.0


@dataclass
class DownloadOperation:
    """``POST /api/v1/models/download``: ``status`` queued → running → completed | failed."""

    id: str
    preset: str
    items: list[DownloadItem]
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        items = [{**asdict(item), "progress": round(item.progress, 3)} for item in self.items]
        progress = sum(item["progress"] for item in items) / max(len(items), 1)
        return {
            "id": self.id,
            "status": self.status,
            "preset": self.preset,
            "progress": round(progress, 3),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "models": items,
        }


class ModelManager:
    """Download operations and load/unload for one gateway (``app.state.models``)."""

    def __init__(
        self,
        triton: TritonGateway,
        model_repository: Path | None,
        triton_repository: Path | None = None,
    ):
        self.triton = triton
        self.model_repository = Path(model_repository) if model_repository else None
        self.triton_repository = Path(triton_repository) if triton_repository else self.model_repository
        self.operations: dict[str, DownloadOperation] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def known_models(self) -> list[str]:
        """Names in Triton's repository index."""
        return [entry.get("name", "") for entry in await self.triton.repository_index()]

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``; 404 ``model_not_found`` for a name not in the repository."""
        require_known(name, await self.known_models())
        await self.triton.load_model(name)

    async def unload(self, name: str) -> None:
        """Unload ``name`` and wait (≤ :data:`SETTLE_TIMEOUT_S`) until Triton has settled: its
        unload returns before the ensembles using the model are unloaded, and until then the
        server reports not ready."""
        require_known(name, await self.known_models())
        await self.triton.unload_model(name)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if await self.triton.server_ready():
                    return
            except GatewayError:
                pass
            await asyncio.sleep(SETTLE_POLL_S)

    def default_preset(self) -> str:
        """The preset of the repository's existing exports (``tiny`` test repositories), else ``full``."""
        for name in MODEL_NAMES:
            export = read_export_info(self.model_repository, name)
            if export and export.get("preset"):
                return str(export["preset"])
        return "full"

    def start_download(self, names: list[str], preset: str | None = None) -> DownloadOperation:
        """Validate ``names`` and queue one operation for them (run in the background)."""
        if not names:
            raise GatewayError(422, "invalid_request", "give at least one model name")
        for name in names:
            if name not in MODEL_NAMES:
                raise unknown_model(name, MODEL_NAMES)
        if self.model_repository is None:
            raise GatewayError(
                409, "repository_unknown", "FACECRAFT_MODEL_REPOSITORY is not set: there is nowhere to export"
            )
        try:
            from facecraft.export.models import PRESETS
        except ImportError as error:
            raise GatewayError(
                501,
                "export_unavailable",
                f"this gateway cannot export models ({error}); install the export extra",
            ) from None
        preset = preset or self.default_preset()
        if preset not in PRESETS:
            raise GatewayError(
                400, "invalid_option", f"preset must be one of {', '.join(PRESETS)}, got {preset!r}"
            )
        operation = DownloadOperation(
            uuid.uuid4().hex, preset, [DownloadItem(name) for name in dict.fromkeys(names)]
        )
        self.operations[operation.id] = operation
        for old in list(self.operations)[:-KEPT_OPERATIONS]:
            if self.operations[old].status in ("completed", "failed"):
                del self.operations[old]
        task = asyncio.get_running_loop().create_task(
            self._run(operation), name=f"model-download-{operation.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return operation

    def operation(self, operation_id: str) -> DownloadOperation:
        try:
            return self.operations[operation_id]
        except KeyError:
            raise GatewayError(404, "not_found", f"no model download operation {operation_id!r}") from None

    async def _run(self, operation: DownloadOperation) -> None:
        async with self._lock:
            operation.status = "running"
            operation.updated_at = time.time()
            for item in operation.items:
                try:
                    item.status = "exporting"
                    item.provenance = await asyncio.to_thread(self._export, item, operation.preset)
                    item.status = "loading"
                    await asyncio.to_thread(self._link, item.name)
                    await self.triton.load_model(item.name)
                    item.status = "ready"
                except asyncio.CancelledError:
                    item.status, item.error = "failed", "the gateway stopped during the operation"
                    raise
                except GatewayError as error:
                    item.status, item.error = "failed", f"{error.error}: {error.message}"
                except Exception as error:  # a WeightsError, ParityError, I/O error: the item fails
                    log.warning("model download %s: %s failed: %s", operation.id, item.name, error)
                    item.status, item.error = "failed", f"{type(error).__name__}: {error}"
                finally:
                    operation.updated_at = time.time()
            operation.status = (
                "completed" if all(item.status == "ready" for item in operation.items) else "failed"
            )
            operation.updated_at = time.time()

    def _export(self, item: DownloadItem, preset: str) -> dict:
        """Fetch the official weights and export ``item.name`` into the model repository (a thread)."""
        from facecraft.export.exporter import export_model

        def on_progress(done: int, total: int | None) -> None:
            item.bytes_done, item.bytes_total = done, total

        result = export_model(
            item.name,
            preset=preset,
            weights="official",
            repo=self.model_repository,
            progress=False,
            on_progress=on_progress,
        )
        return provenance(result.metadata)

    def _link(self, name: str) -> None:
        """Make a model exported into the model repository visible in the runtime copy Triton
        serves: its config (a derived one re-derived from the copy's template, which carries the
        instance plan; others copied) and symlinks to its version folders. No-op when Triton serves
        the model repository itself."""
        source, served = self.model_repository, self.triton_repository
        if source is None or served is None or source.resolve() == served.resolve():
            return
        target = served / name
        target.mkdir(parents=True, exist_ok=True)
        if not (target / "config.pbtxt").is_file():
            if name in CONFIG_TEMPLATES:
                from facecraft.export.exporter import write_derived_config

                write_derived_config(served, name)
            else:
                shutil.copy2(source / name / "config.pbtxt", target / "config.pbtxt")
        for entry in (source / name).iterdir():
            link = target / entry.name
            if entry.name not in ("config.pbtxt", "__pycache__") and not (link.exists() or link.is_symlink()):
                link.symlink_to(entry.resolve())

    async def stop(self) -> None:
        """Cancel running operations (app shutdown); an export thread finishes on its own."""
        await cancel_and_wait(lambda: list(self._tasks))
