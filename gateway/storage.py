"""Job storage on disk: one folder per job under ``OUTPUT_DIR/jobs``, written atomically.

Layout::

    OUTPUT_DIR/jobs/<job_id>/job.json      metadata (JobRecord), replaced atomically
    OUTPUT_DIR/jobs/<job_id>/portrait.png  outputs of /process and async jobs
    OUTPUT_DIR/jobs/<job_id>/portrait.jpg
    OUTPUT_DIR/jobs/<job_id>/file-0003.png per-file outputs of a batch
    OUTPUT_DIR/jobs/<job_id>/input.bin     the upload of a queued async job (kept for restarts)
    OUTPUT_DIR/jobs/<job_id>/source.bin    its other upload, where its processors take one
                                           (face_swapper's source; JobRecord.inputs)
    OUTPUT_DIR/.jobs.lock                  the lock of deletions and status changes (flock)

Every file is written to a temporary name in the same folder, fsynced, then renamed, so a reader
never sees a partial file. Job ids and file names are validated against strict patterns and every
resolved path is checked to stay inside the jobs folder.

Deleting a job renames its folder out of the way first (``.trash-*``, removed right after and at
start-up), under the same lock as updates of existing jobs, so a worker still busy with a deleted
job can neither make the deletion fail nor bring the job back (``create=False`` writes raise
:class:`JobGone` instead). The lock is an ``flock`` on ``OUTPUT_DIR/.jobs.lock``: it holds across processes
too, so gateways and ``facecraft worker`` processes sharing ``OUTPUT_DIR`` (the Redis job backend,
docs/deploy.md) see one consistent job state; :meth:`JobStorage.transition` changes a job's status
only from the one it is expected to have (a cancelled job is never completed afterwards).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.security import validate_job_id

log = logging.getLogger("facecraft.gateway.storage")

# portrait / batch outputs, a portrait's print sheet, a processors-chain result
# (facecraft.gateway.processors_service), input, metadata
FILE_NAME_PATTERN = re.compile(
    r"^(portrait|file-\d{4})\.(png|jpg)$|^portrait-sheet\.jpg$|^result\.(png|jpg|json|mp4|webm|jsonl)$|^(input|source)\.bin$|^job\.json$"
)
METADATA_NAME = "job.json"
INPUT_NAME = "input.bin"


def extra_input_name(tensor: str) -> str:
    """The stored file of a job's extra upload for the ensemble input ``tensor`` (``SOURCE`` →
    ``source.bin``)."""
    return f"{tensor.lower()}.bin"


class JobRecord(BaseModel):
    """Metadata of one job, persisted as ``job.json``."""

    job_id: str
    kind: str = Field(..., description="process | batch | async")
    status: str = Field(..., description="queued | running | completed | failed | cancelled")
    created_at: float
    updated_at: float
    options: dict[str, Any] = Field(default_factory=dict)
    filename: str | None = None
    attempts: int = 0
    error: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    files: dict[str, str] = Field(default_factory=dict, description="format -> file name")
    items: list[dict[str, Any]] = Field(default_factory=list, description="batch: one entry per file")
    processing_time_ms: float | None = None
    note: str | None = None
    processors: list[str] | None = Field(
        None, description="async: the processors chain run instead of the portrait (options by processor)"
    )
    worker: str | None = Field(None, description="the worker that ran the last attempt of an async job")
    media: str = Field("image", description="async: image, or video (the chain runs over every frame)")
    video_output: str | None = Field(None, description="a video job: mp4, webm or jsonl")
    progress: dict[str, Any] | None = Field(
        None, description="a running or finished video job: frames_done, frames_total, fps, eta_s"
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="async: the uploads besides input.bin, ensemble input → file (SOURCE → source.bin)",
    )

    def input_files(self) -> list[str]:
        """Every stored upload of the job: ``input.bin`` and its extra ones (:attr:`inputs`)."""
        return [INPUT_NAME, *self.inputs.values()]


FINISHED_STATUSES = ("completed", "failed", "cancelled")


class StorageError(GatewayError):
    """A disk failure: 507 when the disk is full, 500 otherwise; error code ``storage_error``."""

    def __init__(self, action: str, error: OSError):
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        detail = "no space left on the device" if full else (error.strerror or str(error))
        super().__init__(507 if full else 500, "storage_error", f"could not {action}: {detail}")


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class JobGone(GatewayError):
    """The job was deleted while something still wanted to update it (404 ``not_found``)."""

    def __init__(self, job_id: str):
        super().__init__(404, "not_found", f"job {job_id} was deleted")


def atomic_write_bytes(path: Path, data: bytes, *, create_parent: bool = True) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename; never leaves a partial file.

    Raises :class:`StorageError` on any OS error (the temporary file is removed); with
    ``create_parent=False`` a missing folder is that error too (ENOENT) instead of being created.
    """
    if create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise StorageError(f"write {path.name}", error) from error
    _fsync_directory(path.parent)


class JobStorage:
    """Files and metadata of jobs under ``root/jobs``."""

    TRASH_PREFIX = ".trash-"
    LOCK_NAME = ".jobs.lock"  # in ``root``, beside ``jobs/``

    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs_root = (self.root / "jobs").resolve()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Deletion vs updates of existing jobs, across threads and processes (module docstring)."""
        try:
            fd = os.open(self.jobs_root.parent / self.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StorageError("open the jobs lock", error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def ensure_ready(self) -> None:
        try:
            self.jobs_root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"create {self.jobs_root}", error) from error
        for leftover in self.jobs_root.glob(f"{self.TRASH_PREFIX}*"):  # a deletion cut short
            shutil.rmtree(leftover, ignore_errors=True)

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job (validated id, guaranteed inside the jobs folder)."""
        validate_job_id(job_id)
        path = (self.jobs_root / job_id).resolve()
        if path.parent != self.jobs_root:
            raise GatewayError(400, "invalid_job_id", "job id resolves outside the output folder")
        return path

    def file_path(self, job_id: str, name: str) -> Path:
        """Path of a job file; ``name`` must be one of the generated names."""
        if not FILE_NAME_PATTERN.fullmatch(name):
            raise GatewayError(400, "invalid_format", f"not a job file name: {name!r}")
        folder = self.job_dir(job_id)
        path = (folder / name).resolve()
        if path.parent != folder:
            raise GatewayError(400, "invalid_format", "file name resolves outside the job folder")
        return path

    def write_file(self, job_id: str, name: str, data: bytes, *, create: bool = True) -> int:
        """Write one job file atomically; returns its size. ``create=False``: the job must still
        exist (else :class:`JobGone`), as for every update made after the job was accepted."""
        path = self.file_path(job_id, name)
        if create:
            atomic_write_bytes(path, data)
            return len(data)
        with self._lock():
            self._write_existing(job_id, path, data)
        return len(data)

    @staticmethod
    def _write_existing(job_id: str, path: Path, data: bytes) -> None:
        if not path.parent.is_dir():
            raise JobGone(job_id)
        atomic_write_bytes(path, data, create_parent=False)

    def read_file(self, job_id: str, name: str) -> bytes:
        path = self.file_path(job_id, name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise GatewayError(404, "not_found", f"job {job_id} has no file {name}") from None
        except OSError as error:
            raise StorageError(f"read {name}", error) from error

    def existing_file(self, job_id: str, name: str) -> Path:
        """Path of an existing job file, or 404 ``not_found``."""
        path = self.file_path(job_id, name)
        if not path.is_file():
            raise GatewayError(404, "not_found", f"job {job_id} has no {name} (unknown or expired job)")
        return path

    def save(self, record: JobRecord, *, create: bool = True) -> None:
        """Persist a job's metadata atomically (``create=False``: see :meth:`write_file`)."""
        record.updated_at = time.time()
        data = json.dumps(record.model_dump(), indent=1).encode()
        self.write_file(record.job_id, METADATA_NAME, data, create=create)

    def transition(self, record: JobRecord, expected: tuple[str, ...]) -> bool:
        """Save ``record`` only if the stored job's status is one of ``expected``; False (nothing
        written) when it is not. Raises :class:`JobGone` when the job was deleted."""
        with self._lock():
            stored = self.load(record.job_id)
            if stored is None:
                raise JobGone(record.job_id)
            if stored.status not in expected:
                return False
            record.updated_at = time.time()
            data = json.dumps(record.model_dump(), indent=1).encode()
            self._write_existing(record.job_id, self.file_path(record.job_id, METADATA_NAME), data)
        return True

    def load(self, job_id: str) -> JobRecord | None:
        """A job's metadata, or None when the job does not exist (or its metadata is unreadable)."""
        path = self.file_path(job_id, METADATA_NAME)
        try:
            return JobRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None

    def require(self, job_id: str) -> JobRecord:
        record = self.load(job_id)
        if record is None:
            raise GatewayError(404, "not_found", f"job {job_id} not found (unknown or expired)")
        return record

    def iter_records(self) -> Iterator[JobRecord]:
        """Every readable job record (folders with other names are ignored)."""
        if not self.jobs_root.is_dir():
            return
        for entry in sorted(self.jobs_root.iterdir()):
            if entry.is_dir() and re.fullmatch(r"[0-9a-f]{32}", entry.name):
                record = self.load(entry.name)
                if record is not None:
                    yield record

    def delete(self, job_id: str) -> bool:
        """Remove a job folder; False when it did not exist.

        The folder is first renamed to a ``.trash-`` name (atomic: the job is gone for every reader
        and writer at once), then removed; what a crash leaves of it goes at the next start.
        """
        folder = self.job_dir(job_id)
        trash = self.jobs_root / f"{self.TRASH_PREFIX}{job_id}-{uuid.uuid4().hex}"
        with self._lock():
            if not folder.is_dir():
                return False
            try:
                folder.rename(trash)
            except OSError as error:
                raise StorageError(f"delete job {job_id}", error) from error
        # the job is already gone; files that cannot be removed now go at the next start
        shutil.rmtree(trash, onerror=lambda *_: log.warning("could not remove all of %s", trash))
        return True

    def cleanup(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Delete finished jobs (and unreadable leftovers) older than ``max_age_s``; returns their ids.

        Queued and running jobs are kept whatever their age.
        """
        now = time.time() if now is None else now
        removed: list[str] = []
        if not self.jobs_root.is_dir():
            return removed
        for entry in self.jobs_root.iterdir():
            if not (entry.is_dir() and re.fullmatch(r"[0-9a-f]{32}", entry.name)):
                continue
            record = self.load(entry.name)
            if record is not None and record.status not in FINISHED_STATUSES:
                continue
            created = record.created_at if record is not None else entry.stat().st_mtime
            if now - created > max_age_s:
                try:
                    shutil.rmtree(entry)
                    removed.append(entry.name)
                except OSError:
                    continue
        return removed
