"""Frame sources: video file, image folder/file, USB camera, RTSP/HTTP stream, GStreamer pipeline.

Capture runs in its own thread. Files and folders deliver every frame in order (bounded queue);
an unreadable image in a folder (empty, truncated, not an image) is skipped and counted, not fatal;
live sources keep only the newest frame (a slow model never works on stale frames; overwritten
frames are counted as dropped) and reconnect a few times when the camera drops out, then fail
with a clear error. Every wait has a timeout, so nothing hangs.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from pomona.errors import PomonaError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SKIPPED_KEPT = 20  # names of skipped files kept for the summary; the count covers all of them
_END = object()


@dataclass
class Frame:
    index: int  # position in the source (live: capture counter, so gaps show dropped frames)
    timestamp: float  # seconds: video position for files, wall-clock epoch for live sources
    image: np.ndarray
    name: str  # file name for images, "frame_000123" otherwise
    capture_ms: float  # time spent reading/decoding this frame
    prepared: object = None  # what the source's ``prepare`` made of the image (the model's input), if it has one


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc -> BGR appsink, newest frame only)."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            f"appsink drop=true max-buffers=1 sync=false")


def read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """``(BGR image, "")``, or ``(None, why)`` for a file that is not a whole, decodable image."""
    try:
        data = path.read_bytes()
    except OSError as e:  # vanished, unreadable, a directory named like an image
        return None, e.strerror or str(e)
    if not data:
        return None, "empty file"
    if _truncated(data):
        return None, "truncated"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return (image, "") if image is not None else (None, "not a decodable image")


def _truncated(data: bytes) -> bool:
    """A cut-off JPEG still decodes (libjpeg pads it with gray and only warns), so look for its end ourselves."""
    if data[:2] == b"\xff\xd8":  # JPEG: the end-of-image marker must follow the last start-of-scan marker
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")  # entropy-coded data never holds either
    if data[:8] == b"\x89PNG\r\n\x1a\n":  # PNG: the IEND chunk (constant CRC) closes every whole file
        return data.rfind(b"IEND\xaeB`\x82") < 0
    return False


def classify(spec: str) -> str:
    """camera | stream | gstreamer | folder | image | video."""
    s = str(spec).strip()
    if re.fullmatch(r"\d+", s) or s.startswith("csi://") or re.fullmatch(r"/dev/video\d+", s):
        return "camera"
    if "!" in s:
        return "gstreamer"
    if re.match(r"^(rtsp|rtmp|http|https|udp|tcp)://", s, re.I):
        return "stream"
    p = Path(s)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "video"


LIVE_KINDS = ("camera", "stream", "gstreamer")


def is_live(spec: str, live: bool | None = None, opener: Callable[[], object] | None = None) -> bool:
    """Whether ``spec`` is a live source (newest frame only), as FrameSource will decide it."""
    if live is not None:
        return bool(live)
    return opener is None and classify(spec) in LIVE_KINDS


def open_capture(spec: str, kind: str):
    """An opened cv2.VideoCapture for a live or video source, or PomonaError."""
    s = str(spec).strip()
    log = getattr(getattr(cv2, "utils", None), "logging", None)  # OpenCV prints its own failed-open noise;
    level = log.getLogLevel() if log else None                    # we raise one clear line instead
    if log:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return _open_capture(s, kind)
    finally:
        if log:
            log.setLogLevel(level)


def _open_capture(s: str, kind: str):
    if kind == "camera":
        if s.startswith("csi://"):
            cap = cv2.VideoCapture(csi_pipeline(int(s[6:] or 0)), cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(int(re.sub(r"\D", "", s)))
    elif kind == "gstreamer":
        cap = cv2.VideoCapture(s, cv2.CAP_GSTREAMER)
    elif kind == "stream":  # bounded open/read waits: a dead RTSP server must not hang us
        cap = cv2.VideoCapture(s, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                   cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    else:
        if not Path(s).is_file():
            raise PomonaError(f"source not found: {s}")
        # FFmpeg decodes in the capture thread alone: its own decoder threads cost more CPU than they saved while
        # the model keeps the cores busy (measured on 2 cores: 49 -> 45 ms of CPU per frame for all of
        # `pomona run`). Formats FFmpeg cannot open still get OpenCV's other backends.
        cap = cv2.VideoCapture(s, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not cap.isOpened():
            cap.release()
            cap = cv2.VideoCapture(s)
    if not cap.isOpened():
        cap.release()
        raise PomonaError(f"cannot open source {s!r} ({kind})")
    return cap


class FrameSource:
    """Iterate frames from ``spec``; ``dropped`` counts live frames replaced before they were used."""

    def __init__(self, spec: str, opener: Callable[[], object] | None = None, live: bool | None = None,
                 retries: int = 5, retry_delay: float = 0.5, frame_timeout: float = 10.0, queue_size: int = 8,
                 prepare: Callable[[np.ndarray], object] | None = None):
        self.spec = str(spec)
        # prepare(image) -> Frame.prepared: files and folders run it in the capture thread, beside the model (the
        # frame after the one being inferred gets letterboxed meanwhile); live sources run it when a frame is
        # taken, so the frames dropped as stale cost nothing
        self._prepare = prepare
        self.kind = "custom" if opener is not None else classify(self.spec)
        self.live = is_live(self.spec, live, opener)
        self.retries, self.retry_delay, self.frame_timeout = retries, retry_delay, frame_timeout
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0  # unreadable images passed over (folders)
        self.skipped_files: list[tuple[str, str]] = []  # (name, why) of the first SKIPPED_KEPT of them
        self.fps = 0.0
        self._opener = opener or (lambda: open_capture(self.spec, self.kind))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._latest: Frame | None = None
        self._latest_taken = True
        self._cond = threading.Condition()
        self._done = False
        self._images: list[Path] = []
        self._cap = None
        self._alive = time.monotonic()  # when the capture thread last came back from a read or an open
        if self.kind in ("folder", "image"):
            self._images = self._list_images()
        else:
            self._cap = self._opener()  # fail fast, in the caller's thread, if it does not open
            self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) if hasattr(self._cap, "get") else 0.0
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.spec}", daemon=True)
        self._thread.start()

    def _list_images(self) -> list[Path]:
        p = Path(self.spec)
        if self.kind == "image":
            if not p.is_file():
                raise PomonaError(f"source not found: {p}")
            return [p]
        images = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        if not images:
            raise PomonaError(f"no images in source folder {p}")
        return images

    # --- producer ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._images:
                self._produce_images()
            elif self.live:
                self._produce_live()
            else:
                self._produce_video()
        except BaseException as e:  # handed to the consumer, raised there
            self._error = e
        finally:
            self._finish()
            if self._stop.is_set():  # close() left the capture to us (see there): release it from this thread
                self._release()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce_images(self) -> None:
        delivered = 0
        for i, path in enumerate(self._images):  # i stays the position in the folder: skips leave gaps
            t0 = time.perf_counter()
            image, why = read_image(path)
            ms = (time.perf_counter() - t0) * 1e3
            if image is None:  # one bad file (a camera cut off mid-write) must not end a field run
                self._skip(path, why)
                continue
            if not self._put(self._prepared(Frame(i, float(i), image, path.name, ms))):
                return
            delivered += 1
        if not delivered:
            self._fail_unreadable()

    def _prepared(self, frame: Frame) -> Frame:
        if self._prepare is not None:
            frame.prepared = self._prepare(frame.image)
        return frame

    def _skip(self, path: Path, why: str) -> None:
        if len(self.skipped_files) < SKIPPED_KEPT:
            self.skipped_files.append((path.name, why))
        self.skipped += 1  # after the name: a reader that sees the count also sees the name

    def _fail_unreadable(self) -> None:
        """Nothing readable at all is a wrong source, not bad luck: one clear error."""
        name, why = self.skipped_files[0]
        if self.kind == "image":
            raise PomonaError(f"cannot read image {self.spec}: {why}")
        more = f" (and {self.skipped - 1} more)" if self.skipped > 1 else ""
        raise PomonaError(f"none of the {self.skipped} images in {self.spec} could be read: {name}: {why}{more}")

    def _produce_video(self) -> None:
        i = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok, image = self._cap.read()
            ms = (time.perf_counter() - t0) * 1e3
            if not ok or image is None:
                return  # end of file
            pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if hasattr(self._cap, "get") else 0.0
            ts = pos if pos > 0 else (i / self.fps if self.fps > 0 else float(i))
            if not self._put(self._prepared(Frame(i, ts, image, f"frame_{i:06d}", ms))):
                return
            i += 1

    def _produce_live(self) -> None:
        i = 0
        failures = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok, image = self._cap.read() if self._cap is not None else (False, None)
            ms = (time.perf_counter() - t0) * 1e3
            self._alive = time.monotonic()
            if ok and image is not None:
                failures = 0
                with self._cond:
                    if not self._latest_taken:
                        self.dropped += 1
                    self._latest = Frame(i, time.time(), image, f"frame_{i:06d}", ms)
                    self._latest_taken = False
                    self._cond.notify_all()
                i += 1
                continue
            # camera dropped out: reopen with back-off, a bounded number of times
            failures += 1
            if failures > self.retries:
                raise PomonaError(f"live source {self.spec!r} stopped delivering frames; gave up after "
                                  f"{self.retries} reconnect attempts")
            self._release()
            if self._stop.wait(self.retry_delay * failures):
                return
            try:
                self._cap = self._opener()
                self.reconnects += 1
            except PomonaError:
                self._cap = None
            self._alive = time.monotonic()

    def _finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()
        if not self.live:
            self._put(_END) if not self._stop.is_set() else None

    def _release(self) -> None:
        if self._cap is not None and hasattr(self._cap, "release"):
            try:
                self._cap.release()
            except Exception:
                pass
        self._cap = None

    # --- consumer ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        return self._iter_live() if self.live else self._iter_ordered()

    def _iter_ordered(self) -> Iterator[Frame]:
        while True:
            try:
                item = self._queue.get(timeout=self.frame_timeout)
            except queue.Empty:
                raise PomonaError(f"source {self.spec!r} delivered no frame for {self.frame_timeout:.0f} s") from None
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def _iter_live(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                since = time.monotonic()
                while self._latest_taken and not self._done:
                    # While the capture thread keeps coming back from reads and reopens, it is working through
                    # an outage whose length its own retries bound (each RTSP open or read gives up after 5 s):
                    # wait for it. Timing out on the last frame instead cut those retries short (a stream
                    # stalled for 20 s ended the run, reconnect attempts unused). Only a thread stuck inside
                    # one call for frame_timeout is given up on here.
                    left = max(since, self._alive) + self.frame_timeout - time.monotonic()
                    if left <= 0:
                        raise PomonaError(f"live source {self.spec!r} delivered no frame for {self.frame_timeout:.0f} s")
                    self._cond.wait(min(left, 0.1))
                if self._latest_taken and self._done:
                    if self._error is not None:
                        raise self._error
                    return
                frame, self._latest_taken = self._latest, True
            yield self._prepared(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._release()
        # else the capture thread is still inside a read or an open (a stalled stream: up to 5 s). Releasing
        # the capture under it crashed the process with a segfault when that read returned (Ctrl-C or SIGTERM
        # during a stall); the thread releases it itself on its way out (_run's finally).

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(spec: str | int, **kwargs) -> FrameSource:
    return FrameSource(str(spec), **kwargs)
