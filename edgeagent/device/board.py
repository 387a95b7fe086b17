"""The board this runs on, as ``edgeagent run --check`` names it.

    board_line()  # 'board: Raspberry Pi 5 Model B Rev 1.0 (aarch64, 4 cores)'

A Raspberry Pi or a Jetson names itself in its device tree, ``/proc/device-tree/model`` (one
NUL-terminated string); a PC has no device tree, and the line then says so. The cores are the
ones this process may use, the count the stages' thread defaults are taken from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: Where a device-tree kernel (a Pi, a Jetson) gives the board's model name.
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def board_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The model in ``path`` (up to its first NUL, whitespace stripped), None without one."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    model = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return model or None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under taskset or a cgroup), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def board_line(path: Path = DEVICE_TREE_MODEL) -> str:
    """``board: MODEL (MACHINE, N cores)``; without a device tree, ``board: no ... (MACHINE, ...)``."""
    model = board_model(path)
    where = f"{platform.machine() or 'unknown machine'}, {usable_cores()} cores"
    if model is None:
        return f"board: no {path} ({where})"
    return f"board: {model} ({where})"
