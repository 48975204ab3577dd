"""Latency benchmark of the edge runtime: per-stage percentiles, end-to-end FPS, peak memory.

Stages per frame: capture (read + decode), pre, infer, post, render (drawing). Frames are read
synchronously here (no capture thread) so the stage times add up to the frame time.
``ultralytics_baseline`` times plain ``YOLO(model).predict`` on the same frames for comparison.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pomona.errors import PomonaError
from pomona.machine import cpu_cores, give_ultralytics_every_core

STAGES = ("capture", "pre", "infer", "post", "render")
DEFAULT_PROMPT = "apples on trellised trees in a row, 1.5 m away, many apples"


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": cpu_cores(),
            "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
            "platform": platform.platform()}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM first: ru_maxrss survives exec on Linux, so a child
    started from a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def synthetic_frames(folder: Path, n: int = 30, size: tuple[int, int] = (640, 480), seed: int = 1000) -> Path:
    """Render ``n`` orchard frames (procedural renderer; plain discs if it is absent) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from pomona.pipeline.procedural import render
    except ImportError:
        render = None
    for i in range(n):
        path = folder / f"frame_{i:04d}.jpg"
        if path.exists():
            continue
        if render is not None:
            image = render(DEFAULT_PROMPT, seed + i, size).image
        else:
            from pomona.export.parity import _disc_image

            image = cv2.resize(_disc_image(max(size), seed + i), size)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return folder


def _frame_paths(source: Path) -> list[Path]:
    from pomona.edge.sources import IMAGE_SUFFIXES

    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        paths = [source]
    else:
        return []
    if not paths:
        raise PomonaError(f"no images in {source}")
    return paths


class _Reader:
    """Synchronous, cycling frame reader over an image folder or a video file."""

    def __init__(self, source: Path):
        if not source.exists():
            raise PomonaError(f"source not found: {source}")
        self.paths = _frame_paths(source)
        self.i = 0
        self.cap = None
        if not self.paths:
            self.source = source
            self.cap = cv2.VideoCapture(str(source))
            if not self.cap.isOpened():
                raise PomonaError(f"cannot open source {source}")

    def read(self) -> np.ndarray:
        if self.cap is None:
            image = cv2.imread(str(self.paths[self.i % len(self.paths)]), cv2.IMREAD_COLOR)
            self.i += 1
            if image is None:
                raise PomonaError(f"cannot read {self.paths[(self.i - 1) % len(self.paths)]}")
            return image
        ok, image = self.cap.read()
        if not ok:  # loop the video
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.cap.read()
            if not ok:
                raise PomonaError(f"cannot read frames from {self.source}")
        return image


def summarize(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


def bench(model: str | Path, source: str | Path | None = None, frames: int = 100, warmup: int = 5,
          backend: str = "auto", imgsz: int | None = None, conf: float = 0.25, per_frame: bool = False) -> dict:
    """Benchmark ``model`` through :class:`Predictor` + drawing on ``frames`` frames of ``source``."""
    from pomona.edge.predictor import Predictor

    if frames < 1:
        raise PomonaError("--frames must be at least 1")
    rss0 = peak_rss_mb()
    tmp = None
    if source is None:
        tmp = tempfile.TemporaryDirectory(prefix="pomona-bench-")
        source = synthetic_frames(Path(tmp.name), n=min(frames, 30))
    reader = _Reader(Path(source))
    predictor = Predictor(model, backend=backend, conf=conf, imgsz=imgsz)
    for _ in range(warmup):
        predictor(reader.read())
    run = _time_frames(predictor, reader, frames)
    source_text = str(source) if tmp is None else "synthetic (procedural renderer, 640x480)"
    result = _bench_result(predictor, run, source_text, rss0, per_frame)
    if tmp is not None:
        tmp.cleanup()
    return result


class _FrameTimes:
    """What the timed loop measures: milliseconds per stage and per frame, apples per frame, the loop's
    seconds in all, and the frames' size (width, height)."""

    def __init__(self) -> None:
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}
        self.e2e: list[float] = []
        self.counts: list[int] = []
        self.seconds = 0.0
        self.frame_size: list[int] = []


def _time_frames(predictor, reader: _Reader, frames: int) -> _FrameTimes:
    """Read, predict and draw ``frames`` frames one after another, timing each stage."""
    from pomona.edge.draw import draw_instances
    from pomona.edge.runner import opencv_in_one_thread, steady_heap

    run = _FrameTimes()
    times = run.stages
    with steady_heap(), opencv_in_one_thread():  # the settings `pomona run` frames run under
        t_all = time.perf_counter()
        for _ in range(frames):
            t0 = time.perf_counter()
            image = reader.read()
            t1 = time.perf_counter()
            inst = predictor(image)
            t2 = time.perf_counter()
            draw_instances(image, inst)
            t3 = time.perf_counter()
            times["capture"].append((t1 - t0) * 1e3)
            for k in ("pre", "infer", "post"):
                times[k].append(predictor.last_timings[k])
            times["render"].append((t3 - t2) * 1e3)
            run.e2e.append((t3 - t0) * 1e3)
            run.counts.append(len(inst))
        run.seconds = time.perf_counter() - t_all
    run.frame_size = list(image.shape[:2][::-1])
    return run


def _bench_result(predictor, run: _FrameTimes, source_text: str, rss0: float, per_frame: bool) -> dict:
    """The benchmark's JSON: percentiles per stage, FPS, post-processing's share, memory, machine."""
    times, e2e, counts, frames = run.stages, run.e2e, run.counts, len(run.e2e)
    model_ms = [a + b + c for a, b, c in zip(times["pre"], times["infer"], times["post"])]
    post_share = float(np.sum(times["post"]) / np.sum(model_ms)) if np.sum(model_ms) > 0 else 0.0
    frame_share = float(np.sum(times["post"]) / np.sum(e2e)) if np.sum(e2e) > 0 else 0.0
    result = {
        "model": str(predictor.model_path), "backend": predictor.backend_name, "device": predictor.device,
        "precision": predictor.precision, "imgsz": predictor.imgsz, "frames": frames,
        "source": source_text,
        "frame_size": run.frame_size,
        "apples_mean": float(np.mean(counts)), "apples_max": int(np.max(counts)),
        "stages_ms": {k: summarize(v) for k, v in times.items()},
        "model_ms": summarize(model_ms),  # pre + infer + post: what Predictor() costs
        "e2e_ms": summarize(e2e),
        "fps_e2e": frames / run.seconds,
        "fps_model": 1000.0 / float(np.mean(model_ms)),
        "post_share_of_model": post_share,
        "post_share_of_frame": frame_share,
        "rss_before_mb": rss0,
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine_info(),
    }
    if per_frame:
        result["per_frame"] = {"apples": counts, "post_ms": times["post"], "model_ms": model_ms,
                               "render_ms": times["render"]}
    return result


def ultralytics_baseline(model: str | Path, source: str | Path, frames: int = 100, warmup: int = 5,
                         imgsz: int | None = None, conf: float = 0.25, retina_masks: bool = False,
                         all_cores: bool = False) -> dict:
    """Plain ``YOLO(model).predict(frame)`` on the same frames (the way most people would deploy).

    ``all_cores``: torch on every core instead of Ultralytics' default of ``cpu_count - 1`` threads."""
    from ultralytics import YOLO

    if all_cores:
        give_ultralytics_every_core()

    rss0 = peak_rss_mb()
    reader = _Reader(Path(source))
    yolo = YOLO(str(model), task="segment")
    kw = dict(conf=conf, verbose=False, retina_masks=retina_masks, device="cpu")
    if imgsz:
        kw["imgsz"] = imgsz
    for _ in range(warmup):
        yolo.predict(reader.read(), **kw)
    stages = {"pre": [], "infer": [], "post": []}
    calls, counts = [], []
    for _ in range(frames):
        image = reader.read()
        t0 = time.perf_counter()
        r = yolo.predict(image, **kw)[0]
        calls.append((time.perf_counter() - t0) * 1e3)
        stages["pre"].append(r.speed["preprocess"])
        stages["infer"].append(r.speed["inference"])
        stages["post"].append(r.speed["postprocess"])
        counts.append(0 if r.boxes is None else len(r.boxes))
    return {"model": str(model), "backend": f"ultralytics-predict ({Path(model).suffix[1:]})", "frames": frames,
            "retina_masks": retina_masks, "apples_mean": float(np.mean(counts)),
            "stages_ms": {k: summarize(v) for k, v in stages.items()},
            "model_ms": summarize(calls), "fps_model": 1000.0 / float(np.mean(calls)),
            "rss_before_mb": rss0, "peak_rss_mb": peak_rss_mb(), "machine": machine_info()}
