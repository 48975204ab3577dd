"""``pomona demo``: the field demo in the browser (Gradio), on the edge runtime.

Everything the page shows comes from :class:`pomona.edge.Predictor`, the same code the robot runs
(ONNX Runtime, TensorRT or, on a workstation, Ultralytics), drawn by :func:`pomona.edge.draw.draw_instances`
and, for video and the webcam, counted by :class:`pomona.edge.tracking.AppleTracker`. No second
inference path exists for the demo.

The page works without internet: Gradio's analytics are off (``import pomona`` sets it), the theme
uses system fonts only, the examples ship in ``edge/assets/``, and nothing is uploaded anywhere. It binds
127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from pomona.errors import PomonaError
from pomona.instances import Instances

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_SUFFIXES = (".onnx", ".engine", ".pt")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
QUICKSTART_WEIGHTS = Path("runs/quickstart/weights")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v")
MAX_SIDE = 4096  # pixels; larger pictures are refused with a message instead of exhausting memory
MAX_BYTES = 200 * 1024 * 1024  # per upload; Gradio enforces it too (max_file_size)
MAX_VIDEO_FRAMES = 900  # 30 s at 30 FPS: a demo on a CPU should answer within minutes
OUTPUT_TTL_S = 3600  # result files older than this are removed when new ones are written
TABLE_COLUMNS = ["apple", "score", "area_px", "centroid_x", "centroid_y"]
TRACK_COLUMNS = ["track", "frames", "max_score", "mean_area_px", "first_frame", "last_frame"]
RGBD_COLUMNS = ["apple", "score", "area_px", "distance_m", "diameter_mm", "center_x_m", "center_y_m", "center_z_m",
                "pick_x_m", "pick_y_m", "pick_z_m", "visible_fraction", "depth_points"]


# --- models ---------------------------------------------------------------------------------------


def find_models(extra: Path | None = None, root: Path = Path("runs")) -> list[Path]:
    """Models to offer: ``extra`` first, then the shipped models (.onnx), then every .onnx/.engine/.pt
    under ``root/**/weights/``."""
    from pomona.models import shipped_models

    found: list[Path] = []
    if extra is not None:
        found.append(Path(extra))
    for shipped in shipped_models():
        if shipped.file("onnx").is_file() and shipped.file("onnx") not in found:
            found.append(shipped.file("onnx"))
    if root.is_dir():
        for path in sorted(root.glob("**/weights/*")):
            if path.suffix in MODEL_SUFFIXES and path.is_file() and path not in found:
                found.append(path)
    return found


def default_model(root: Path = Path(".")) -> Path:
    """The default shipped model (its .onnx, the edge format); without one, what ``make quickstart`` trained."""
    from pomona.models import DEFAULT_MODEL, get_model

    shipped = get_model(DEFAULT_MODEL)
    if shipped is not None and shipped.file("onnx").is_file():
        return shipped.file("onnx")
    for name in ("best.onnx", "best.pt"):
        path = root / QUICKSTART_WEIGHTS / name
        if path.is_file():
            return path
    raise PomonaError(
        f"no model given, {DEFAULT_MODEL} is not installed and there is none at {QUICKSTART_WEIGHTS}/best.onnx "
        "or best.pt: run `make quickstart` to train one, or pass --model PATH (.onnx, .engine or .pt)"
    )


class PredictorCache:
    """One Predictor per (model, conf, iou), the most recent few kept: sliders stay responsive
    without reloading a model per frame, and memory stays bounded on an 8 GB Jetson."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, float, float], object] = OrderedDict()
        self._lock = threading.Lock()
        # One inference at a time: one accelerator on a robot, and last_timings stays the call's own.
        self.infer_lock = threading.Lock()

    def get(self, model: str | Path, conf: float, iou: float):
        from pomona.edge import Predictor

        key = (str(model), round(float(conf), 3), round(float(iou), 3))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        path = Path(model)
        if not path.is_file():
            raise PomonaError(f"model not found: {path}")
        predictor = Predictor(path, backend="auto", conf=key[1], iou=key[2])
        with self._lock:
            self._items[key] = predictor
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return predictor

    def predict(self, predictor, image_bgr: np.ndarray) -> tuple[Instances, dict[str, float]]:
        with self.infer_lock:
            instances = predictor(image_bgr)
            timings = dict(getattr(predictor, "last_timings", {}) or {})
        return instances, timings


# --- checks on what people upload -------------------------------------------------------------------


def _ui_error(message: str) -> Exception:
    import gradio as gr

    return gr.Error(message, print_exception=False)


def check_upload(path: str | Path | None, kind: str) -> Path:
    """The upload exists, is not empty and not too big; otherwise a sentence for the page."""
    if path is None:
        raise _ui_error(f"Please choose {'an image' if kind == 'image' else 'a video'} first.")
    path = Path(path)
    if not path.is_file():
        raise _ui_error(f"The uploaded {kind} could not be found on the server; please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise _ui_error(f"The uploaded file '{path.name}' is empty (0 bytes).")
    if size > MAX_BYTES:
        raise _ui_error(f"The uploaded file '{path.name}' is {size / 2**20:.0f} MB; the demo accepts up to "
                        f"{MAX_BYTES // 2**20} MB.")
    return path


def load_image(path: str | Path | None) -> np.ndarray:
    """A checked upload decoded to BGR, or a clear message (not an image, empty, too large)."""
    path = check_upload(path, "image")
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only: size is known before decoding
            width, height = im.size
    except Image.DecompressionBombError:
        raise _ui_error(f"'{path.name}' is far too large an image; the demo accepts up to {MAX_SIDE}x{MAX_SIDE} "
                        "pixels.") from None
    except Exception:  # PIL's UnidentifiedImageError, or whatever a plugin patched into Image.open raises
        raise _ui_error(f"'{path.name}' is not an image the demo can read; upload a JPEG, PNG, BMP, WebP or "
                        "TIFF picture.") from None
    if max(width, height) > MAX_SIDE:
        raise _ui_error(f"'{path.name}' is {width}x{height} pixels; the demo accepts up to {MAX_SIDE}x{MAX_SIDE}. "
                        "Please downscale it first.")
    from pomona.dataset import read_image

    try:
        return read_image(path)
    except PomonaError:
        raise _ui_error(f"'{path.name}' could not be decoded as an image; the file may be damaged.") from None


_CHECKED_IMAGE = None


def checked_image(**kwargs):
    """A ``gr.Image`` (same browser component) that checks the upload before Gradio decodes it: an empty,
    oversized or non-image file becomes a sentence on the page instead of Gradio's bare 'Error'."""
    global _CHECKED_IMAGE
    if _CHECKED_IMAGE is None:
        import gradio as gr
        import gradio.component_meta as component_meta

        # Gradio writes a .pyi stub beside any module that subclasses a component; keep the package clean.
        write_stub, component_meta.create_or_modify_pyi = component_meta.create_or_modify_pyi, lambda *a, **k: None

        try:
            class CheckedImage(gr.Image):
                is_template = True  # rendered by the frontend's Image component

                def preprocess(self, payload):
                    if payload is not None and getattr(payload, "path", None):
                        check_upload(payload.path, "image")
                    try:
                        return super().preprocess(payload)
                    except gr.Error:
                        raise
                    except Exception:
                        name = Path(getattr(payload, "orig_name", None) or payload.path).name
                        raise _ui_error(f"'{name}' is not an image the demo can read; upload a JPEG, PNG, BMP, WebP "
                                        "or TIFF picture.") from None
        finally:
            component_meta.create_or_modify_pyi = write_stub
        _CHECKED_IMAGE = CheckedImage
    return _CHECKED_IMAGE(**kwargs)


def open_video(path: str | Path | None) -> tuple[cv2.VideoCapture, dict]:
    """A checked upload opened with OpenCV, with its size, frame rate and frame count."""
    path = check_upload(path, "video")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise _ui_error(f"'{path.name}' is not a video the demo can read; upload an MP4, WebM, MOV, AVI or MKV "
                        "clip.")
    height, width = first.shape[:2]
    if max(width, height) > MAX_SIDE:
        cap.release()
        raise _ui_error(f"'{path.name}' is {width}x{height} pixels; the demo accepts videos up to {MAX_SIDE} pixels "
                        "on a side.")
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = cap.get(cv2.CAP_PROP_FPS)
    info = {"width": width, "height": height, "fps": fps if 1 <= fps <= 240 else 25.0,
            "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)}
    return cap, info


# --- what one result looks like on the page ---------------------------------------------------------


def records(instances: Instances, with_polygons: bool = False) -> list[dict]:
    """Per-apple JSON records; [] for a frame without apples."""
    return instances.to_records(with_polygons=with_polygons)


def apples_table(instances: Instances) -> list[list]:
    """Rows of the detected-apples table: id, score, mask area, centroid."""
    rows = []
    for i, rec in enumerate(records(instances)):
        rows.append([int(rec.get("track_id", i + 1)), rec["score"], rec["area"], rec["centroid"][0], rec["centroid"][1]])
    return rows


def latency_text(timings: dict[str, float], extra_ms: float = 0.0, label: str = "") -> str:
    """'pre 2.1 ms · infer 30.4 ms · post 5.0 ms · draw 1.2 ms → 38.7 ms/frame (25.8 FPS)'."""
    parts = [f"{k} {v:.1f} ms" for k, v in timings.items()]
    total = sum(timings.values()) + extra_ms
    if extra_ms:
        parts.append(f"draw {extra_ms:.1f} ms")
    fps = 1000.0 / total if total > 0 else float("inf")
    return f"{label}{' · '.join(parts)} → {total:.1f} ms/frame ({fps:.1f} FPS)"


def _output_dir() -> Path:
    """A fresh folder for one request's files; old ones are pruned so a long demo doesn't fill the disk."""
    base = Path(tempfile.gettempdir()) / "pomona-demo"
    base.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in base.iterdir():
        try:
            if now - old.stat().st_mtime > OUTPUT_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    out = base / uuid.uuid4().hex[:12]
    out.mkdir()
    return out


def _write_jsonl(path: Path, lines: list[dict]) -> Path:
    from pomona import atomic

    return atomic.write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def _class_names(predictor) -> dict[int, str] | None:
    names = getattr(getattr(predictor, "info", None), "names", None) or getattr(predictor, "names", None)
    return dict(names) if names else None


# --- the three tabs ----------------------------------------------------------------------------------


def detect_image(cache: PredictorCache, image_path: str | None, model: str, conf: float, iou: float):
    """Image tab: overlay, count, latency, table, downloads (JSON Lines, COCO JSON)."""
    from pomona import atomic
    from pomona.dataset import write_coco
    from pomona.edge.draw import draw_instances

    image = load_image(image_path)
    predictor = _predictor(cache, model, conf, iou)
    instances, timings = cache.predict(predictor, image)
    t0 = time.perf_counter()
    overlay = draw_instances(image, instances)
    draw_ms = (time.perf_counter() - t0) * 1000
    out = _output_dir()
    stem = Path(image_path).stem[:60] or "image"
    overlay_path = atomic.write_image(out / f"{stem}_apples.jpg", overlay, quality=90)
    result = {"image": Path(image_path).name, "model": str(model), "conf": conf, "iou": iou, "count": len(instances),
               "timings_ms": timings, "apples": records(instances, with_polygons=True)}
    jsonl = _write_jsonl(out / f"{stem}_apples.jsonl", [result])
    coco = write_coco(out / f"{stem}_coco.json", [(Path(image_path).name, instances)], _class_names(predictor),
                      {"description": f"pomona demo, model {Path(model).name}"})
    return (str(overlay_path), len(instances), latency_text(timings, draw_ms), apples_table(instances),
            [str(jsonl), str(coco)])


def detect_video(cache: PredictorCache, video_path: str | None, model: str, conf: float, iou: float,
                 progress=None):
    """Video tab: every frame through the runtime and the tracker; annotated clip, distinct apples."""
    from pomona.edge.tracking import AppleTracker

    cap, info = open_video(video_path)
    predictor = _predictor(cache, model, conf, iou)
    tracker = AppleTracker(frame_rate=info["fps"], detection_conf=predictor.conf)
    out, stem, video_out, writer = _annotated_clip_writer(cap, video_path, info)
    tally = _VideoTally(stem, CocoFrames(_class_names(predictor),
                                         {"description": f"pomona demo video, model {Path(model).name}"}))
    start = time.perf_counter()
    try:
        _track_frames(cache, predictor, tracker, cap, writer, info, tally, progress)
    finally:
        cap.release()
        writer.release()
    return _video_results(tally, tracker, video_path, out, video_out, start)


class _VideoTally:
    """What the video tab gathers frame by frame: JSON lines, COCO, per-track sums, stage-time sums."""

    def __init__(self, stem: str, coco: CocoFrames) -> None:
        self.stem, self.coco = stem, coco
        self.lines: list[dict] = []
        self.tracks: dict = {}
        self.sums = {"pre": 0.0, "infer": 0.0, "post": 0.0}
        self.n, self.truncated = 0, False

    def add(self, instances: Instances, timings: dict[str, float]) -> None:
        for k in self.sums:
            self.sums[k] += timings.get(k, 0.0)
        name = f"{self.stem}_frame{self.n:06d}"
        self.lines.append({"frame": self.n, "image": name, "count": len(instances), "timings_ms": timings,
                           "apples": records(instances)})
        self.coco.add(name, instances)  # RLE now: keeping every frame's full-size masks would fill memory
        _accumulate_tracks(self.tracks, instances, self.n)
        self.n += 1


def _annotated_clip_writer(cap: cv2.VideoCapture, video_path: str, info: dict):
    """(a fresh output folder, the upload's file stem, the clip's path, its writer); if no writer can be
    made the capture is released before the error goes up."""
    out = _output_dir()
    stem = Path(video_path).stem[:60] or "video"
    try:
        video_out, writer = _video_writer(out / f"{stem}_apples", info)
    except Exception:
        cap.release()
        raise
    return out, stem, video_out, writer


def _track_frames(cache: PredictorCache, predictor, tracker, cap: cv2.VideoCapture, writer: cv2.VideoWriter,
                  info: dict, tally: _VideoTally, progress) -> None:
    """Frames until the clip ends or MAX_VIDEO_FRAMES: predict, track, draw into the clip, tally."""
    from pomona.edge.draw import draw_instances

    total = min(info["frames"] or MAX_VIDEO_FRAMES, MAX_VIDEO_FRAMES)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if tally.n >= MAX_VIDEO_FRAMES:
            tally.truncated = True
            break
        if frame.shape[:2] != (info["height"], info["width"]):  # a stream that changes size mid-way
            frame = cv2.resize(frame, (info["width"], info["height"]))
        instances, timings = cache.predict(predictor, frame)
        instances = tracker.update(instances)
        writer.write(draw_instances(frame, instances, show_ids=True))
        tally.add(instances, timings)
        if progress is not None and total:
            progress(min(tally.n / total, 1.0), desc=f"frame {tally.n}/{total}")


def _video_results(tally: _VideoTally, tracker, video_path: str, out: Path, video_out: Path, start: float):
    """The tab's outputs: clip, distinct apples, latency, track table, downloads (clip, JSON Lines, COCO)."""
    import gradio as gr

    n = tally.n
    if n == 0:
        raise _ui_error(f"'{Path(video_path).name}' has no frames the demo can read.")
    if tally.truncated:
        gr.Warning(f"Only the first {MAX_VIDEO_FRAMES} frames were analysed (the demo's limit per clip).")
    wall_ms = (time.perf_counter() - start) * 1000 / n
    mean = {k: v / n for k, v in tally.sums.items()}
    latency = latency_text(mean, label=f"{n} frames, mean per frame: ") + \
        f"; end to end with tracking, drawing and encoding {wall_ms:.1f} ms/frame ({1000 / wall_ms:.1f} FPS)"
    jsonl = _write_jsonl(out / f"{tally.stem}_apples.jsonl", tally.lines)
    coco_path = tally.coco.write(out / f"{tally.stem}_coco.json")
    table = [[tid, t["frames"], round(t["max_score"], 4), round(t["area"] / t["frames"], 1), t["first"], t["last"]]
             for tid, t in sorted(tally.tracks.items())]
    return str(video_out), int(tracker.count), latency, table, [str(video_out), str(jsonl), str(coco_path)]


def _video_writer(base: Path, info: dict) -> tuple[Path, cv2.VideoWriter]:
    """VP8 WebM (every browser plays it; OpenCV's FFmpeg encodes it without a system ffmpeg), else MPEG-4
    (an OpenCV built without libvpx, e.g. some JetPack builds: downloadable, maybe not playable inline)."""
    size = (info["width"], info["height"])
    for suffix, fourcc in ((".webm", "VP80"), (".mp4", "mp4v")):
        path = base.with_suffix(suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), info["fps"], size)
        if writer.isOpened():
            return path, writer
        writer.release()
    raise _ui_error("This machine's OpenCV cannot write video (neither VP8 nor MPEG-4), so no annotated clip "
                    "can be made.")


class CocoFrames:
    """COCO JSON built frame by frame (masks as RLE at once), in the layout of ``pomona.dataset.to_coco``."""

    def __init__(self, names: dict[int, str] | None, info: dict) -> None:
        self.names, self.info = names, info
        self.coco: dict | None = None

    def add(self, name: str, instances: Instances) -> None:
        from pomona.dataset import to_coco

        one = to_coco([(name, instances)], self.names, self.info)
        if self.coco is None:
            self.coco = {**one, "images": [], "annotations": []}
        image_id = len(self.coco["images"]) + 1
        first = len(self.coco["annotations"]) + 1
        self.coco["images"] += [{**img, "id": image_id} for img in one["images"]]
        self.coco["annotations"] += [{**ann, "id": first + i, "image_id": image_id}
                                     for i, ann in enumerate(one["annotations"])]

    def write(self, path: Path) -> Path:
        from pomona import atomic

        return atomic.write_json(path, self.coco, indent=None)


def _accumulate_tracks(tracks: dict, instances: Instances, frame: int) -> None:
    if instances.track_ids is None or len(instances) == 0:
        return
    for tid, score, area in zip(instances.track_ids, instances.scores, instances.areas):
        if tid < 0:  # not confirmed yet: the tracker may still drop it as a false positive
            continue
        t = tracks.setdefault(int(tid), {"frames": 0, "max_score": 0.0, "area": 0.0, "first": frame, "last": frame})
        t["frames"] += 1
        t["max_score"] = max(t["max_score"], float(score))
        t["area"] += float(area)
        t["last"] = frame


def detect_webcam(cache: PredictorCache, frame_rgb: np.ndarray | None, model: str, conf: float, iou: float,
                  tracker):
    """Live tab: one streamed webcam frame in, overlay + count + latency out; the tracker is per session."""
    from pomona.edge.draw import draw_instances
    from pomona.edge.tracking import AppleTracker

    if frame_rgb is None:
        return None, 0, "waiting for the camera…", tracker
    frame = cv2.cvtColor(np.ascontiguousarray(frame_rgb[..., :3]), cv2.COLOR_RGB2BGR)
    predictor = _predictor(cache, model, conf, iou)
    if tracker is None:
        tracker = AppleTracker(detection_conf=predictor.conf)
    instances, timings = cache.predict(predictor, frame)
    instances = tracker.update(instances)
    t0 = time.perf_counter()
    overlay = draw_instances(frame, instances, show_ids=True)
    draw_ms = (time.perf_counter() - t0) * 1000
    text = latency_text(timings, draw_ms) + f" · {len(instances)} in view, {tracker.count} distinct so far"
    return cv2.cvtColor(overlay, cv2.COLOR_BGR2RGB), len(instances), text, tracker


def load_depth_pair(image: np.ndarray, depth_path: str | None, intrinsics_path: str | None, numbers, name: str):
    """The uploaded depth (uint16 mm, aligned to ``image``) and the camera; a sentence for the page otherwise."""
    from pomona.edge.depth import check_depth, load_intrinsics, parse_intrinsics

    depth_file = check_upload(depth_path, "depth image") if depth_path else None
    if depth_file is None:
        raise _ui_error("Please upload the depth image (16-bit PNG in millimetres, aligned to the colour image).")
    try:
        depth = check_depth(cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED), depth_file.name)
        if depth.shape[:2] != image.shape[:2]:
            raise PomonaError(f"the depth image is {depth.shape[1]}x{depth.shape[0]}, the colour image "
                              f"{image.shape[1]}x{image.shape[0]}; they must be aligned, pixel for pixel")
        if intrinsics_path:
            K = load_intrinsics(check_upload(intrinsics_path, "intrinsics file")).for_frame(name, image.shape[:2])
        elif all(v not in (None, 0) for v in numbers):
            K = parse_intrinsics(dict(zip(("fx", "fy", "cx", "cy"), numbers)), "the fx, fy, cx, cy fields")
        else:
            raise PomonaError("give the camera: an intrinsics JSON (fx, fy, cx, cy) or all four fields")
    except PomonaError as e:
        raise _ui_error(str(e)[:1].upper() + str(e)[1:] + ".") from None
    return depth, K


def rgbd_table(instances: Instances) -> list[list]:
    """Rows of the picking table: the image table's first columns, then each apple's 3D fields (blank if unknown)."""
    rows = []
    for i, rec in enumerate(records(instances)):
        centre, pick = rec.get("center_m") or [None] * 3, rec.get("pick_point_m") or [None] * 3
        rows.append([i + 1, rec["score"], rec["area"], rec.get("distance_m"), rec.get("diameter_mm"), *centre, *pick,
                     rec.get("visible_fraction"), rec.get("depth_points")])
    return rows


def detect_rgbd(cache: PredictorCache, image_path: str | None, depth_path: str | None, intrinsics_path: str | None,
                fx, fy, cx, cy, model: str, conf: float, iou: float):
    """RGB-D tab: the image tab's outputs, plus each apple's 3D centre, diameter and picking point from the depth."""
    from pomona import atomic
    from pomona.edge.draw import draw_instances
    from pomona.picking import measure

    image = load_image(image_path)
    name = Path(image_path).name
    depth, K = load_depth_pair(image, depth_path, intrinsics_path, (fx, fy, cx, cy), name)
    predictor = _predictor(cache, model, conf, iou)
    instances, timings = cache.predict(predictor, image)
    t0 = time.perf_counter()
    instances.picking = measure(instances, depth, K)
    timings = {**timings, "3d": (time.perf_counter() - t0) * 1000}
    overlay = draw_instances(image, instances)
    out = _output_dir()
    stem = Path(image_path).stem[:60] or "image"
    overlay_path = atomic.write_image(out / f"{stem}_apples.jpg", overlay, quality=90)
    result = {"image": name, "model": str(model), "conf": conf, "iou": iou, "count": len(instances),
              "intrinsics": {"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy}, "timings_ms": timings,
              "apples": records(instances, with_polygons=True)}
    jsonl = _write_jsonl(out / f"{stem}_picking.jsonl", [result])
    return str(overlay_path), len(instances), latency_text(timings), rgbd_table(instances), [str(jsonl)]


def _predictor(cache: PredictorCache, model: str, conf: float, iou: float):
    if not model:
        raise _ui_error("Please choose a model first.")
    try:
        return cache.get(model, conf, iou)
    except PomonaError as e:
        raise _ui_error(f"The model could not be loaded: {e}") from None


# --- the page ----------------------------------------------------------------------------------------


def example_images() -> list[Path]:
    return sorted(p for p in ASSETS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def example_videos() -> list[Path]:
    return sorted(p for p in ASSETS.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def theme():
    """Gradio's default look with system fonts only: no font file is fetched from anywhere."""
    import gradio as gr

    return gr.themes.Default(
        primary_hue="red",
        font=[gr.themes.Font("system-ui"), gr.themes.Font("Helvetica"), gr.themes.Font("Arial"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("DejaVu Sans Mono"), "monospace"],
    )


def launch_options() -> dict:
    """Options for ``Blocks.launch`` (Gradio 6 takes theme and limits there, not in the constructor)."""
    return {
        "theme": theme(),
        "max_file_size": MAX_BYTES,
        "allowed_paths": [str(ASSETS)],
        "footer_links": [],  # the default footer links to gradio.app and the API page
        "show_error": True,  # gr.Error messages reach the page; they are sentences, never tracebacks
        "ssr_mode": False,  # no Node server: one Python process on the robot
        "quiet": True,
    }


def _warm_up(cache: PredictorCache, predictor) -> None:
    """One throw-away frame through the runtime and the drawing (whose fonts and annotators load lazily, ~0.4 s),
    so the first visitor's latency shows the model, not start-up."""
    from pomona.edge.draw import draw_instances

    frame = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 16:48, 16:48] = True
    cache.predict(predictor, frame)
    draw_instances(frame, Instances.from_masks(mask, image_size=(64, 64)), show_ids=True)


def build_app(model: str | Path | None = None, runs: Path = Path("runs")):
    """The demo as a ``gradio.Blocks``; ``model`` (a path or a shipped name) defaults to the default shipped model. Raises PomonaError when
    there is no model or it cannot be loaded, so the CLI prints one line instead of starting a broken page."""
    try:
        import gradio as gr
    except ImportError:
        raise PomonaError("the demo needs Gradio, which this install lacks: pip install 'pomona[demo]'") from None

    cache, chosen = _load_model(model)
    models = [str(p) for p in find_models(chosen, runs)]

    with gr.Blocks(title="pomona: apples in the field", analytics_enabled=False) as app:
        shared = _header_and_model_controls(models, chosen)
        image = _image_tab()
        video = _video_tab()
        rgbd = _rgbd_tab()
        cam = _webcam_tab()
        _wire_events(cache, shared, image, video, rgbd, cam)
    app.pomona_cache = cache  # tests and callers reach the loaded predictors through the app
    return app


def _load_model(model: str | Path | None) -> tuple[PredictorCache, Path]:
    """(a cache holding ``model`` loaded and warmed up, its path); PomonaError when it is missing or unsupported."""
    from pomona.models import resolve_model

    chosen = resolve_model(model) if model is not None else default_model()
    if not chosen.is_file():
        raise PomonaError(f"model not found: {chosen} (pass --model PATH to an .onnx, .engine or .pt file)")
    if chosen.suffix not in MODEL_SUFFIXES:
        raise PomonaError(f"unsupported model type '{chosen.suffix}' for {chosen}: use .onnx, .engine or .pt")
    cache = PredictorCache()
    predictor = cache.get(chosen, 0.25, 0.7)  # load now: a bad model is reported by the CLI, not by the page
    _warm_up(cache, predictor)
    return cache, chosen


def _header_and_model_controls(models: list[str], chosen: Path) -> SimpleNamespace:
    """The page's title text and the model, confidence and IoU controls every tab uses."""
    import gradio as gr

    gr.Markdown(
        "## pomona: apple instance segmentation\n"
        "A YOLO segmentation model that learnt apples only from rendered, automatically labelled orchards "
        "(no orchard photo, no hand-drawn label), running on pomona's edge runtime (the same code as on the "
        "robot). Nothing leaves this machine."
    )
    with gr.Row():
        model_box = gr.Dropdown(models, value=str(chosen), label="Model", allow_custom_value=False, scale=3)
        conf = gr.Slider(0.01, 0.95, value=0.25, step=0.01, label="Confidence threshold", scale=2)
        iou = gr.Slider(0.1, 0.95, value=0.7, step=0.05, label="NMS IoU", scale=2)
    return SimpleNamespace(model_box=model_box, conf=conf, iou=iou)


def _image_tab() -> SimpleNamespace:
    """One orchard photo in; the drawn photo, count, latency, table and downloads out."""
    import gradio as gr

    with gr.Tab("Image"):
        with gr.Row():
            image_in = checked_image(type="filepath", label="Orchard photo", sources=["upload", "clipboard"],
                                     elem_id="image-in")
            image_out = gr.Image(type="filepath", label="Apples found", format="jpeg", elem_id="image-out",
                                 interactive=False)
        image_btn = gr.Button("Detect apples", variant="primary", elem_id="detect-image")
        with gr.Row():
            image_count = gr.Number(label="Apples", precision=0, interactive=False, elem_id="image-count")
            image_latency = gr.Textbox(label="Latency", interactive=False, elem_id="image-latency", scale=3)
        image_table = gr.Dataframe(headers=TABLE_COLUMNS, label="Detected apples", interactive=False,
                                   elem_id="image-table")
        image_files = gr.File(label="Downloads (JSON Lines, COCO JSON)", file_count="multiple",
                              interactive=False)
        examples = [[str(p)] for p in example_images()]
        if examples:
            gr.Examples(examples, inputs=[image_in], label="Procedural orchard examples")
    return SimpleNamespace(button=image_btn, inputs=[image_in],
                           outputs=[image_out, image_count, image_latency, image_table, image_files])


def _video_tab() -> SimpleNamespace:
    """One drive-by clip in; the tracked clip, distinct count, latency, track table and downloads out."""
    import gradio as gr

    with gr.Tab("Video file"):
        with gr.Row():
            video_in = gr.Video(label="Drive-by clip", sources=["upload"], elem_id="video-in")
            video_out = gr.Video(label="Tracked apples", interactive=False, elem_id="video-out")
        video_btn = gr.Button("Detect and track apples", variant="primary", elem_id="detect-video")
        with gr.Row():
            video_count = gr.Number(label="Distinct apples (tracked)", precision=0, interactive=False)
            video_latency = gr.Textbox(label="Latency", interactive=False, scale=3)
        video_table = gr.Dataframe(headers=TRACK_COLUMNS, label="Tracked apples", interactive=False)
        video_files = gr.File(label="Downloads (annotated video, JSON Lines, COCO JSON)", file_count="multiple",
                              interactive=False)
        clips = [[str(p)] for p in example_videos()]
        if clips:
            gr.Examples(clips, inputs=[video_in], label="Procedural drive-by example")
    return SimpleNamespace(button=video_btn, inputs=[video_in],
                           outputs=[video_out, video_count, video_latency, video_table, video_files])


def _rgbd_tab() -> SimpleNamespace:
    """Colour image, aligned depth and intrinsics (a file or typed in) in; picking targets out."""
    import gradio as gr

    with gr.Tab("RGB-D (picking targets)"):
        gr.Markdown("A colour image and its aligned depth (16-bit PNG, millimetres, 0 = no depth), with the "
                    "camera's intrinsics: each apple's 3D centre, diameter and picking point (camera frame, metres).")
        with gr.Row():
            rgbd_in = checked_image(type="filepath", label="Colour image", sources=["upload"], elem_id="rgbd-in")
            rgbd_out = gr.Image(type="filepath", label="Apples found", format="jpeg", interactive=False)
        with gr.Row():
            depth_in = gr.File(label="Aligned depth (16-bit PNG, mm)", file_types=[".png", ".tif", ".tiff"],
                               type="filepath", elem_id="depth-in")
            intr_in = gr.File(label="Intrinsics JSON (fx, fy, cx, cy) or renderer manifest.jsonl",
                              file_types=[".json", ".jsonl"], type="filepath")
        with gr.Row():
            fx_in, fy_in = gr.Number(label="fx (px)", value=None), gr.Number(label="fy (px)", value=None)
            cx_in, cy_in = gr.Number(label="cx (px)", value=None), gr.Number(label="cy (px)", value=None)
        rgbd_btn = gr.Button("Detect apples and measure them", variant="primary", elem_id="detect-rgbd")
        with gr.Row():
            rgbd_count = gr.Number(label="Apples", precision=0, interactive=False)
            rgbd_latency = gr.Textbox(label="Latency", interactive=False, scale=3)
        rgbd_table_out = gr.Dataframe(headers=RGBD_COLUMNS, label="Picking targets", interactive=False)
        rgbd_files = gr.File(label="Download (JSON Lines)", file_count="multiple", interactive=False)
    return SimpleNamespace(button=rgbd_btn, inputs=[rgbd_in, depth_in, intr_in, fx_in, fy_in, cx_in, cy_in],
                           outputs=[rgbd_out, rgbd_count, rgbd_latency, rgbd_table_out, rgbd_files])


def _webcam_tab() -> SimpleNamespace:
    """The browser's camera streamed in, drawn frames and a per-session tracker (a gr.State) out."""
    import gradio as gr

    with gr.Tab("Live webcam"):
        gr.Markdown("Frames from this browser's camera go to the runtime on this machine and come back drawn.")
        with gr.Row():
            cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
            cam_out = gr.Image(label="Apples found", interactive=False, streaming=True)
        with gr.Row():
            cam_count = gr.Number(label="Apples in view", precision=0, interactive=False)
            cam_latency = gr.Textbox(label="Latency", interactive=False, scale=3)
        cam_tracker = gr.State(None)
    return SimpleNamespace(inp=cam_in, out=cam_out, count=cam_count, latency=cam_latency, tracker=cam_tracker)


def _wire_events(cache: PredictorCache, shared: SimpleNamespace, image: SimpleNamespace, video: SimpleNamespace,
                 rgbd: SimpleNamespace, cam: SimpleNamespace) -> None:
    """Each tab's button (the webcam's stream) to its detect_* function, with the shared model controls.
    Registered in this order: image, RGB-D, video, webcam."""
    import gradio as gr

    def run_image(path, model_name, c, i):
        return detect_image(cache, path, model_name, c, i)

    def run_video(path, model_name, c, i, progress=gr.Progress()):
        return detect_video(cache, path, model_name, c, i, progress)

    def run_rgbd(path, depth_path, intr_path, fx, fy, cx, cy, model_name, c, i):
        return detect_rgbd(cache, path, depth_path, intr_path, fx, fy, cx, cy, model_name, c, i)

    def run_webcam(frame, model_name, c, i, tracker):
        return detect_webcam(cache, frame, model_name, c, i, tracker)

    model_box, conf, iou = shared.model_box, shared.conf, shared.iou
    image.button.click(run_image, [*image.inputs, model_box, conf, iou], image.outputs, api_name="detect_image")
    rgbd.button.click(run_rgbd, [*rgbd.inputs, model_box, conf, iou], rgbd.outputs, api_name="detect_rgbd")
    video.button.click(run_video, [*video.inputs, model_box, conf, iou], video.outputs, api_name="detect_video")
    cam.inp.stream(run_webcam, [cam.inp, model_box, conf, iou, cam.tracker],
                   [cam.out, cam.count, cam.latency, cam.tracker], api_name="detect_webcam",
                   stream_every=0.2, concurrency_limit=1)


def exposure_warning(host: str) -> str | None:
    """The warning to print when ``host`` makes the demo reachable from other machines."""
    if host in LOOPBACK:
        return None
    return (f"warning: --host {host} exposes the demo (no login) to every machine that can reach this one; "
            "use the default 127.0.0.1 and an SSH tunnel unless that is what you want")


def launch(model: Path | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the demo until Ctrl-C (``pomona demo``)."""
    app = build_app(model)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"pomona demo on http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port} (Ctrl-C to stop)",
          flush=True)
    try:
        app.launch(server_name=host, server_port=port, inbrowser=False, share=False, **launch_options())
    except OSError as e:  # port taken, address not available
        raise PomonaError(f"cannot serve the demo on {host}:{port}: {e.strerror or e}") from None
