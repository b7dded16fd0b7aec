"""Load generation for the benchmark: N concurrent callers, a bounded number of requests, latencies."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from facecraft.client.errors import FacecraftError


@dataclass
class LoadResult:
    """Outcome of one scenario run: wall time, per-request latencies (s) of successes, errors."""

    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def summary(self) -> dict:
        """images/s (successful requests / wall time) and latency percentiles in ms."""
        latencies = np.array(self.latencies_s, dtype=np.float64) * 1000.0
        percentiles = (
            {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)} if latencies.size else {}
        )
        return {
            "requests": self.ok + len(self.errors),
            "ok": self.ok,
            "failed": len(self.errors),
            "wall_s": self.wall_s,
            "images_per_s": self.ok / self.wall_s if self.wall_s > 0 else 0.0,
            "latency_ms": {**percentiles, "mean": float(latencies.mean()) if latencies.size else None},
            "errors": sorted(set(self.errors))[:5],
        }


async def run_async_load(
    call: Callable[[bytes, str], Awaitable[object]],
    photos: list[tuple[str, bytes]],
    *,
    requests: int,
    concurrency: int,
    on_request: Callable[[], None] | None = None,
) -> LoadResult:
    """Issue ``requests`` calls over ``photos`` (round-robin) with ``concurrency`` workers."""
    order = itertools.cycle(photos)
    remaining = requests
    result = LoadResult(wall_s=0.0)

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            name, data = next(order)
            started = time.perf_counter()
            try:
                await call(data, name)
                result.latencies_s.append(time.perf_counter() - started)
            except FacecraftError as error:
                result.errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            if on_request:
                on_request()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


def run_sequential_load(
    call: Callable[[bytes, str], object],
    photos: list[tuple[str, bytes]],
    *,
    requests: int,
    on_request: Callable[[], None] | None = None,
) -> LoadResult:
    """``requests`` calls one after the other in this thread (concurrency 1)."""
    order = itertools.cycle(photos)
    result = LoadResult(wall_s=0.0)
    started_all = time.perf_counter()
    for _ in range(requests):
        name, data = next(order)
        started = time.perf_counter()
        try:
            call(data, name)
            result.latencies_s.append(time.perf_counter() - started)
        except FacecraftError as error:
            result.errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        if on_request:
            on_request()
    result.wall_s = time.perf_counter() - started_all
    return result
