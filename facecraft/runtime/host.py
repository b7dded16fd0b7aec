"""Facts about the host that several parts report (the benchmark's machine block, ``GET /api/v1/system``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's name: ``/proc/cpuinfo`` "model name", else ``platform.processor()``, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def usable_cores() -> int | None:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
