"""Host facts for ``GET /api/v1/system``: CPU, memory, load, GPUs (NVML), disk, instance plan.

Pure functions over the host (``/proc/cpuinfo``, ``psutil``, ``os.getloadavg``, ``shutil``) and
the served repository's configs; NVML through ``pynvml`` (the ``nvidia-ml-py`` package, the
``nvml`` extra) when it is installed and finds a driver, else an empty GPU list and a note saying why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from facecraft.runtime.host import cpu_model, usable_cores


def cpu_info() -> dict:
    """``model`` (``/proc/cpuinfo`` "model name", else ``platform.processor()``), ``logical_cores``,
    ``physical_cores`` (psutil, None when unknown) and ``usable_cores`` (this process's affinity)."""
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return {
        "model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable_cores(),
    }


def memory_info() -> dict:
    """``total_bytes`` / ``available_bytes`` of RAM (psutil); empty when psutil is missing."""
    try:
        import psutil
    except ImportError:
        return {}
    memory = psutil.virtual_memory()
    return {"total_bytes": memory.total, "available_bytes": memory.available, "used_percent": memory.percent}


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpu_info() -> tuple[list[dict], str | None]:
    """(GPUs via NVML: index, name, memory total/used bytes, utilisation %), note or None."""
    try:
        import pynvml
    except ImportError:
        return [], "pynvml (nvidia-ml-py, the `nvml` extra) is not installed: GPUs are not listed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return [], f"NVML is unavailable: {error}"
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation = pynvml.nvmlDeviceGetUtilizationRates(handle)
            gpus.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_total_bytes": int(memory.total),
                    "memory_used_bytes": int(memory.used),
                    "utilization_percent": int(utilisation.gpu),
                }
            )
        return gpus, None if gpus else "NVML found no GPU"
    except pynvml.NVMLError as error:
        return [], f"NVML failed: {error}"
    finally:
        pynvml.nvmlShutdown()


def disk_info(folder: Path) -> dict:
    """Free and total bytes of the file system holding ``folder`` (its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return {"path": str(folder), "free_bytes": usage.free, "total_bytes": usage.total}


def instance_plan(repository: Path | None) -> list[dict]:
    """Per non-ensemble model of the served repository: instance kind × count, ONNX threads and
    max batch size, from its ``config.pbtxt`` (the plan ``facecraft serve`` wrote, docs/runtime.md)."""
    if repository is None or not Path(repository).is_dir():
        return []
    from facecraft.runtime.model_config import ConfigEditError, ModelInstanceGroup, load_config

    plan = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = load_config(path)
        except (OSError, ConfigEditError):
            continue
        if config.platform == "ensemble":
            continue
        threads = config.parameters.get("intra_op_thread_count")
        plan.append(
            {
                "model": path.parent.name,
                "instances": [
                    {"kind": ModelInstanceGroup.Kind.Name(group.kind), "count": group.count or 1}
                    for group in config.instance_group
                ],
                "onnx_threads": int(threads.string_value)
                if threads and threads.string_value.isdigit()
                else None,
                "max_batch_size": config.max_batch_size,
            }
        )
    return plan
