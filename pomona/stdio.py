"""Keep stdout clean for machine-readable output (``--json``)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Send everything written to stdout (libraries' logs and progress, even from C code) to stderr.

    Ultralytics logs to a handler bound to the stdout stream at import time, so redirecting
    ``sys.stdout`` is not enough: the file descriptor itself is pointed at stderr for the block.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
