"""The gateway package's subcommand: ``facecraft worker`` (the Redis job backend's worker).

Light on purpose (argparse only): the worker's imports happen when it runs.
"""

from __future__ import annotations

import argparse

WORKER_DESCRIPTION = (
    "A worker of the Redis job backend: takes jobs from the shared queue, runs them against Triton "
    "and writes the results to OUTPUT_DIR, shared with the gateways. Any number, on any machine. "
    "Settings: FACECRAFT_* as for the gateway (docs/deploy.md); a flag overrides its variable."
)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", help="the Redis URL (default $FACECRAFT_JOB_BACKEND)")
    parser.add_argument("--triton-url", help="Triton gRPC host:port (default $FACECRAFT_TRITON_URL)")
    parser.add_argument("--concurrency", type=int, help="jobs at once (default $FACECRAFT_JOB_WORKERS)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (default $FACECRAFT_WORKER_METRICS_PORT, 0: none)",
    )


def register(subparsers) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run async jobs from the shared Redis queue (FACECRAFT_JOB_BACKEND=redis://...)",
        description=WORKER_DESCRIPTION,
    )
    add_worker_arguments(worker)
    worker.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from facecraft.gateway.redis_jobs import run_worker_command

    return run_worker_command(args)
