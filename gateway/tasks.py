"""Cancelling the gateway's own asyncio tasks reliably.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives while its inner call is
finishing (CPython gh-86296, fixed in 3.12): the task goes on as if never cancelled, e.g. a job
worker back at ``queue.get()``, and whoever awaits it after ``cancel()`` waits forever (seen as a
gateway shutdown that hung with a Triton call failing at that moment). :func:`cancel_and_wait`
cancels again until the task is really done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

RECANCEL_EVERY_S = 0.5


def current_task_is_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not merely handed a CancelledError).

    ``grpc.aio`` raises ``CancelledError`` in calls whose channel was closed; only a cancellation
    of the calling task (shutdown, a client gone, an outer timeout) must propagate as such. Python
    3.10 cannot tell the two apart, so there every CancelledError counts as a real cancellation.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


async def cancel_and_wait(tasks: Callable[[], Iterable[asyncio.Task]]) -> None:
    """Cancel every task ``tasks()`` returns and wait until all are done, cancelling again every
    :data:`RECANCEL_EVERY_S` those that swallowed the request. ``tasks`` is called on every round,
    so tasks created meanwhile (a retry timer scheduled by a job cut off) are stopped too."""
    while pending := [task for task in tasks() if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_EVERY_S)
