"""Temporary files of interrupted writes: ``.<final name>.<pid>.<suffix>`` next to the final file.

Every write in the exporter goes through such a file and an atomic rename, and removes it on any
error; only a hard kill (SIGKILL, power loss) can leave one behind. ``remove_stale`` deletes those
whose writer process no longer exists, so a killed export does not leave hundreds of MB behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def temporary_path(final: Path, suffix: str) -> Path:
    """``final``'s temporary sibling for this process: ``.<name>.<pid>.<suffix>``."""
    return final.with_name(f".{final.name}.{os.getpid()}.{suffix}")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(final: Path, suffix: str) -> list[Path]:
    """Delete ``final``'s temporaries (any pid) whose process is gone; returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(\d+)\.{re.escape(suffix)}")
    removed = []
    if not final.parent.is_dir():
        return removed
    for path in final.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) != os.getpid() and not _process_exists(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
