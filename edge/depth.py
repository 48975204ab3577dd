"""Aligned depth for ``pomona run --depth DEPTH_SRC --intrinsics FILE``: depth frames paired with the colour
frames, the camera intrinsics, and the picking targets (pomona.picking) measured from both.

DEPTH_SRC is one of:
- a folder of 16-bit depth images (PNG or TIFF, millimetres, 0 = invalid), paired with the colour frames by
  file stem (``images/x.jpg`` <-> ``depth/x.png``; a video's frames are named ``frame_000123``), or, when the
  first frame's stem has no match, by index (colour frame i, the i-th file of a folder or frame i of a video,
  with the i-th depth image in name order);
- a 16-bit single-channel video (FFV1 ``gray16le``, as OpenCV's VideoWriter writes with a CV_16U depth),
  paired frame by frame;
- ``realsense`` or ``realsense:SERIAL``: an Intel RealSense camera through ``pyrealsense2`` (imported only
  then), which also delivers the colour frames (``--source realsense``) with depth aligned to them.

FILE is a JSON object with fx, fy, cx, cy (optional width, height; or such an object under ``intrinsics``),
or a renderer ``manifest.jsonl`` with intrinsics per image (by file stem; video clips by frame index).

Anything that would make the 3D fields wrong is one line and exit 2: depth and colour of different sizes,
8-bit depth, missing or malformed intrinsics, a depth stream that ends before the colour stream.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.picking import Intrinsics, measure

DEPTH_SUFFIXES = {".png", ".tif", ".tiff"}
REALSENSE = "realsense"


# --- intrinsics ---------------------------------------------------------------------------------------


def parse_intrinsics(obj, where: str) -> Intrinsics:
    """An Intrinsics from a dict with fx, fy, cx, cy (width, height optional); PomonaError naming ``where``."""
    if isinstance(obj, dict) and isinstance(obj.get("intrinsics"), dict):
        obj = obj["intrinsics"]
    if not isinstance(obj, dict):
        raise PomonaError(f"{where}: intrinsics must be an object with fx, fy, cx, cy")
    values = {}
    for key in ("fx", "fy", "cx", "cy", "width", "height"):
        if key not in obj or obj[key] is None:
            if key in ("width", "height"):
                continue
            raise PomonaError(f"{where}: intrinsics lack '{key}' (need fx, fy, cx, cy in pixels)")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PomonaError(f"{where}: intrinsics '{key}' must be a finite number, got {value!r}")
        values[key] = value
    if values["fx"] <= 0 or values["fy"] <= 0:
        raise PomonaError(f"{where}: focal lengths fx, fy must be positive, got {values['fx']}, {values['fy']}")
    for key in ("width", "height"):
        if key in values and (values[key] < 1 or values[key] != int(values[key])):
            raise PomonaError(f"{where}: intrinsics '{key}' must be a positive whole number, got {values[key]!r}")
    return Intrinsics(float(values["fx"]), float(values["fy"]), float(values["cx"]), float(values["cy"]),
                      int(values["width"]) if "width" in values else None,
                      int(values["height"]) if "height" in values else None)


class IntrinsicsTable:
    """One camera for every frame, or one per frame name (a renderer manifest)."""

    def __init__(self, default: Intrinsics | None = None, by_stem: dict[str, Intrinsics] | None = None,
                 source: str = ""):
        self.default, self.by_stem, self.source = default, by_stem or {}, source

    def for_frame(self, name: str, size_hw: tuple[int, int]) -> Intrinsics:
        """The intrinsics of the colour frame ``name`` of size (h, w), checked against that size."""
        K = self.default if self.default is not None else self.by_stem.get(Path(name).stem)
        if K is None:
            raise PomonaError(f"{self.source}: no intrinsics for frame {name!r}")
        h, w = size_hw
        if (K.width is not None and K.width != w) or (K.height is not None and K.height != h):
            raise PomonaError(f"{self.source}: intrinsics are for {K.width}x{K.height} images, frame {name} "
                              f"is {w}x{h}")
        return K


def load_intrinsics(path: str | Path) -> IntrinsicsTable:
    """``--intrinsics FILE``: a JSON object, or a manifest.jsonl with one camera per image or frame."""
    path = Path(path)
    if not path.is_file():
        raise PomonaError(f"intrinsics file not found: {path}")
    text = path.read_text(errors="replace")
    try:
        return IntrinsicsTable(parse_intrinsics(json.loads(text), str(path)), source=str(path))
    except json.JSONDecodeError:
        pass
    from pomona.dataset import json_lines  # only for a manifest: keeps pomona run's start-up as it was

    by_stem: dict[str, Intrinsics] = {}
    for lineno, rec in json_lines(text, path, bad="neither a JSON object nor JSON Lines"):
        if not isinstance(rec, dict) or "intrinsics" not in rec:
            raise PomonaError(f"{path}:{lineno}: no 'intrinsics' in this record (was the data rendered with --depth?)")
        if "file" in rec or "image" in rec:
            stem = Path(str(rec.get("file") or rec.get("image"))).stem
        elif "frame" in rec:
            stem = f"frame_{int(rec['frame']):06d}"  # the name pomona gives a video's frames
        else:
            raise PomonaError(f"{path}:{lineno}: a record needs 'file' (an image) or 'frame' (a video frame)")
        by_stem[stem] = parse_intrinsics(rec["intrinsics"], f"{path}:{lineno}")
    if not by_stem:
        raise PomonaError(f"{path}: no intrinsics in this file")
    return IntrinsicsTable(by_stem=by_stem, source=str(path))


# --- depth sources ------------------------------------------------------------------------------------


def check_depth(raw: np.ndarray | None, where: str) -> np.ndarray:
    """A decoded depth frame must be one channel of 16 bits (millimetres)."""
    if raw is None:
        raise PomonaError(f"cannot read depth {where}")
    if raw.dtype == np.uint8:
        raise PomonaError(f"depth {where} is 8-bit; depth must be 16-bit millimetres (0 = invalid)")
    if raw.dtype != np.uint16:
        raise PomonaError(f"depth {where} is {raw.dtype}; depth must be 16-bit millimetres (0 = invalid)")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise PomonaError(f"depth {where} has {raw.shape[2]} channels; depth must be one 16-bit channel")
    return raw


class DepthFolder:
    """16-bit depth images paired with colour frames by stem, or by index when the first stem has no match."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in DEPTH_SUFFIXES and p.is_file())
        if not self.files:
            raise PomonaError(f"no depth images ({', '.join(sorted(DEPTH_SUFFIXES))}) in {folder}")
        self.by_stem = {p.stem: p for p in self.files}
        self.by_name: bool | None = None  # decided on the first frame

    def read(self, index: int, name: str) -> np.ndarray:
        if self.by_name is None:
            self.by_name = Path(name).stem in self.by_stem
        if self.by_name:
            path = self.by_stem.get(Path(name).stem)
            if path is None:
                raise PomonaError(f"no depth image for {name} in {self.folder} (looked for {Path(name).stem}.png)")
        else:
            if index >= len(self.files):
                raise PomonaError(f"the depth stream ends before the colour stream: {self.folder} holds "
                                  f"{len(self.files)} depth images, colour frame {index + 1} ({name}) has none")
            path = self.files[index]
        return check_depth(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), str(path))

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV warns on stderr when BGR conversion is off and when a frame is not gray16: pomona says it once."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    level = log.getLogLevel() if log else None
    if log:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        if log:
            log.setLogLevel(level)


class DepthVideo:
    """A 16-bit single-channel video, read frame by frame in step with the colour frames' indices."""

    def __init__(self, path: Path):
        self.path = path
        with _quiet_opencv():  # CONVERT_RGB off: the decoder's own gray16le frames, not 8-bit BGR
            self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
        if not self.cap.isOpened():
            raise PomonaError(f"cannot open depth video {path}")
        self.next_index = 0

    def read(self, index: int, name: str) -> np.ndarray:
        raw = None
        while self.next_index <= index:  # a skipped colour frame skips its depth frame too
            with _quiet_opencv():
                ok, raw = self.cap.read()
            if not ok:
                raise PomonaError(f"the depth stream ends before the colour stream: {self.path} has "
                                  f"{self.next_index} frames, colour frame {index} has none")
            self.next_index += 1
        if raw is None:
            raise PomonaError(f"colour frame {index} arrived after its depth frame was read ({self.path})")
        return check_depth(raw, f"{self.path} frame {index}")

    def close(self) -> None:
        self.cap.release()


class RealSense:
    """Colour and aligned depth from an Intel RealSense camera (pyrealsense2, imported only here).

    Written from Intel's librealsense Python examples (align-depth2color.py, the rs.align and intrinsics
    docs) and not run in pomona's tests, which have no camera: ``rs.pipeline`` with colour (BGR8) and depth
    (Z16) streams, ``rs.align(rs.stream.color)`` so depth pixels sit on colour pixels, the colour stream's
    intrinsics. Acts as the colour source's capture (``read()``) and keeps each frame's depth for ``read_depth``.
    """

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: int = 30):
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise PomonaError("--depth realsense needs Intel's pyrealsense2 (pip install pyrealsense2)") from None
        self.rs = rs
        self.pipeline = rs.pipeline()
        self.config = rs.config()
        self.serial = spec.partition(":")[2]
        if self.serial:
            self.config.enable_device(self.serial)
        self.config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        self.config.enable_stream(rs.stream.color, width, height, rs.format.bgr8, fps)
        self.running = False
        profile = self.start()
        # Depth units vary by model and setting (D400: 1 mm by default); pomona's depth is in millimetres
        self.to_mm = profile.get_device().first_depth_sensor().get_depth_scale() * 1000.0
        self.align = rs.align(rs.stream.color)
        intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.intrinsics = Intrinsics(intr.fx, intr.fy, intr.ppx, intr.ppy, intr.width, intr.height)
        self.depth_of: dict[int, np.ndarray] = {}  # id(colour image) -> its aligned depth, the last few frames

    def start(self):
        """Start streaming (again, after the run's source reconnects); returns the pipeline profile."""
        try:
            profile = self.pipeline.start(self.config)
        except RuntimeError as e:
            raise PomonaError(f"cannot start RealSense {self.serial or 'camera'}: {e}") from None
        self.running = True
        return profile

    def reopen(self) -> "RealSense":
        """FrameSource's opener: the camera itself, restarted if a dropout stopped it."""
        if not self.running:
            self.start()
        return self

    def read(self):
        try:
            frames = self.align.process(self.pipeline.wait_for_frames(5000))
        except RuntimeError:
            return False, None
        colour, depth = frames.get_color_frame(), frames.get_depth_frame()
        if not colour or not depth:
            return False, None
        image = np.asanyarray(colour.get_data()).copy()
        mm = np.asanyarray(depth.get_data()).astype(np.float32) * self.to_mm
        self.depth_of[id(image)] = np.clip(mm + 0.5, 0, 65535).astype(np.uint16)
        while len(self.depth_of) > 16:  # the live source keeps only the newest frame anyway
            self.depth_of.pop(next(iter(self.depth_of)))
        return True, image

    def get(self, prop):  # FrameSource asks for the frame rate
        return 0.0

    def read_depth(self, image: np.ndarray) -> np.ndarray:
        depth = self.depth_of.pop(id(image), None)
        if depth is None:
            raise PomonaError("RealSense: no aligned depth for this colour frame")
        return depth

    def release(self) -> None:
        self.running = False
        try:
            self.pipeline.stop()
        except RuntimeError:
            pass


# --- the run's hook -----------------------------------------------------------------------------------


class DepthInput:
    """Depth and intrinsics for one ``pomona run``: ``add_targets`` sets each frame's ``Instances.picking``."""

    def __init__(self, depth_spec: str, intrinsics: str | Path | None, colour_spec: str):
        self.realsense: RealSense | None = None
        self.source_kwargs: dict = {}
        self.last_timings: dict[str, float] = {}
        spec = str(depth_spec).strip()
        if spec == REALSENSE or spec.startswith(REALSENSE + ":"):
            if str(colour_spec).strip().partition(":")[0] != REALSENSE:
                raise PomonaError("--depth realsense delivers aligned colour too: use --source realsense")
            self.realsense = RealSense(spec)
            self.source_kwargs = {"opener": self.realsense.reopen, "live": True}
            self.intrinsics = (load_intrinsics(intrinsics) if intrinsics is not None
                               else IntrinsicsTable(self.realsense.intrinsics, source="the RealSense"))
            self.depth = None
            return
        if intrinsics is None:
            raise PomonaError("--depth needs --intrinsics FILE (a JSON with fx, fy, cx, cy, or the renderer's "
                              "manifest.jsonl)")
        self.intrinsics = load_intrinsics(intrinsics)
        path = Path(spec)
        if path.is_dir():
            self.depth = DepthFolder(path)
        elif path.is_file():
            self.depth = DepthVideo(path)
        else:
            raise PomonaError(f"depth source not found: {spec}")

    def read(self, frame) -> np.ndarray:
        """The uint16 depth (mm) paired with ``frame``, checked against its size."""
        if self.realsense is not None:
            depth = self.realsense.read_depth(frame.image)
        else:
            depth = self.depth.read(frame.index, frame.name)
        if depth.shape[:2] != frame.image.shape[:2]:
            raise PomonaError(f"depth for {frame.name} is {depth.shape[1]}x{depth.shape[0]}, the colour frame "
                              f"{frame.image.shape[1]}x{frame.image.shape[0]}; depth must be aligned to colour")
        return depth

    def add_targets(self, frame, inst: Instances, scale: float = 1.0) -> Instances:
        """``inst`` (found in ``frame.image`` resized by ``scale``) with its picking targets set."""
        t0 = time.perf_counter()
        depth = self.read(frame)
        K = self.intrinsics.for_frame(frame.name, frame.image.shape[:2]).scaled(scale)
        if scale != 1.0:
            depth = cv2.resize(depth, (inst.image_size[1], inst.image_size[0]), interpolation=cv2.INTER_NEAREST)
        t1 = time.perf_counter()
        inst.picking = measure(inst, depth, K)
        self.last_timings = {"depth_read": (t1 - t0) * 1e3, "3d": (time.perf_counter() - t1) * 1e3}
        return inst

    def close(self) -> None:
        if self.depth is not None:
            self.depth.close()
        # a RealSense is the colour source's capture: FrameSource releases it


def open_depth(depth: str | None, intrinsics: str | Path | None, colour_spec: str) -> DepthInput | None:
    """The run's DepthInput, or None without ``--depth``."""
    if depth is None:
        if intrinsics is not None:
            raise PomonaError("--intrinsics goes with --depth DEPTH_SRC")
        return None
    return DepthInput(depth, intrinsics, colour_spec)
