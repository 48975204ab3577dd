"""``Predictor``: one BGR frame in, :class:`Instances` (masks at source resolution) out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pomona.edge import processing as P
from pomona.edge.backends import OnnxBackend, TensorRTBackend, UltralyticsBackend, onnx_on_cpu_only, resolve_backend
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.machine import cpu_cores
from pomona.models import resolve_model


@dataclass
class Staged:
    """One frame on its way through the model: its letterbox, then its input blob, then the raw outputs."""

    lb: P.Letterbox
    blob: np.ndarray | None
    timings: dict[str, float]
    pred: np.ndarray | None = None
    protos: np.ndarray | None = None


class Predictor:
    """Apple instance segmentation with a pomona model (.onnx, .engine, or .pt on a workstation), or a shipped
    model by name (``Predictor("pomona-apple-n")``; ``Predictor()`` is the default shipped model).

    ``backend``: "auto" (by file suffix), "onnxruntime", "tensorrt" or "ultralytics".
    ``imgsz``: inference size; a static model only runs at the size it was exported for.
    ``frames_at_once``: how many frames the caller will run through :meth:`infer` at the same time (from as
    many threads). ONNX Runtime on a CPU then gives each frame ``cores / frames_at_once`` threads; elsewhere (a
    GPU, TensorRT, Ultralytics) frames go one at a time and ``self.frames_at_once`` says 1.
    After each call, ``last_timings`` holds the stage times in ms: pre, infer, post.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", conf: float = 0.25, iou: float = 0.7,
                 imgsz: int | None = None, max_det: int = P.MAX_DET, frames_at_once: int = 1):
        # a shipped model's name (or None: the default one) resolves to its .onnx, its .pt for Ultralytics
        path = resolve_model(model, prefer="pt" if backend == "ultralytics" else "onnx")
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise PomonaError(f"conf and iou must be in 0..1, got conf={conf}, iou={iou}")
        self.model_path = path
        self.backend_name = resolve_backend(path, backend)
        if not path.exists():
            raise PomonaError(f"model not found: {path}")
        self.frames_at_once = 1
        if self.backend_name == "onnxruntime":
            if frames_at_once > 1 and onnx_on_cpu_only():
                self.frames_at_once = int(frames_at_once)
            threads = max(1, cpu_cores() // self.frames_at_once) if self.frames_at_once > 1 else None
            self._backend = OnnxBackend(path, threads=threads)
        elif self.backend_name == "tensorrt":
            self._backend = TensorRTBackend(path)
        else:
            self._backend = UltralyticsBackend(path)
        self.info = self._backend.info
        if self.info.task != "segment":
            raise PomonaError(f"{path} is a {self.info.task} model, pomona needs a segmentation model")
        self.names: dict[int, str] = dict(self.info.names)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.input_hw = self._input_size(imgsz)
        self.imgsz = max(self.input_hw)
        self.precision = self.info.precision
        self.device = getattr(self._backend, "device", "cpu")
        self.last_timings: dict[str, float] = {"pre": 0.0, "infer": 0.0, "post": 0.0}

    def _input_size(self, imgsz: int | None) -> tuple[int, int]:
        native = tuple(int(v) for v in self._backend.input_hw)
        if imgsz is None or int(imgsz) == max(native):
            return native
        if not self._backend.dynamic:
            raise PomonaError(f"{self.model_path.name} was exported for a fixed {native[1]}x{native[0]} input; "
                              f"re-export with --dynamic to run at --imgsz {imgsz}")
        s = self.info.stride
        size = max(s, int(np.ceil(int(imgsz) / s) * s))
        return (size, size)

    def __repr__(self) -> str:
        return (f"Predictor({self.model_path.name}, backend={self.backend_name}, device={self.device}, "
                f"imgsz={self.imgsz}, precision={self.precision})")

    @staticmethod
    def _as_bgr(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            raise PomonaError("expected an image as a HxWx3 BGR numpy array")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        elif image.shape[2] != 3:
            raise PomonaError(f"expected 1, 3 or 4 channels, got {image.shape[2]}")
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        return image

    @property
    def staged(self) -> bool:
        """Whether a frame can go through :meth:`prepare`, :meth:`infer` and :meth:`finish` as separate steps
        (on separate threads: the runner's pipeline); Ultralytics' predictor takes whole frames only."""
        return not isinstance(self._backend, UltralyticsBackend)

    def __call__(self, image_bgr: np.ndarray) -> Instances:
        if not self.staged:
            return self._predict_ultralytics(self._as_bgr(image_bgr))
        return self.finish(self.infer(self.prepare(image_bgr)))

    def prepare(self, image_bgr: np.ndarray) -> Staged:
        """Letterbox + blob: the CPU work before the model, which a capture thread can do."""
        t0 = time.perf_counter()
        image = self._as_bgr(image_bgr)
        padded, lb = P.letterbox(image, self.input_hw, auto=self._backend.dynamic, stride=self.info.stride)
        blob = P.to_blob(padded)
        return Staged(lb, blob, {"pre": (time.perf_counter() - t0) * 1e3})

    def infer(self, staged: Staged) -> Staged:
        """The model itself (the accelerator's, or ONNX Runtime's threads'); fills in the raw outputs."""
        t0 = time.perf_counter()
        pred, protos = self._backend(staged.blob)
        staged.timings["infer"] = (time.perf_counter() - t0) * 1e3
        staged.blob, staged.pred, staged.protos = None, pred[0], protos[0]
        return staged

    def finish(self, staged: Staged) -> Instances:
        """NMS and masks at source resolution; sets ``last_timings`` (pre, infer, post) for this frame."""
        t0 = time.perf_counter()
        inst = self.postprocess(staged.pred, staged.protos, staged.lb)
        self.last_timings = {**staged.timings, "post": (time.perf_counter() - t0) * 1e3}
        return inst

    def postprocess(self, pred: np.ndarray, protos: np.ndarray, lb: P.Letterbox) -> Instances:
        det = P.decode(pred, len(self.names), self.conf, self.iou, self.max_det)
        size = (lb.src_h, lb.src_w)
        if len(det.boxes) == 0:
            return Instances.empty(size)
        boxes = P.scale_boxes(det.boxes, lb)
        masks, filled = P.box_masks(protos.astype(np.float32, copy=False), det.coeffs, boxes, lb)
        # Ultralytics drops detections whose mask came out empty; so do we
        if not filled.all():
            keep = np.flatnonzero(filled)
            boxes, masks = boxes[keep], masks[keep]
            det.scores, det.class_ids = det.scores[keep], det.class_ids[keep]
        return Instances(boxes, masks, det.scores, det.class_ids, size)

    def _predict_ultralytics(self, image: np.ndarray) -> Instances:
        t0 = time.perf_counter()
        result = self._backend.predict(image, self.conf, self.iou, self.imgsz)
        t1 = time.perf_counter()
        inst = Instances.from_ultralytics(result)
        t2 = time.perf_counter()
        speed = dict(result.speed or {})
        pre, infer = float(speed.get("preprocess", 0.0)), float(speed.get("inference", 0.0))
        post = max((t1 - t0) * 1e3 - pre - infer, 0.0) + (t2 - t1) * 1e3  # includes its NMS + mask stage + conversion
        self.last_timings = {"pre": pre, "infer": infer, "post": post}
        return inst
