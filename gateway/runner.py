"""The execution of one async job, independent of the queue that delivers it.

:class:`JobRunner` is called with a job id by both job backends: the in-process queue
(``facecraft.gateway.jobs.JobQueue``) and the ``facecraft worker`` processes of the Redis backend
(``facecraft.gateway.redis_jobs``). It owns the job's state machine on disk::

    queued → running → completed | failed | cancelled

- :meth:`JobRunner.run` takes a ``queued`` job (or a ``running`` one whose previous attempt was
  cut off: a worker killed, a gateway stopped) to ``running``, calls :meth:`JobRunner.execute`, then
  records the outcome. Each status change is a :meth:`JobStorage.transition` from the status the
  job is expected to have, so a job cancelled or deleted meanwhile is never completed or brought
  back, and a second delivery of a finished job (at-least-once queues) does nothing.
- :meth:`JobRunner.execute` is the work of the job type: input → Triton → outputs written
  atomically (PNG/JPEG under fixed names: a re-run replaces them whole, never two results).
- A retryable failure (Triton unavailable, busy or timing out) puts the job back to ``queued``
  and is returned to the backend, which schedules the retry (its own backoff);
  ``FACECRAFT_JOB_MAX_ATTEMPTS`` attempts in all, however each one ended.
- The Triton call is shielded from the job's cancellation (DELETE, a job timeout, a worker
  stopping): the job stops at once, the call ends by itself and its result is dropped, because a
  gRPC call cancelled mid-inference can crash Triton 2.51 (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from dataclasses import dataclass

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.processors_service import execute_chain_job
from facecraft.gateway.service import PortraitService, result_summary
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import FINISHED_STATUSES, INPUT_NAME, JobGone, JobRecord, JobStorage
from facecraft.gateway.tasks import current_task_is_cancelled
from facecraft.gateway.triton import PortraitRequest, unavailable_error
from facecraft.gateway.video_jobs import execute_video_job, read_extra_inputs

log = logging.getLogger("facecraft.gateway.runner")

RETRYABLE_ERRORS = ("triton_unavailable", "model_unavailable", "server_busy", "triton_timeout")
# The longest wait between two attempts of a job (both backends; SAQ's retry_backoff cap).
MAX_RETRY_DELAY_S = 60.0


def retry_delay_s(settings: GatewaySettings, attempts: int) -> float:
    """Seconds before the next attempt of a job that has had ``attempts``: ``FACECRAFT_RETRY_AFTER_S``
    doubled per attempt, at most :data:`MAX_RETRY_DELAY_S` (SAQ's backoff on the Redis backend,
    without its jitter). With the defaults (5 s, 6 attempts) a job waits out 75 s of an
    unavailable Triton: an embedded Triton's restart by ``facecraft serve`` fits."""
    return min(float(settings.retry_after_s) * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S)


PENDING_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class JobType:
    """Limits of one kind of async job: ``timeout_s`` per attempt, and ``heartbeat_s``, the
    longest a running attempt may go without a sign of life before a broker treats its worker as
    dead and hands the job to another (Redis backend). Size both for the slowest job of the type:
    a portrait is one Triton call; a video job runs for minutes (one Triton call per frame)."""

    name: str
    timeout_s: int
    heartbeat_s: int


def job_types(settings: GatewaySettings) -> dict[str, JobType]:
    """The job types and their limits: ``portrait`` (an image job, with or without ``processors``:
    ``FACECRAFT_JOB_TIMEOUT_S``, ``FACECRAFT_JOB_HEARTBEAT_S``) and ``video``
    (``FACECRAFT_VIDEO_JOB_TIMEOUT_S``, ``FACECRAFT_VIDEO_JOB_HEARTBEAT_S``)."""
    return {
        "portrait": JobType(
            "portrait",
            timeout_s=int(settings.job_timeout_s),
            heartbeat_s=int(settings.job_heartbeat_s),
        ),
        "video": JobType(
            "video",
            timeout_s=int(settings.video_job_timeout_s),
            heartbeat_s=int(settings.video_job_heartbeat_s),
        ),
    }


def job_type_of(record: JobRecord) -> str:
    """The job type of an async job record: ``video`` for a video upload, else ``portrait``."""
    return "video" if record.media == "video" else "portrait"


def worker_name() -> str:
    """``host-pid``: names the process that ran a job (``JobRecord.worker``, the queue's worker id)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _consume_result(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a dropped call's failure is not logged as never retrieved


async def shielded(awaitable):
    """``await`` ``awaitable`` so that a cancellation of the caller leaves it running to its end
    (its result or error is then dropped). See the module docstring for why."""
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(_consume_result)
    return await asyncio.shield(task)


class JobRunner:
    """Runs async jobs by id against Triton (see the module docstring)."""

    def __init__(
        self,
        settings: GatewaySettings,
        service: PortraitService,
        storage: JobStorage,
        metrics: GatewayMetrics,
        name: str | None = None,
    ):
        self.settings = settings
        self.service = service
        self.storage = storage
        self.metrics = metrics
        self.name = name or worker_name()

    async def run(self, job_id: str) -> GatewayError | None:
        """One attempt of job ``job_id``. Returns the retryable error after which the job was put
        back to ``queued`` (the caller schedules the retry), else None: the job finished, or was
        not runnable (unknown, deleted, already finished or cancelled).

        A cancellation of the calling task propagates and leaves the job ``running`` on disk: the
        backend runs it again (restart recovery, the broker's retry or sweep)."""
        record = await asyncio.to_thread(self.storage.load, job_id)
        if record is None or record.status not in PENDING_STATUSES:
            return None
        if record.attempts >= self.settings.job_max_attempts:
            await asyncio.to_thread(
                self._finish,
                record,
                "failed",
                GatewayError(
                    500,
                    "internal_error",
                    f"the job was interrupted in each of its {record.attempts} attempts "
                    "(its time limit, or its worker stopped or died)",
                ),
                expected=PENDING_STATUSES,
            )
            return None
        record.status = "running"
        record.attempts += 1
        record.worker = self.name
        if not await asyncio.to_thread(self._transition, record, PENDING_STATUSES):
            return None
        started = time.perf_counter()
        try:
            await self.execute(record)
        except asyncio.CancelledError:
            if current_task_is_cancelled():
                raise  # stop, timeout or DELETE: the job stays as it is on disk
            # Not our cancellation (e.g. the gRPC channel was closed under the call): transient.
            error = unavailable_error(
                "the inference was cancelled before it finished", self.settings.retry_after_s
            )
            return await self._retry_or_fail(record, error)
        except JobGone:
            return None  # deleted while it ran
        except GatewayError as error:
            return await self._retry_or_fail(record, error)
        except Exception as error:  # unexpected: record it on the job rather than lose it
            log.exception("job %s failed unexpectedly", job_id)
            await asyncio.to_thread(
                self._finish, record, "failed", GatewayError(500, "internal_error", str(error))
            )
            return None
        if await asyncio.to_thread(self._finish, record, "completed"):
            self.metrics.job_duration.labels(job_type_of(record)).observe(time.perf_counter() - started)
        else:  # cancelled while its outputs were written: a cancelled job has no result
            await asyncio.to_thread(self._drop_outputs, record)
        return None

    def _drop_outputs(self, record: JobRecord) -> None:
        for name in record.files.values():
            with contextlib.suppress(FileNotFoundError, GatewayError):
                self.storage.file_path(record.job_id, name).unlink()

    async def execute(self, record: JobRecord) -> None:
        """The work of the job: reads ``input.bin`` (and ``source.bin`` where its chain takes one,
        ``record.inputs``); a job with ``processors`` runs that chain
        (``processors_service.execute_chain_job``), a video job that chain over every frame
        (``video_jobs.execute_video_job``: it stops between frames when cancelled, each Triton call
        shielded), a portrait job the ensemble, writing PNG + JPEG. Fills ``record.result``, ``files`` and ``processing_time_ms``. Raises :class:`GatewayError`
        (``no_face_detected`` as 400; :class:`JobGone` when the job was deleted meanwhile)."""
        if record.media == "video":
            await execute_video_job(self.service, record)
            return
        image = await asyncio.to_thread(self.storage.read_file, record.job_id, INPUT_NAME)
        if record.processors:  # a processors chain (facecraft.gateway.processors_service)
            extras = await asyncio.to_thread(read_extra_inputs, self.storage, record)
            if not await shielded(execute_chain_job(self.service, record, image, extras)):
                raise JobGone(record.job_id)
            return
        request = PortraitRequest(**{**record.options, "background": tuple(record.options["background"])})
        outcome = await shielded(self.service.infer(image, request, wait_s=self.settings.triton_timeout_s))
        record.processing_time_ms = outcome.processing_time_ms
        if outcome.output is None:
            raise GatewayError(400, outcome.error or "no_face_detected", outcome.error_message or "")
        record.result = result_summary(outcome.output, request.model_name)
        record.files = await asyncio.to_thread(
            functools.partial(self.service.store_outputs, record.job_id, outcome.output, create=False)
        )

    def _transition(self, record: JobRecord, expected: tuple[str, ...]) -> bool:
        """Persist ``record`` if the stored job is still in ``expected``; False otherwise or when the
        job was deleted meanwhile (it is not written back)."""
        try:
            return self.storage.transition(record, expected)
        except JobGone:
            return False

    def _finish(
        self,
        record: JobRecord,
        status: str,
        error: GatewayError | None = None,
        expected: tuple[str, ...] = ("running",),
    ) -> bool:
        """Record the end of a job; False when it was cancelled or deleted meanwhile (untouched)."""
        record.status = status
        if error is not None:
            record.error, record.error_message = error.error, error.message
        if not self._transition(record, expected):
            return False
        for name in record.input_files():
            with contextlib.suppress(FileNotFoundError, GatewayError):
                self.storage.file_path(record.job_id, name).unlink()
        self.metrics.jobs.labels(status).inc()
        return True

    async def _retry_or_fail(self, record: JobRecord, error: GatewayError) -> GatewayError | None:
        """Put a retryable failure back to ``queued`` (returned), else fail the job with it."""
        if error.error in RETRYABLE_ERRORS and record.attempts < self.settings.job_max_attempts:
            record.status = "queued"
            record.note = f"retrying after {error.error} (attempt {record.attempts})"
            if not await asyncio.to_thread(self._transition, record, ("running",)):
                return None
            self.metrics.jobs.labels("requeued").inc()
            return error
        await asyncio.to_thread(self._finish, record, "failed", error)
        return None

    async def fail_crashed(self, job_id: str, reason: str) -> None:
        """Last resort after :meth:`run` itself raised: a job still queued or running on disk is
        marked failed (otherwise nothing might ever pick it up again)."""
        try:
            record = await asyncio.to_thread(self.storage.load, job_id)
            if record is not None and record.status not in FINISHED_STATUSES:
                await asyncio.to_thread(
                    self._finish,
                    record,
                    "failed",
                    GatewayError(500, "internal_error", reason),
                    PENDING_STATUSES,
                )
        except asyncio.CancelledError:
            if current_task_is_cancelled():
                raise
            log.error("job %s: could not record its failure (cancelled)", job_id)
        except Exception:  # e.g. the disk is full: the job stays running and is run again later
            log.exception("job %s: could not record its failure", job_id)
