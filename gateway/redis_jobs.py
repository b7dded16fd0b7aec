"""The Redis job backend (``FACECRAFT_JOB_BACKEND=redis://…``): a shared SAQ queue.

Gateways enqueue, ``facecraft worker`` processes (any number, any machine) run the jobs with the
same :class:`facecraft.gateway.runner.JobRunner` as the local queue. What lives where:

- **Redis** holds only the queue: one small SAQ job per async job (its id is the job id, so
  enqueueing is idempotent), with its timeout, heartbeat, retries and backoff.
- **``OUTPUT_DIR``**, a volume every gateway and worker mounts, holds the job records, inputs and
  results (``facecraft.gateway.storage``): any gateway answers for any job, a gateway that dies
  loses nothing, and results are limited by the volume, not by Redis memory.

Delivery is at-least-once: a worker killed mid-job stops heartbeating, the other workers' sweep
(``FACECRAFT_JOB_SWEEP_S``) hands the job to another one after ``FACECRAFT_JOB_HEARTBEAT_S``; the
runner's status transitions make a second delivery harmless. A job retried while Triton is down
waits with SAQ's exponential backoff (``FACECRAFT_RETRY_AFTER_S`` doubled per attempt, jittered,
at most :data:`MAX_RETRY_DELAY_S`). Every gateway reconciles disk with the queue at start and
every sweep interval: a queued or running record whose SAQ job is missing or finished (the broker
lost it, the gateway died between storing and enqueueing) is enqueued again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pydantic import ValidationError
from redis.exceptions import RedisError
from saq import Queue, Worker
from saq.job import TERMINAL_STATUSES

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.jobs import JobBackend
from facecraft.gateway.metrics import GatewayMetrics
from facecraft.gateway.runner import MAX_RETRY_DELAY_S, PENDING_STATUSES, JobRunner, job_type_of, job_types
from facecraft.gateway.service import PortraitService
from facecraft.gateway.settings import GatewaySettings, describe_settings_error
from facecraft.gateway.storage import JobRecord, JobStorage
from facecraft.gateway.tasks import cancel_and_wait
from facecraft.gateway.triton import TritonGateway

log = logging.getLogger("facecraft.gateway.redis_jobs")

QUEUE_NAME = "facecraft"
JOB_FUNCTION = "facecraft_job"
ABORT_POLL_S = 1  # a worker checks this often for cancelled (DELETE) jobs


def broker_error(error: Exception, settings: GatewaySettings) -> GatewayError:
    """503 ``queue_unavailable`` with ``Retry-After``: the broker could not be reached."""
    return GatewayError(
        503,
        "queue_unavailable",
        f"the job queue cannot be reached: {type(error).__name__}: {error}",
        headers={"Retry-After": str(settings.retry_after_s)},
    )


def make_queue(settings: GatewaySettings) -> Queue:
    return Queue.from_url(settings.job_backend, name=QUEUE_NAME)


async def disconnect(queue: Queue) -> None:
    """Close the queue's connections; a broker that is down meanwhile is no error at shutdown."""
    try:
        await queue.disconnect()
    except Exception as error:
        log.warning("closing the job queue's connections: %s", error)


class RetryLater(Exception):
    """Raised to SAQ by a job whose attempt ended with a retryable error (SAQ retries it)."""


class RedisJobQueue(JobBackend):
    """The gateway's side of the Redis backend: enqueue, cancel, reconcile, queue metrics."""

    def _setup(self) -> None:
        self.queue = make_queue(self.settings)
        self._reconciler: asyncio.Task | None = None

    async def start(self) -> None:
        await self.queue.connect()
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="facecraft-job-reconcile")

    async def stop(self) -> None:
        await cancel_and_wait(lambda: [self._reconciler] if self._reconciler else [])
        await disconnect(self.queue)

    async def _broker(self, call):
        """Await a queue call; a broker that cannot be reached is 503 ``queue_unavailable``."""
        try:
            return await call
        except (RedisError, OSError) as error:
            raise broker_error(error, self.settings) from error

    async def queued_count(self) -> int:
        return await self._broker(self.queue.count("queued"))

    async def _enqueue(self, record: JobRecord) -> None:
        limits = job_types(self.settings)[job_type_of(record)]
        await self._broker(
            self.queue.enqueue(
                JOB_FUNCTION,
                key=record.job_id,
                job_id=record.job_id,
                timeout=limits.timeout_s,
                heartbeat=limits.heartbeat_s,
                # one more than the runner's own limit: the runner records the failure itself
                retries=self.settings.job_max_attempts + 1,
                retry_delay=float(self.settings.retry_after_s),
                retry_backoff=MAX_RETRY_DELAY_S,
                ttl=int(self.settings.cleanup_age_s),
            )
        )

    async def _abort(self, job_id: str) -> None:
        job = await self._broker(self.queue.job(job_id))
        if job is not None and job.status not in TERMINAL_STATUSES:
            await self._broker(self.queue.abort(job, "cancelled"))

    async def refresh_metrics(self) -> None:
        try:
            info = await self.queue.info()
        except Exception as error:  # a scrape must not fail because the broker is down
            log.warning("queue metrics unavailable: %s", error)
            return
        self.metrics.job_queue_depth.set(info["queued"])
        self.metrics.job_states.labels("queued").set(info["queued"])
        self.metrics.job_states.labels("running").set(info["active"])
        self.metrics.job_states.labels("retrying").set(info["scheduled"])
        self.metrics.job_workers.set(len(info["workers"]))

    async def reconcile(self) -> dict[str, int]:
        """Enqueue again every queued or running async job the queue does not hold (any more);
        fail, with the reason, those whose input is gone. Idempotent (the job id is the key)."""
        counts = {"requeued": 0, "failed": 0}
        records = await asyncio.to_thread(
            lambda: [
                r for r in self.storage.iter_records() if r.kind == "async" and r.status in PENDING_STATUSES
            ]
        )
        for record in records:
            job = await self._broker(self.queue.job(record.job_id))
            if job is not None and job.status not in TERMINAL_STATUSES:
                continue
            current = await asyncio.to_thread(self.storage.load, record.job_id)
            if current is None or current.status not in PENDING_STATUSES:
                continue  # finished meanwhile
            note = "re-queued: the job queue had lost it"
            outcome = await asyncio.to_thread(self._requeue_or_fail, current, note)
            if outcome == "requeued":
                await self._enqueue(current)
            if outcome is not None:
                counts[outcome] += 1
        if any(counts.values()):
            log.warning("job reconciliation with the queue: %s", counts)
        return counts

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as error:
                log.warning("job reconciliation failed: %s", error)
            await asyncio.sleep(self.settings.job_sweep_s)


# --------------------------------------------------------------------------- the worker


async def run_job(ctx: dict, *, job_id: str) -> None:
    """The SAQ job function: one attempt of ``job_id`` by the worker's :class:`JobRunner`, with a
    heartbeat every third of the job's heartbeat interval while it runs."""
    runner: JobRunner = ctx["runner"]
    job = ctx["job"]
    interval = max(job.heartbeat / 3.0, 0.5) if job.heartbeat else None

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job.update()
            except Exception as error:  # the broker is down: the attempt goes on
                log.warning("job %s: heartbeat failed: %s", job_id, error)

    beating = asyncio.create_task(beat()) if interval else None
    try:
        retry = await runner.run(job_id)
    finally:
        if beating is not None:
            await cancel_and_wait(lambda: [beating])
    if retry is not None:
        raise RetryLater(f"{retry.error}: {retry.message}")


def build_worker(settings: GatewaySettings, name: str | None = None) -> Worker:
    """A SAQ worker over ``settings.job_backend`` running ``FACECRAFT_JOB_WORKERS`` jobs at once."""
    metrics = GatewayMetrics()
    storage = JobStorage(settings.output_dir)
    triton = TritonGateway(
        settings.triton_url,
        settings.triton_timeout_s,
        settings.retry_after_s,
        recover_stubs=settings.recover_unhealthy_stubs,
        on_recovery=metrics.count_stub_recovery,
    )
    service = PortraitService(settings, triton, storage, metrics)
    runner = JobRunner(settings, service, storage, metrics, name=name)

    async def startup(ctx: dict) -> None:
        storage.ensure_ready()
        ctx["runner"] = runner
        if settings.worker_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.worker_metrics_port, addr=settings.host, registry=metrics.registry)

    async def shutdown(_ctx: dict) -> None:
        await triton.close()

    worker = Worker(
        make_queue(settings),
        functions=[(JOB_FUNCTION, run_job)],
        id=runner.name,
        concurrency=settings.job_workers,
        startup=startup,
        shutdown=shutdown,
        timers={"sweep": int(settings.job_sweep_s), "abort": ABORT_POLL_S},
        shutdown_grace_period_s=int(settings.shutdown_grace_s),
        metadata={"facecraft_worker": runner.name},
    )
    worker.runner = runner
    return worker


async def serve_worker(settings: GatewaySettings) -> None:
    """Run a worker until SIGINT/SIGTERM (SAQ's handlers): running jobs get
    ``FACECRAFT_SHUTDOWN_GRACE_S`` to finish, then go back to the queue."""
    worker = build_worker(settings)
    await worker.queue.connect()
    try:
        await worker.start()
    finally:
        await disconnect(worker.queue)


def run_worker_command(args: argparse.Namespace) -> int:
    """Run a worker with the settings of ``args`` (:func:`facecraft.gateway.cli.add_worker_arguments`)
    over ``FACECRAFT_*``; 2 for bad settings or a backend that is not Redis."""
    overrides = {
        key: value
        for key, value in {
            "job_backend": args.jobs,
            "triton_url": args.triton_url,
            "job_workers": args.concurrency,
            "worker_metrics_port": args.metrics_port,
        }.items()
        if value is not None
    }
    try:
        settings = GatewaySettings(**overrides)
    except ValidationError as error:
        print(f"facecraft worker: error: {describe_settings_error(error)}", file=sys.stderr)
        return 2
    if not settings.uses_redis:
        print(
            "facecraft worker: error: FACECRAFT_JOB_BACKEND (or --jobs) must be a Redis URL; "
            "with the local backend the gateway runs its jobs itself",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve_worker(settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m facecraft.gateway.redis_jobs``: the same as ``facecraft worker``."""
    from facecraft.gateway.cli import WORKER_DESCRIPTION, add_worker_arguments

    parser = argparse.ArgumentParser(prog="facecraft worker", description=WORKER_DESCRIPTION)
    add_worker_arguments(parser)
    return run_worker_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
