"""``pomona run``: model + source -> annotated video/images, JSON Lines, live FPS, optional tracking."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2

from pomona.edge.draw import draw_instances
from pomona.edge.predictor import Predictor
from pomona.edge.records import frame_record
from pomona.edge.sources import FrameSource
from pomona.errors import PomonaError

MAX_SIDE = 4096  # larger frames are scaled down first: full-resolution masks of a 50 MP frame would not fit in memory


class _JsonlWriter:
    """One complete line per frame, flushed at once: an interrupted run leaves valid JSON Lines."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.f = open(path, "w", encoding="utf-8")
        except OSError as e:
            raise PomonaError(f"cannot write {path}: {e.strerror or e}") from None

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


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


def run(model: str | Path, source: str, conf: float = 0.25, iou: float = 0.7, imgsz: int | None = None,
        out: Path | None = None, save_video: bool = False, jsonl: Path | None = None, track: bool = False,
        backend: str = "auto", max_frames: int | None = None, polygons: bool = True, quiet: bool = False,
        source_kwargs: dict | None = None) -> dict:
    """Process ``source`` until it ends (or Ctrl-C / ``max_frames``); returns a summary dict."""
    predictor = Predictor(model, backend=backend, conf=conf, iou=iou, imgsz=imgsz)
    tracker = None
    if track:
        from pomona.edge.tracking import AppleTracker

        tracker = AppleTracker(detection_conf=predictor.conf)
    if save_video and out is None:
        out = Path("runs/edge")
    src = FrameSource(source, **(source_kwargs or {}))
    writer = _JsonlWriter(Path(jsonl)) if jsonl else None
    video = None
    video_path = None
    video_size = (0, 0)
    n = apples = 0
    interrupted = False
    warned_scale = False
    fps = _FpsMeter()
    t_start = time.perf_counter()
    try:
        for frame in src:
            image, scale = frame.image, 1.0
            if max(image.shape[:2]) > MAX_SIDE:
                scale = MAX_SIDE / max(image.shape[:2])
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                if not warned_scale:
                    print(f"pomona: frames of {frame.image.shape[1]}x{frame.image.shape[0]} are scaled to "
                          f"{image.shape[1]}x{image.shape[0]} (coordinates in JSONL are in the scaled frame)",
                          file=sys.stderr)
                    warned_scale = True
            inst = predictor(image)
            if tracker is not None:
                inst = tracker.update(inst)
            apples += len(inst)
            if writer is not None:
                extra = {"scale": scale} if scale != 1.0 else {}
                if tracker is not None:
                    extra["distinct_apples"] = tracker.count
                if src.live:
                    extra["dropped"] = src.dropped
                writer.write(frame_record(frame.index, frame.timestamp, inst, frame.name, predictor.last_timings,
                                          polygons, extra))
            if out is not None:
                annotated = draw_instances(image, inst, show_ids=tracker is not None)
                if save_video:
                    if video is None:
                        video_path = Path(out) / (_stem(source) + "_pomona.mp4")
                        video_path.parent.mkdir(parents=True, exist_ok=True)
                        rate = src.fps if 0 < src.fps <= 240 else 15.0
                        video = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), rate,
                                                (annotated.shape[1], annotated.shape[0]))
                        video_size = (annotated.shape[1], annotated.shape[0])
                        if not video.isOpened():
                            raise PomonaError(f"cannot write video {video_path}")
                    if (annotated.shape[1], annotated.shape[0]) != video_size:  # a live camera may change mode
                        annotated = cv2.resize(annotated, video_size)
                    video.write(annotated)
                else:
                    from pomona.atomic import write_image

                    name = frame.name if Path(frame.name).suffix else frame.name + ".jpg"
                    write_image(Path(out) / name, annotated)
            n += 1
            if not quiet and fps.tick(n):
                msg = f"\rframe {n}  {fps.fps:5.1f} fps  apples {len(inst):3d}"
                if tracker is not None:
                    msg += f"  distinct {tracker.count}"
                if src.live:
                    msg += f"  dropped {src.dropped}"
                print(msg, end="", file=sys.stderr, flush=True)
            if max_frames is not None and n >= max_frames:
                break
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C is how a live run ends: finish the outputs cleanly
    finally:
        src.close()
        if writer is not None:
            writer.close()
        if video is not None:
            video.release()
    elapsed = time.perf_counter() - t_start
    if not quiet and n:
        print("", file=sys.stderr)
    summary = {"frames": n, "apples": apples, "fps": round(n / elapsed, 2) if elapsed > 0 else 0.0,
               "dropped": src.dropped, "reconnects": src.reconnects, "interrupted": interrupted,
               "backend": predictor.backend_name, "device": predictor.device, "model": str(model)}
    if tracker is not None:
        summary["distinct_apples"] = tracker.count
    if video_path is not None:
        summary["video"] = str(video_path)
    elif out is not None:
        summary["out"] = str(out)
    if jsonl:
        summary["jsonl"] = str(jsonl)
    return summary


def _stem(source: str) -> str:
    p = Path(str(source))
    return p.stem if p.exists() else "live"
