"""Automatic labellers: one image in, apple :class:`~pomona.instances.Instances` out.

- :class:`DetectorSamLabeler` (``yolo-sam``, the paper's method): an Ultralytics YOLO detector finds
  the boxes of the class named ``apple`` only, then a SAM-family model segments all of an image's
  boxes from one image encoding.
- :class:`TeacherLabeler` (``model``): a trained YOLO-seg model's masks are the labels; with a
  segmenter, its boxes are re-segmented by SAM instead.

Score of a label = the detector's (teacher's) confidence. SAM's predicted IoU is not used: it is
not calibrated across SAM variants and is close to constant for box prompts, so multiplying it in
would make ``--min-score`` mean something different for every segmenter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pomona.errors import PomonaError, first_line
from pomona.instances import Instances
from pomona.pipeline.segmenters import BoxSegmenter
from pomona.pipeline.weights import ULTRALYTICS_ASSETS, find_weights
from pomona.pipeline.weights import load_yolo as _load_yolo

DEFAULT_DETECTOR = "yolo11x.pt"
APPLE = "apple"
APPLE_ID = 0  # pomona's class id for apples in labels/ and annotations.json


def find_yolo_weights(name: str | Path, what: str = "detector") -> Path | None:
    # a teacher is usually one's own RUN/weights/best.pt: Ultralytics' releases would be a wrong hint
    return find_weights(name, f"YOLO {what}", ULTRALYTICS_ASSETS if what == "detector" else "")


def load_yolo(name: str | Path, what: str = "detector"):
    """An Ultralytics YOLO detector/teacher from a weights file that must exist."""
    return _load_yolo(name, f"YOLO {what}", url_hint=ULTRALYTICS_ASSETS if what == "detector" else "")


def apple_class_id(model, source: str) -> int:
    """The id of the class named ``apple`` in an Ultralytics model (COCO-pretrained models: 47)."""
    names = {int(k): str(v) for k, v in dict(model.names).items()}
    for class_id, name in sorted(names.items()):
        if name.strip().lower() == APPLE:
            return class_id
    shown = ", ".join(list(names.values())[:8]) + (", ..." if len(names) > 8 else "")
    raise PomonaError(f"{source} has no class named '{APPLE}' (its {len(names)} classes: {shown}); "
                      f"only apples are labelled, so the model must know them")


class _YoloLabeler:
    def __init__(self, model, source: str, conf: float, imgsz: int, device: str):
        self.model, self.conf, self.imgsz, self.device = model, conf, imgsz, device
        self.apple_id = apple_class_id(model, source)

    def _predict(self, image: np.ndarray):
        # classes=: only apples take part in NMS and max_det (Ultralytics' own class filter)
        try:
            return self.model.predict(image, conf=self.conf, imgsz=self.imgsz, device=self.device, classes=[self.apple_id],
                                      retina_masks=True, verbose=False)[0]
        except Exception as e:
            if isinstance(e, PomonaError):
                raise
            raise PomonaError(f"the YOLO model failed on an image ({type(e).__name__}: {first_line(e, 160)})") from None

    def _segment_boxes(self, segmenter: BoxSegmenter, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> Instances:
        size = image.shape[:2]
        if len(boxes) == 0:  # nothing to prompt: skip the encoder entirely
            return Instances.empty(size)
        segmenter.set_image(image)
        masks, _ = segmenter.predict(boxes)
        return Instances.from_masks(masks, scores, np.full(len(masks), APPLE_ID), size)


class DetectorSamLabeler(_YoloLabeler):
    """``yolo-sam``: detector boxes of class ``apple`` -> SAM masks, one encoder pass per image."""

    def __init__(self, detector, segmenter: BoxSegmenter, source: str, conf: float, imgsz: int, device: str):
        super().__init__(detector, source, conf, imgsz, device)
        self.segmenter = segmenter

    def __call__(self, image: np.ndarray) -> Instances:
        boxes = self._predict(image).boxes
        return self._segment_boxes(self.segmenter, image, boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy())


class TeacherLabeler(_YoloLabeler):
    """``model``: a trained YOLO-seg model labels; with ``refiner``, SAM re-segments its boxes."""

    def __init__(self, model, source: str, conf: float, imgsz: int, device: str, refiner: BoxSegmenter | None = None):
        super().__init__(model, source, conf, imgsz, device)
        if refiner is None and model.task != "segment":
            raise PomonaError(f"{source} is a '{model.task}' model without masks; the model labeller needs a YOLO-seg "
                              f"model, or --refine to segment its boxes with SAM")
        self.refiner = refiner

    def __call__(self, image: np.ndarray) -> Instances:
        result = self._predict(image)
        if self.refiner is not None:
            boxes = result.boxes
            return self._segment_boxes(self.refiner, image, boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy())
        inst = Instances.from_ultralytics(result)
        if inst.masks is None:
            raise PomonaError("the teacher model returned boxes without masks; use a YOLO-seg model or --refine")
        return Instances.from_masks(inst.masks, inst.scores, np.full(len(inst), APPLE_ID), inst.image_size)
