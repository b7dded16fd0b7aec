"""Async jobs: a persistent queue worked by a few asyncio tasks.

``submit`` validates the upload, stores it as ``input.bin`` with a ``queued`` record and enqueues
the id; workers move a job queued → running → completed | failed, persisting every transition.
At start-up, jobs left queued or running by a previous gateway process are re-queued when their
input is still on disk, otherwise marked failed with the reason — never silently dropped.
While Triton is unavailable a job is retried (``FACECRAFT_JOB_MAX_ATTEMPTS``) before failing.
A worker survives anything a job raises (an unexpected exception, a ``CancelledError`` that is not
the worker's own cancellation): the job is retried or failed with the reason, never left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import asdict

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.processors_service import execute_chain_job
from facecraft.gateway.security import validate_image_bytes
from facecraft.gateway.service import PortraitService, new_job_id, result_summary
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import INPUT_NAME, JobGone, JobRecord, JobStorage
from facecraft.gateway.tasks import cancel_and_wait, current_task_is_cancelled
from facecraft.gateway.triton import PortraitRequest, unavailable_error

log = logging.getLogger("facecraft.gateway.jobs")

RETRYABLE_ERRORS = ("triton_unavailable", "model_unavailable", "server_busy", "triton_timeout")


class JobQueue:
    """The async job queue and its worker tasks."""

    def __init__(
        self,
        settings: GatewaySettings,
        service: PortraitService,
        storage: JobStorage,
        metrics: GatewayMetrics,
    ):
        self.settings = settings
        self.service = service
        self.storage = storage
        self.metrics = metrics
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []
        self._retry_tasks: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # workers inside a job
        self._stopping = False

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _enqueue(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)
        self.metrics.job_queue_depth.set(self._queue.qsize())

    def recover(self) -> dict[str, int]:
        """Re-queue (or fail, with a reason) jobs a previous process left queued or running."""
        counts = {"requeued": 0, "failed": 0}
        pending: list[JobRecord] = []
        for record in self.storage.iter_records():
            if record.status not in ("queued", "running"):
                continue
            if record.kind == "async" and self.storage.file_path(record.job_id, INPUT_NAME).is_file():
                record.status = "queued"
                record.note = "re-queued after a gateway restart"
                pending.append(record)
            else:
                record.status = "failed"
                record.error = "internal_error"
                record.error_message = "interrupted by a gateway restart and its input is no longer available"
                self.storage.save(record)
                counts["failed"] += 1
                self.metrics.jobs.labels("failed").inc()
        for record in sorted(pending, key=lambda r: r.created_at):
            self.storage.save(record)
            self._enqueue(record.job_id)
            counts["requeued"] += 1
            self.metrics.jobs.labels("requeued").inc()
        if any(counts.values()):
            log.warning("job recovery after restart: %s", counts)
        return counts

    async def start(self) -> None:
        await asyncio.to_thread(self.recover)
        self._workers = [
            asyncio.create_task(self._work(), name=f"facecraft-job-worker-{index}")
            for index in range(self.settings.job_workers)
        ]

    async def stop(self) -> None:
        """Stop the workers: idle ones and retry timers at once; a worker inside a job gets up to
        ``FACECRAFT_SHUTDOWN_GRACE_S`` to finish it, then is cancelled (a swallowed cancellation is
        delivered again: facecraft.gateway.tasks). A job cut off stays ``running`` or ``queued`` on
        disk and is re-queued at the next start.

        The grace matters beyond the job itself: cancelling a gRPC call mid-inference is what
        triggers Triton 2.51's cancellation race (a server crash, docs/reliability.md), so a normal
        shutdown lets the calls end instead of cancelling them."""
        self._stopping = True
        for task in [*self._retry_tasks, *(worker for worker in self._workers if worker not in self._busy)]:
            task.cancel()
        busy = [worker for worker in self._workers if worker in self._busy]
        if busy and self.settings.shutdown_grace_s > 0:
            await asyncio.wait(busy, timeout=self.settings.shutdown_grace_s)
        await cancel_and_wait(lambda: [*self._workers, *self._retry_tasks])
        self._workers = []
        self._retry_tasks.clear()

    async def submit(
        self,
        image: bytes,
        request: PortraitRequest | None,
        filename: str | None,
        processors: tuple[str, ...] | None = None,
        processor_options: dict | None = None,
    ) -> JobRecord:
        """Validate and persist an upload as a queued job; returns its record. With ``processors``
        (and their resolved ``processor_options``) the job runs that chain instead of the portrait.

        A full queue (``FACECRAFT_MAX_QUEUED_JOBS``) refuses the job with 503 ``server_busy`` rather
        than letting the backlog, and the stored inputs behind it, grow without bound.
        """
        if self._queue.qsize() >= self.settings.max_queued_jobs:
            self.metrics.jobs.labels("rejected").inc()
            raise GatewayError(
                503,
                "server_busy",
                f"{self._queue.qsize()} async jobs are already queued (limit {self.settings.max_queued_jobs}); "
                "retry after Retry-After seconds",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        validate_image_bytes(image, self.settings.max_image_pixels)
        now = time.time()
        record = JobRecord(
            job_id=new_job_id(),
            kind="async",
            status="queued",
            created_at=now,
            updated_at=now,
            options=asdict(request) if processors is None else processor_options,
            filename=filename,
            processors=None if processors is None else list(processors),
        )

        def persist() -> None:
            try:
                self.storage.write_file(record.job_id, INPUT_NAME, image)
                self.storage.save(record)
            except GatewayError:
                with contextlib.suppress(GatewayError):
                    self.storage.delete(record.job_id)
                raise

        await asyncio.to_thread(persist)
        self._enqueue(record.job_id)
        self.metrics.jobs.labels("submitted").inc()
        return record

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self.metrics.job_queue_depth.set(self._queue.qsize())
            worker = asyncio.current_task()
            self._busy.add(worker)
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                if current_task_is_cancelled():
                    raise  # stop(): the job stays running on disk and is re-queued at the next start
                log.error("job %s: its step was cancelled unexpectedly", job_id)
                await self._fail_crashed(job_id, "the job was cancelled unexpectedly")
            except Exception as error:  # a worker must survive any single job
                log.exception("job %s crashed the worker step", job_id)
                await self._fail_crashed(job_id, f"the job crashed: {type(error).__name__}: {error}")
            finally:
                self._busy.discard(worker)
                self._queue.task_done()
            if self._stopping:
                return  # stop() let this job finish; take no other

    async def _fail_crashed(self, job_id: str, reason: str) -> None:
        """Last resort after ``_run`` itself raised: the job, taken off the queue but still queued
        or running on disk, is marked failed (otherwise nothing would ever pick it up again)."""
        try:
            record = await asyncio.to_thread(self.storage.load, job_id)
            if record is not None and record.status in ("queued", "running"):
                await asyncio.to_thread(
                    self._finish, record, "failed", GatewayError(500, "internal_error", reason)
                )
        except asyncio.CancelledError:
            if current_task_is_cancelled():
                raise
            log.error("job %s: could not record its failure (cancelled)", job_id)
        except Exception:  # e.g. the disk is full: the job stays running and is re-queued at restart
            log.exception("job %s: could not record its failure", job_id)

    def _update(self, record: JobRecord) -> bool:
        """Persist an update of an accepted job; False when the job was deleted meanwhile (it is
        not written back)."""
        try:
            self.storage.save(record, create=False)
        except JobGone:
            return False
        return True

    def _finish(self, record: JobRecord, status: str, error: GatewayError | None = None) -> None:
        record.status = status
        if error is not None:
            record.error, record.error_message = error.error, error.message
        if not self._update(record):
            return  # deleted while running: do not resurrect it
        with contextlib.suppress(FileNotFoundError, GatewayError):
            self.storage.file_path(record.job_id, INPUT_NAME).unlink()
        self.metrics.jobs.labels(status).inc()

    async def _run(self, job_id: str) -> None:
        record = await asyncio.to_thread(self.storage.load, job_id)
        if record is None or record.status != "queued":
            return  # deleted, or already handled
        record.status = "running"
        record.attempts += 1
        if not await asyncio.to_thread(self._update, record):
            return
        try:
            image = await asyncio.to_thread(self.storage.read_file, job_id, INPUT_NAME)
            if record.processors:  # a processors chain (facecraft.gateway.processors_service)
                if await execute_chain_job(self.service, record, image):
                    await asyncio.to_thread(self._finish, record, "completed")
                return
            request = PortraitRequest(**{**record.options, "background": tuple(record.options["background"])})
            outcome = await self.service.infer(image, request, wait_s=self.settings.triton_timeout_s)
            record.processing_time_ms = outcome.processing_time_ms
            if outcome.output is None:
                error = GatewayError(400, outcome.error or "no_face_detected", outcome.error_message or "")
                await asyncio.to_thread(self._finish, record, "failed", error)
                return
            record.result = result_summary(outcome.output, request.model_name)
            try:
                record.files = await asyncio.to_thread(
                    functools.partial(self.service.store_outputs, job_id, outcome.output, create=False)
                )
            except JobGone:
                return  # deleted while it ran
            await asyncio.to_thread(self._finish, record, "completed")
        except asyncio.CancelledError:
            if current_task_is_cancelled():
                raise  # stop(): the job stays running on disk and is re-queued at the next start
            # Not the worker's cancellation (e.g. its gRPC call was cancelled under it): transient.
            error = unavailable_error(
                "the inference was cancelled before it finished", self.settings.retry_after_s
            )
            await self._retry_or_fail(record, error)
        except GatewayError as error:
            await self._retry_or_fail(record, error)
        except Exception as error:  # unexpected: record it on the job rather than lose it
            log.exception("job %s failed unexpectedly", job_id)
            await asyncio.to_thread(
                self._finish, record, "failed", GatewayError(500, "internal_error", str(error))
            )

    async def _retry_or_fail(self, record: JobRecord, error: GatewayError) -> None:
        """Re-queue a retryable failure (``FACECRAFT_JOB_MAX_ATTEMPTS``), else fail with the error."""
        if error.error in RETRYABLE_ERRORS and record.attempts < self.settings.job_max_attempts:
            record.status = "queued"
            record.note = f"retrying after {error.error} (attempt {record.attempts})"
            if not await asyncio.to_thread(self._update, record):
                return
            self.metrics.jobs.labels("requeued").inc()
            self._schedule_retry(record.job_id, delay_s=float(self.settings.retry_after_s))
            return
        await asyncio.to_thread(self._finish, record, "failed", error)

    def _schedule_retry(self, job_id: str, delay_s: float) -> None:
        if self._stopping:
            return  # the job stays queued on disk: the next start re-queues it

        async def later() -> None:
            await asyncio.sleep(delay_s)
            self._enqueue(job_id)

        task = asyncio.create_task(later())
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)
