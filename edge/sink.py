"""The last stage of a frame (post-processing, tracking, JSON Lines, drawing) on its own thread.

``pomona run`` is a pipeline of three threads: the capture thread reads and letterboxes frame i+1 while the
main thread runs the model on frame i and this one finishes frame i-1. On a GPU (a Jetson) the three
overlap almost fully; on a small CPU they share the cores with ONNX Runtime's own threads, and whether the
thread pays off there is measured (benchmarks/latency/results.md), not assumed: ``threaded=False`` runs
each frame's last stage inline, in the caller's thread.

Frames are finished in the order they were put (one thread, one FIFO queue), so tracking and the JSONL
see the stream as it came. The queue is short: a frame waits at most ``depth`` frames for its outputs, and
a live camera's newest frame is never held back behind a backlog.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from pomona.machine import cpu_cores

_END = object()
# Whether the last stage gets its own thread, chosen by measurement (benchmarks/latency/results.md);
# POMONA_PIPELINE=0/1 overrides it on a machine where the other choice measures faster.
PIPELINE = True


def pipelined() -> bool:
    value = os.environ.get("POMONA_PIPELINE", "").strip()
    return PIPELINE if value == "" else value not in ("0", "false", "no")


def frames_at_once(live: bool) -> int:
    """How many frames to infer at the same time (each from its own thread, on its share of the cores).

    Files and videos: one per core. A frame's ONNX Runtime threads wait for each other at every layer; frames
    side by side never wait, so the cores stay busy (measured: benchmarks/latency/results.md). Live sources:
    one frame at a time on every core, because there the newest frame's latency counts, not throughput.
    POMONA_FRAMES_AT_ONCE overrides it. The Predictor keeps it at 1 where frames cannot share the device
    (a GPU, TensorRT, Ultralytics).
    """
    value = os.environ.get("POMONA_FRAMES_AT_ONCE", "").strip()
    if value:
        return max(1, int(value))
    return 1 if live else cpu_cores()


class Inference:
    """``infer(staged, image)``: the model on one frame, inline, or (``predictor.frames_at_once`` > 1) on a
    pool of threads, returning a future that :meth:`result_of` resolves in the sink, in put order."""

    def __init__(self, predictor):
        self.predictor = predictor
        k = predictor.frames_at_once if predictor.staged else 1
        self.pool = ThreadPoolExecutor(k, thread_name_prefix="pomona-infer") if k > 1 else None

    def __call__(self, staged, image):
        if not self.predictor.staged:  # Ultralytics: whole frames, one at a time
            return self.predictor(image)
        if self.pool is None:
            return self.predictor.infer(staged)
        return self.pool.submit(self.predictor.infer, staged)

    @staticmethod
    def result_of(result):
        return result.result() if isinstance(result, Future) else result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class FrameSink:
    """Calls ``finish(item)`` for every ``put(item)``, in order, on a worker thread (or inline).

    An error in ``finish`` (a full disk) stops the sink; the next ``put`` or ``close`` raises it in the
    caller's thread, so the run ends with that error as it would without the thread.
    """

    def __init__(self, finish: Callable[[object], None], threaded: bool = True, depth: int = 2):
        self._finish = finish
        self._error: BaseException | None = None
        self._thread = None
        if threaded:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="pomona-sink", daemon=True)
            self._thread.start()

    def put(self, item) -> None:
        if self._thread is None:
            self._finish(item)
            return
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, timeout: float = 30.0) -> None:
        """Finish what was put (at most ``depth`` frames), stop the thread, raise the error it met, if any."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join(timeout)
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            try:
                self._finish(item)
            except BaseException as e:  # raised again in the caller's thread (put / close)
                self._error = e
                return
