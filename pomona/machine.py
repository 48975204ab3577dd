"""Facts about the machine pomona runs on."""

from __future__ import annotations

import os


def cpu_cores() -> int:
    """Cores this process may use (its CPU affinity, e.g. a container's limit), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1
