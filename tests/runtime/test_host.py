import os
from pathlib import Path

from facecraft.runtime.host import cpu_model, usable_cores


def test_cpu_model_is_the_cpuinfo_model_name():
    names = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    assert cpu_model() == (names[0] if names else cpu_model())
    assert cpu_model()


def test_usable_cores_is_the_affinity():
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1
