"""``pomona run``: model + source -> annotated video/images, JSON Lines, live FPS, optional tracking."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pomona.edge.draw import draw_instances
from pomona.edge.predictor import Predictor
from pomona.edge.records import frame_record
from pomona.edge.sink import FrameSink, Inference, frames_at_once, pipelined
from pomona.edge.sources import FrameSource, is_live
from pomona.errors import PomonaError
from pomona.instances import Instances

MAX_SIDE = 4096  # larger frames are scaled down first: full-resolution masks of a 50 MP frame would not fit in memory


class _JsonlWriter:
    """JSON Lines that hold only complete lines, whatever stops the run (Ctrl-C, SIGTERM, SIGKILL, full disk).

    Each record is encoded whole and handed to the kernel in one ``os.write`` on an O_APPEND descriptor,
    so there is no user-space buffer to lose or to flush half of. A short write (the disk filled
    mid-line) is cut back off the file at once. Only a SIGKILL that lands inside that one write call,
    between two pages, can still tear the last line; nothing in user space can prevent that.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        except OSError as e:
            raise _write_error(path, e) from None
        self.size = 0  # bytes of complete lines in the file: where a torn line gets cut back to

    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        done = 0
        try:
            while done < len(line):  # one call, unless the disk fills mid-line (then the next one fails)
                n = os.write(self.fd, line[done:])
                if n == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as e:
            os.ftruncate(self.fd, self.size)  # whole lines or nothing: frames already written stay valid
            raise _write_error(self.path, e) from None
        self.size += done

    def close(self, failed: bool = False) -> None:
        """Closed with whole lines only; a run that ``failed`` before its first line leaves no file at all (an
        empty JSONL would read as a run that saw no frames)."""
        try:  # an interrupt between os.write and the bookkeeping above may leave a torn tail: cut it
            end = os.fstat(self.fd).st_size
            if end > self.size:
                tail = os.pread(self.fd, end - self.size, self.size)
                os.ftruncate(self.fd, self.size + tail.rfind(b"\n") + 1)
        except OSError:
            pass  # best effort: closing must not mask the error that ended the run
        finally:
            os.close(self.fd)
        if failed and self.size == 0:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _write_error(path: Path, e: OSError) -> PomonaError:
    """A full disk is the field failure worth its own words; anything else keeps the OS's."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return PomonaError(f"disk full writing {path}")
    return PomonaError(f"cannot write {path}: {e.strerror or e}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stop, docker stop, a supervisor) delivered as the interrupt Ctrl-C already is."""


@contextlib.contextmanager
def _sigterm_ends_run() -> Iterator[list[str]]:
    """While the run loops, SIGTERM stops it the way Ctrl-C does (outputs closed, summary returned)
    instead of killing it mid-frame. Yields a list that names the signal once one arrived.

    Only the main thread may set handlers; a run in another thread keeps the default (process dies,
    JSONL still whole lines). A second SIGTERM during the clean-up is ignored, not a second interrupt.
    """
    got: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        if not got:
            got.append("SIGTERM")
            raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """While frames run, the objects that exist before the loop (imports, the model, the session) are frozen
    out of the garbage collector: the full collections that otherwise walk all of them every few hundred
    frames were the p99 of model + post-processing (benchmarks/latency/results.md). Per-frame objects are
    still freed by reference counting and collected as usual."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def opencv_in_one_thread() -> Iterator[None]:
    """While frames run, OpenCV calls stay in the thread that makes them: its worker threads only paid off on
    large images, and each frame's small warps and resizes (a few hundred µs each) ran slower with them
    while ONNX Runtime's threads wanted the same cores. The stages overlap through pomona's own threads."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class _FpsMeter:
    def __init__(self, every_s: float = 1.0):
        self.every, self.t_last, self.n_last, self.fps = every_s, time.perf_counter(), 0, 0.0

    def tick(self, n: int) -> bool:
        now = time.perf_counter()
        if now - self.t_last < self.every:
            return False
        self.fps = (n - self.n_last) / (now - self.t_last)
        self.t_last, self.n_last = now, n
        return True


class _AnnotatedOutput:
    """Annotated frames into ``out``: one .mp4 (``save_video``) or one image per frame."""

    def __init__(self, out: Path, save_video: bool, source: str, fps: float, show_ids: bool):
        self.out, self.save_video, self.show_ids = out, save_video, show_ids
        self.video_path = out / (_stem(source) + "_pomona.mp4") if save_video else None
        self.rate = fps if 0 < fps <= 240 else 15.0
        self.video = None
        self.video_size = (0, 0)

    def write(self, image: np.ndarray, inst: Instances, name: str) -> None:
        annotated = draw_instances(image, inst, show_ids=self.show_ids)
        if self.save_video:
            self._write_video(annotated)
            return
        from pomona.atomic import write_image

        path = self.out / (name if Path(name).suffix else name + ".jpg")
        try:
            write_image(path, annotated)
        except OSError as e:  # a full card ends the run with one line, not a traceback
            raise _write_error(path, e) from None

    def _write_video(self, annotated: np.ndarray) -> None:
        if self.video is None:
            self.video_path.parent.mkdir(parents=True, exist_ok=True)
            self.video_size = (annotated.shape[1], annotated.shape[0])
            self.video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.rate,
                                         self.video_size)
            if not self.video.isOpened():
                raise PomonaError(f"cannot write video {self.video_path}")
        if (annotated.shape[1], annotated.shape[0]) != self.video_size:  # a camera changed mode mid-stream: fit
            from pomona.edge.processing import letterbox                 # the frame in, its aspect kept

            annotated = letterbox(annotated, self.video_size[::-1])[0]
        self.video.write(annotated)

    def close(self) -> None:
        if self.video is not None:
            self.video.release()


def run(model: str | Path, source: str, conf: float = 0.25, iou: float = 0.7, imgsz: int | None = None,
        out: Path | None = None, save_video: bool = False, jsonl: Path | None = None, track: bool = False,
        backend: str = "auto", max_frames: int | None = None, polygons: bool = True, quiet: bool = False,
        source_kwargs: dict | None = None, depth: str | None = None, intrinsics: Path | None = None) -> dict:
    """Process ``source`` until it ends (or Ctrl-C / SIGTERM / ``max_frames``); returns a summary dict.

    SIGTERM ends the run like Ctrl-C: outputs closed, summary returned, ``signal`` in it names which
    ("SIGINT" or "SIGTERM"; None when the source ended), so the CLI can exit 143 (128 + 15) for SIGTERM.
    Unreadable images in a folder are skipped and counted (``skipped``, ``skipped_files``: the first
    sources.SKIPPED_KEPT names); a full disk ends the run with a PomonaError and leaves complete JSONL lines only.
    ``depth`` (+ ``intrinsics``): aligned depth that gives each apple its picking target (edge/depth.py).
    """
    depth_in, source_kwargs = _open_depth(depth, intrinsics, source, source_kwargs)  # before the model loads
    predictor = _load_predictor(model, source, source_kwargs, backend, conf, iou, imgsz)
    tracker = _new_tracker(predictor) if track else None
    if save_video and out is None:
        out = Path("runs/edge")
    prepare = _prepare_step(predictor)
    src = FrameSource(source, **{"prepare": prepare, **(source_kwargs or {})})
    writer = _JsonlWriter(Path(jsonl)) if jsonl else None
    drawn = _AnnotatedOutput(Path(out), save_video, source, src.fps, tracker is not None) if out is not None else None
    finish = _FrameFinisher(predictor, src, tracker, depth_in, writer, drawn, polygons, quiet)
    sink = FrameSink(finish, threaded=predictor.staged and pipelined(), depth=predictor.frames_at_once + 1)
    infer = Inference(predictor)
    t_start = time.perf_counter()
    stopped_by, named_skips = _frame_loop(src, prepare, infer, sink, finish, max_frames, quiet)
    elapsed = time.perf_counter() - t_start
    _name_skips(src, named_skips, quiet, final=True)
    return _summary(model, predictor, src, finish, stopped_by, elapsed, out, jsonl)


def _open_depth(depth: str | None, intrinsics: Path | None, source: str, source_kwargs: dict | None):
    """(the aligned depth input or None, ``source_kwargs`` with what the depth input needs from the source).
    Called before the model loads: a wrong path is one line, at once."""
    from pomona.edge.depth import open_depth

    depth_in = open_depth(depth, intrinsics, source)
    if depth_in is not None:
        source_kwargs = {**(source_kwargs or {}), **depth_in.source_kwargs}
    return depth_in, source_kwargs


def _load_predictor(model: str | Path, source: str, source_kwargs: dict | None, backend: str, conf: float,
                    iou: float, imgsz: int | None) -> Predictor:
    """The model, batching as many frames at once as suits a live or a recorded source."""
    kw = source_kwargs or {}
    live = is_live(source, kw.get("live"), kw.get("opener"))
    return Predictor(model, backend=backend, conf=conf, iou=iou, imgsz=imgsz, frames_at_once=frames_at_once(live))


def _new_tracker(predictor: Predictor):
    """An apple tracker whose track-starting threshold follows the model's --conf (edge/tracking.py says why)."""
    from pomona.edge.tracking import AppleTracker

    return AppleTracker(detection_conf=predictor.conf)


def _prepare_step(predictor: Predictor):
    """The per-frame step the source runs as it reads: fit to MAX_SIDE, then the model's own ``prepare`` if staged."""
    fit = _Fit()
    # the frame's letterbox happens where the frame is read (the capture thread), the model in this thread, and
    # the rest (post-processing, tracking, outputs) in the sink's thread: three frames in flight (edge/sink.py)
    return (lambda image: fit(image, predictor.prepare)) if predictor.staged else (lambda image: fit(image, None))


class _FrameFinisher:
    """One frame's last stage, in order (the sink's thread, or inline): post-processing, tracking, depth targets,
    JSONL, annotated output, live FPS; counts what it saw for the summary."""

    def __init__(self, predictor: Predictor, src: FrameSource, tracker, depth_in, writer: _JsonlWriter | None,
                 drawn: _AnnotatedOutput | None, polygons: bool, quiet: bool):
        self.predictor, self.src, self.tracker, self.depth_in = predictor, src, tracker, depth_in
        self.writer, self.drawn, self.polygons, self.quiet = writer, drawn, polygons, quiet
        self.n = self.apples = self.size_changes = 0
        self.size = None
        self.fps = _FpsMeter()

    def __call__(self, item) -> None:
        frame, image, scale, result = item
        result = Inference.result_of(result)
        self._note_size(image, frame.index)
        predictor, tracker, depth_in = self.predictor, self.tracker, self.depth_in
        inst = predictor.finish(result) if predictor.staged else result
        if tracker is not None:
            inst = tracker.update(inst)
        if depth_in is not None:
            inst = depth_in.add_targets(frame, inst, scale)
        self.apples += len(inst)
        if self.writer is not None:
            self._write_record(frame, inst, scale)
        if self.drawn is not None:
            self.drawn.write(image, inst, frame.name)
        self.n += 1
        if not self.quiet and self.fps.tick(self.n):
            _progress(self.n, self.fps.fps, len(inst), tracker, self.src)

    def _note_size(self, image: np.ndarray, index: int) -> None:
        size = self.size
        if size is not None and image.shape[:2] != size:  # a camera that switched mode mid-stream: said, counted
            self.size_changes += 1
            print(f"\rpomona: frame size changed from {size[1]}x{size[0]} to {image.shape[1]}x{image.shape[0]} "
                  f"at frame {index}".ljust(60), file=sys.stderr)
        self.size = image.shape[:2]

    def _write_record(self, frame, inst: Instances, scale: float) -> None:
        extra = {"scale": scale} if scale != 1.0 else {}
        if self.tracker is not None:
            extra["distinct_apples"] = self.tracker.count
        if self.src.live:
            extra["dropped"] = self.src.dropped
        timings = self.predictor.last_timings if self.depth_in is None else {**self.predictor.last_timings,
                                                                             **self.depth_in.last_timings}
        self.writer.write(frame_record(frame.index, frame.timestamp, inst, frame.name, timings, self.polygons, extra))

    def close(self, failed: bool = False) -> None:
        """The depth input and the outputs, in that order (``failed``: the run is ending with an error)."""
        if self.depth_in is not None:
            self.depth_in.close()
        if self.writer is not None:
            self.writer.close(failed)
        if self.drawn is not None:
            self.drawn.close()


def _frame_loop(src: FrameSource, prepare, infer: Inference, sink: FrameSink, finish: _FrameFinisher,
                max_frames: int | None, quiet: bool) -> tuple[str | None, int]:
    """Frames from ``src`` through the model into ``sink`` until the source ends, ``max_frames``, Ctrl-C or
    SIGTERM; everything closed on the way out. Returns (the signal that stopped it or None, skipped files named)."""
    submitted = named_skips = 0
    stopped_by = None
    failed = True  # until the loop ends without an error
    with _sigterm_ends_run() as signalled, steady_heap(), opencv_in_one_thread():
        try:
            for frame in src:
                image, scale, staged = frame.prepared if frame.prepared is not None else prepare(frame.image)
                sink.put((frame, image, scale, infer(staged, image)))
                submitted += 1
                named_skips = _name_skips(src, named_skips, quiet)
                if max_frames is not None and submitted >= max_frames:
                    break
            sink.close()  # the frames still in the sink get their outputs; its error (a full disk) is the run's
            failed = False
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, above) is how a live run ends: finish the outputs cleanly
            stopped_by = signalled[0] if signalled else "SIGINT"
            sink.close()
            failed = False
        finally:
            _close_after_loop(src, infer, sink, finish, quiet, failed)
    return stopped_by, named_skips


def _close_after_loop(src: FrameSource, infer: Inference, sink: FrameSink, finish: _FrameFinisher,
                      quiet: bool, failed: bool) -> None:
    """Sink, inference, source and outputs closed in this order, whatever ended the loop (``failed``: an error)."""
    with contextlib.suppress(Exception):  # already ending with an error: that one is the run's
        sink.close()
    infer.close()
    if not quiet and finish.fps.n_last:  # end the live FPS line, so an error or the summary starts a line
        print("", file=sys.stderr)
    src.close()
    finish.close(failed)


def _summary(model: str | Path, predictor: Predictor, src: FrameSource, finish: _FrameFinisher,
             stopped_by: str | None, elapsed: float, out: Path | None, jsonl: Path | None) -> dict:
    """What ``run`` returns: counts, rate, how it ended, the runtime used and where the outputs went."""
    n = finish.n
    summary = {"frames": n, "apples": finish.apples, "fps": round(n / elapsed, 2) if elapsed > 0 else 0.0,
               "dropped": src.dropped, "reconnects": src.reconnects, "size_changes": finish.size_changes,
               "interrupted": stopped_by is not None,
               "signal": stopped_by, "skipped": src.skipped, "skipped_files": [f for f, _ in src.skipped_files],
               "backend": predictor.backend_name, "device": predictor.device, "model": str(model)}
    if finish.tracker is not None:
        summary["distinct_apples"] = finish.tracker.count
    if finish.drawn is not None and finish.drawn.video is not None:
        summary["video"] = str(finish.drawn.video_path)
    elif out is not None:
        summary["out"] = str(out)
    if jsonl:
        summary["jsonl"] = str(jsonl)
    return summary


class _Fit:
    """Frames larger than MAX_SIDE scaled down (and said so once), then handed to the model's ``prepare``."""

    def __init__(self):
        self.warned = False

    def __call__(self, image: np.ndarray, prepare) -> tuple[np.ndarray, float, object]:
        """(frame as the model sees it, its scale, ``prepare(frame)`` or None)."""
        scale = 1.0
        if max(image.shape[:2]) > MAX_SIDE:
            scale = MAX_SIDE / max(image.shape[:2])
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if not self.warned:
                self.warned = True
                print(f"pomona: frames of {image.shape[1]}x{image.shape[0]} are scaled to {small.shape[1]}x"
                      f"{small.shape[0]} (coordinates in JSONL are in the scaled frame)", file=sys.stderr)
            image = small
        return image, scale, prepare(image) if prepare is not None else None


def _name_skips(src: FrameSource, named: int, quiet: bool, final: bool = False) -> int:
    """Name each newly skipped file once on stderr (the source keeps SKIPPED_KEPT names); returns how many
    are named so far. ``final``: also say how many went unnamed."""
    new = src.skipped_files[named:]
    named += len(new)
    if quiet:
        return named
    for name, why in new:  # \r + padding: overwrite the live FPS line rather than glue onto it
        print(f"\rpomona: skipped {name} ({why})".ljust(60), file=sys.stderr)
    if final and src.skipped > named:
        print(f"pomona: skipped {src.skipped - named} more unreadable files", file=sys.stderr)
    return named


def _progress(n: int, fps: float, count: int, tracker, src: FrameSource) -> None:
    msg = f"\rframe {n}  {fps:5.1f} fps  apples {count:3d}"
    if tracker is not None:
        msg += f"  distinct {tracker.count}"
    if src.live:
        msg += f"  dropped {src.dropped}"
    print(msg, end="", file=sys.stderr, flush=True)


def _stem(source: str) -> str:
    p = Path(str(source))
    return p.stem if p.exists() else "live"
