"""Async jobs: the backends that deliver them, and what both share.

Two backends, chosen by ``FACECRAFT_JOB_BACKEND`` (:func:`create_job_backend`):

- ``local`` (the default): :class:`JobQueue`, a persistent in-process queue worked by a few
  asyncio tasks of this gateway (``FACECRAFT_JOB_WORKERS``);
- a Redis URL: ``facecraft.gateway.redis_jobs.RedisJobQueue``, a shared SAQ queue worked by
  ``facecraft worker`` processes on any machine (docs/deploy.md).

Both execute a job with the same :class:`facecraft.gateway.runner.JobRunner` and share
:class:`JobBackend`: ``submit`` validates the upload, stores it as ``input.bin`` with a ``queued``
record, then hands the id to the queue; ``cancel_or_delete`` is ``DELETE /api/v1/jobs/{id}``.

Local queue: at start-up, jobs left queued or running by a previous gateway process are re-queued
when their input is still on disk, otherwise marked failed with the reason — never silently
dropped. While Triton is unavailable a job is retried (``FACECRAFT_JOB_MAX_ATTEMPTS``) after
``FACECRAFT_RETRY_AFTER_S``. A worker survives anything a job raises (an unexpected exception, a
``CancelledError`` that is not the worker's own cancellation): the job is retried or failed with
the reason, never left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.runner import PENDING_STATUSES, JobRunner, job_type_of, job_types, retry_delay_s
from facecraft.gateway.security import verify_image_bytes
from facecraft.gateway.service import PortraitService, new_job_id
from facecraft.gateway.settings import GatewaySettings
from facecraft.gateway.storage import INPUT_NAME, JobGone, JobRecord, JobStorage, extra_input_name
from facecraft.gateway.tasks import cancel_and_wait, current_task_is_cancelled
from facecraft.gateway.triton import PortraitRequest
from facecraft.gateway.video_jobs import check_video_upload

log = logging.getLogger("facecraft.gateway.jobs")


def busy_error(queued: int, settings: GatewaySettings) -> GatewayError:
    """503 ``server_busy`` for a full backlog (``FACECRAFT_MAX_QUEUED_JOBS``)."""
    return GatewayError(
        503,
        "server_busy",
        f"{queued} async jobs are already queued (limit {settings.max_queued_jobs}); "
        "retry after Retry-After seconds",
        headers={"Retry-After": str(settings.retry_after_s)},
    )


class JobBackend:
    """What both job backends share: accepting an upload as a queued job, cancel and delete.

    A backend implements :meth:`queued_count` (the backlog), :meth:`_enqueue` (hand a stored job to
    the queue), :meth:`_abort` (stop a running job), :meth:`start`, :meth:`stop` and
    :meth:`refresh_metrics`."""

    def __init__(
        self,
        settings: GatewaySettings,
        service: PortraitService,
        storage: JobStorage,
        metrics: GatewayMetrics,
    ):
        # the runner executes the jobs (both backends); the backend shares its parts
        self.runner = JobRunner(settings, service, storage, metrics)
        self.settings, self.service, self.storage, self.metrics = settings, service, storage, metrics
        self._setup()

    def _setup(self) -> None:
        """The backend's own state (called by ``__init__``)."""

    def _requeue_or_fail(self, record: JobRecord, note: str) -> str | None:
        """A queued or running async job that no queue holds (a restart, a lost broker entry): set
        back to ``queued`` with ``note`` when its input is still stored (``"requeued"``: enqueue
        it), else failed with the reason (``"failed"``). None when its status changed meanwhile
        (it is left as it is)."""
        stored = all(self.storage.file_path(record.job_id, name).is_file() for name in record.input_files())
        if record.kind == "async" and stored:
            record.status = "queued"
            record.note = note
            outcome = "requeued"
        else:
            record.status = "failed"
            record.error = "internal_error"
            record.error_message = f"{note}, but its input is no longer available"
            outcome = "failed"
        try:
            changed = self.storage.transition(record, PENDING_STATUSES)
        except JobGone:
            changed = False
        if not changed:
            return None
        self.metrics.jobs.labels(outcome).inc()
        return outcome

    async def queued_count(self) -> int:
        raise NotImplementedError

    async def _enqueue(self, record: JobRecord) -> None:
        raise NotImplementedError

    async def _abort(self, job_id: str) -> None:
        raise NotImplementedError

    async def refresh_metrics(self) -> None:
        """Set the queue gauges (depth, jobs by state, workers) before a ``/metrics`` scrape."""

    async def submit(
        self,
        image: bytes,
        request: PortraitRequest | None,
        filename: str | None,
        processors: tuple[str, ...] | None = None,
        processor_options: dict | None = None,
        video_output: str | None = None,
        extras: dict[str, bytes] | None = None,
    ) -> JobRecord:
        """Validate and persist an upload as a queued job; returns its record. With ``processors``
        (and their resolved ``processor_options``) the job runs that chain instead of the portrait;
        ``extras``: its other uploads by ensemble input (face_swapper's ``SOURCE``, an image),
        validated like the image and stored beside it (``source.bin``), so a restart re-runs the
        job with them. Every image is decoded once before anything is stored
        (:func:`~facecraft.gateway.security.verify_image_bytes`): a corrupt or truncated one is
        400 ``invalid_image`` now rather than a queued job that can only fail.

        A full queue (``FACECRAFT_MAX_QUEUED_JOBS``) refuses the job with 503 ``server_busy`` rather
        than letting the backlog, and the stored inputs behind it, grow without bound. A job the
        queue cannot take (the broker is down: 503 ``queue_unavailable``) is removed again: nothing
        half-accepted stays behind.
        """
        queued = await self.queued_count()
        if queued >= self.settings.max_queued_jobs:
            self.metrics.jobs.labels("rejected").inc()
            raise busy_error(queued, self.settings)
        # decoded once here, so that a corrupt or truncated image is refused now (400) rather than
        # queued as a job that can only fail; a video is probed below, while it is stored
        extras = extras or {}
        for data in ([image] if video_output is None else []) + list(extras.values()):
            await asyncio.to_thread(verify_image_bytes, data, self.settings.max_image_pixels)
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
            media="image" if video_output is None else "video",
            video_output=video_output,
            inputs={tensor: extra_input_name(tensor) for tensor in extras},
        )

        def persist() -> None:
            try:
                self.storage.write_file(record.job_id, INPUT_NAME, image)
                for tensor, data in extras.items():
                    self.storage.write_file(record.job_id, record.inputs[tensor], data)
                if video_output is not None:
                    source = self.storage.file_path(record.job_id, INPUT_NAME)
                    info = check_video_upload(source, self.settings)
                    record.progress = {"frames_done": 0, "frames_total": info["frames_total"]}
                self.storage.save(record)
            except GatewayError:
                self._discard(record.job_id)
                raise

        await asyncio.to_thread(persist)
        try:
            await self._enqueue(record)
        except BaseException:
            await asyncio.to_thread(self._discard, record.job_id)
            raise
        self.metrics.jobs.labels("submitted").inc()
        return record

    def _discard(self, job_id: str) -> None:
        with contextlib.suppress(GatewayError):
            self.storage.delete(job_id)

    async def cancel_or_delete(self, job_id: str) -> str:
        """``DELETE /api/v1/jobs/{id}``: a queued or running job is cancelled (kept, status
        ``cancelled``; a running one stops within seconds: the backend aborts it; with the broker
        down it runs to its end, and the runner drops its result), a finished one is deleted with
        its files. Returns ``"cancelled"`` or ``"deleted"``; 404 ``not_found``."""
        record = await asyncio.to_thread(self.storage.require, job_id)
        if record.status in PENDING_STATUSES:
            record.status = "cancelled"
            record.error = "job_cancelled"
            record.error_message = f"cancelled by DELETE /api/v1/jobs/{job_id}"
            try:
                cancelled = await asyncio.to_thread(self.storage.transition, record, PENDING_STATUSES)
            except JobGone:
                cancelled = False
            if cancelled:
                for name in record.input_files():
                    with contextlib.suppress(FileNotFoundError, GatewayError):
                        self.storage.file_path(job_id, name).unlink()
                self.metrics.jobs.labels("cancelled").inc()
                try:
                    await self._abort(job_id)
                except GatewayError as error:  # the broker is down: the job is cancelled all the same
                    log.warning(
                        "job %s: cancelled, but its worker could not be told to stop: %s", job_id, error
                    )
                return "cancelled"
        if not await asyncio.to_thread(self.storage.delete, job_id):
            raise GatewayError(404, "not_found", f"job {job_id} not found (unknown or expired)")
        return "deleted"


def create_job_backend(
    settings: GatewaySettings, service: PortraitService, storage: JobStorage, metrics: GatewayMetrics
) -> JobBackend:
    """The backend ``FACECRAFT_JOB_BACKEND`` names: ``local`` or a Redis URL."""
    if settings.job_backend == "local":
        return JobQueue(settings, service, storage, metrics)
    from facecraft.gateway.redis_jobs import RedisJobQueue

    return RedisJobQueue(settings, service, storage, metrics)


class JobQueue(JobBackend):
    """The in-process async job queue (``FACECRAFT_JOB_BACKEND=local``) and its worker tasks."""

    def _setup(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []
        self._retry_tasks: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # workers inside a job
        self._running: dict[str, asyncio.Task] = {}  # job id -> the attempt running it
        self._stopping = False

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def queued_count(self) -> int:
        return self._queue.qsize()

    async def _enqueue(self, record: JobRecord) -> None:
        self._put(record.job_id)

    def _put(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)
        self.metrics.job_queue_depth.set(self._queue.qsize())

    async def _abort(self, job_id: str) -> None:
        attempt = self._running.get(job_id)
        if attempt is not None:
            attempt.cancel()  # the Triton call itself is left to end (runner.shielded)

    async def refresh_metrics(self) -> None:
        self.metrics.job_queue_depth.set(self._queue.qsize())
        self.metrics.job_states.labels("queued").set(self._queue.qsize())
        self.metrics.job_states.labels("running").set(len(self._running))
        self.metrics.job_states.labels("retrying").set(len(self._retry_tasks))
        self.metrics.job_workers.set(len(self._workers))

    def recover(self) -> dict[str, int]:
        """Re-queue (or fail, with a reason) jobs a previous process left queued or running."""
        counts = {"requeued": 0, "failed": 0}
        pending = sorted(
            (record for record in self.storage.iter_records() if record.status in PENDING_STATUSES),
            key=lambda record: record.created_at,
        )
        for record in pending:
            outcome = self._requeue_or_fail(record, "re-queued after a gateway restart")
            if outcome == "requeued":
                self._put(record.job_id)
            if outcome is not None:
                counts[outcome] += 1
        if any(counts.values()):
            log.warning("job recovery after restart: %s", counts)
        return counts

    async def start(self) -> None:
        self._stopping = False
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

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self.metrics.job_queue_depth.set(self._queue.qsize())
            worker = asyncio.current_task()
            self._busy.add(worker)
            attempt = asyncio.create_task(self._attempt(job_id), name=f"facecraft-job-{job_id}")
            self._running[job_id] = attempt
            try:
                retry = await attempt
                if retry is not None:
                    self._schedule_retry(job_id)
            except asyncio.CancelledError:
                if current_task_is_cancelled():
                    raise  # stop(): the job stays running on disk and is re-queued at the next start
                stored = await asyncio.to_thread(self.storage.load, job_id)
                if stored is None or stored.status != "cancelled":  # not a DELETE: unexpected
                    log.error("job %s: its step was cancelled unexpectedly", job_id)
                    await self.runner.fail_crashed(job_id, "the job was cancelled unexpectedly")
            except TimeoutError as error:  # the job type's limit: tried again, as on the Redis backend
                log.warning("job %s: %s", job_id, error)
                self._schedule_retry(job_id)
            except Exception as error:  # a worker must survive any single job
                log.exception("job %s crashed the worker step", job_id)
                await self.runner.fail_crashed(job_id, f"the job crashed: {type(error).__name__}: {error}")
            finally:
                self._running.pop(job_id, None)
                self._busy.discard(worker)
                self._queue.task_done()
            if self._stopping:
                return  # stop() let this job finish; take no other

    async def _attempt(self, job_id: str):
        """One attempt of a job within its job type's timeout (``FACECRAFT_JOB_TIMEOUT_S`` for a
        portrait), as on the Redis backend; past it ``TimeoutError``: the job, still ``running``
        on disk, is run again, until the runner fails it after ``FACECRAFT_JOB_MAX_ATTEMPTS``."""
        record = await asyncio.to_thread(self.storage.load, job_id)
        job_type = "portrait" if record is None else job_type_of(record)
        limit = job_types(self.settings)[job_type].timeout_s
        try:
            return await asyncio.wait_for(self.runner.run(job_id), limit)
        except asyncio.TimeoutError:
            setting = "FACECRAFT_VIDEO_JOB_TIMEOUT_S" if job_type == "video" else "FACECRAFT_JOB_TIMEOUT_S"
            raise TimeoutError(f"the job ran longer than its {limit} s limit ({setting})") from None

    def _schedule_retry(self, job_id: str) -> None:
        """Put the job back after :func:`retry_delay_s` for the attempts it has had."""
        if self._stopping:
            return  # the job stays queued on disk: the next start re-queues it

        async def later() -> None:
            record = await asyncio.to_thread(self.storage.load, job_id)
            await asyncio.sleep(retry_delay_s(self.settings, record.attempts if record else 1))
            self._put(job_id)

        task = asyncio.create_task(later())
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)
