"""``Instances``: the one interchange type for apple instances.

Every stage speaks it: the renderer and the labellers produce it, datasets are read into it,
evaluation compares two of them, and the edge runtime returns it per frame. Pure numpy, so the
edge path can use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from pomona import masks as mask_ops

if TYPE_CHECKING:
    from pomona.picking import PickingTargets


@dataclass
class Instances:
    """N instances in an image of size ``image_size`` = (height, width).

    boxes: (N, 4) float32 xyxy pixels. masks: (N, H, W) bool at image resolution, or None for
    box-only results. scores: (N,) float32 (1.0 for ground truth). class_ids: (N,) int64.
    track_ids: (N,) int64 or None (set by tracking). picking: per-apple 3D fields
    (:class:`pomona.picking.PickingTargets`) or None (set from aligned depth, ``pomona run --depth``).
    """

    boxes: np.ndarray
    masks: np.ndarray | None
    scores: np.ndarray
    class_ids: np.ndarray
    image_size: tuple[int, int]
    track_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    picking: "PickingTargets | None" = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, np.float32).reshape(n)
        self.class_ids = np.asarray(self.class_ids, np.int64).reshape(n)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.masks is not None:
            self.masks = np.asarray(self.masks, bool).reshape(n, *self.image_size)
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, np.int64).reshape(n)
        if self.picking is not None and len(self.picking) != n:
            raise ValueError(f"picking targets for {len(self.picking)} apples, instances hold {n}")

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, image_size: tuple[int, int], with_masks: bool = True) -> "Instances":
        h, w = image_size
        return cls(np.zeros((0, 4)), np.zeros((0, h, w), bool) if with_masks else None, [], [], image_size)

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray | Sequence[np.ndarray],
        scores: np.ndarray | None = None,
        class_ids: np.ndarray | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> "Instances":
        """Boxes are derived from the masks (tight)."""
        if image_size is None:
            image_size = tuple(np.asarray(masks[0]).shape[:2]) if len(masks) else (0, 0)
        stack = np.asarray(masks, bool).reshape(-1, *image_size) if len(masks) else np.zeros((0, *image_size), bool)
        n = len(stack)
        return cls(
            mask_ops.masks_to_boxes(stack),
            stack,
            np.ones(n, np.float32) if scores is None else scores,
            np.zeros(n, np.int64) if class_ids is None else class_ids,
            image_size,
        )

    # --- container protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Instances":
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Instances(
            self.boxes[index],
            None if self.masks is None else self.masks[index],
            self.scores[index],
            self.class_ids[index],
            self.image_size,
            None if self.track_ids is None else self.track_ids[index],
            dict(self.meta),
            None if self.picking is None else self.picking[index],
        )

    # --- derived quantities -------------------------------------------------------------------------
    # Every producer keeps a mask inside its box (derived from it, or cropped to it as Ultralytics and
    # the edge runtime do), so per-apple work looks at the box window only: O(box area), not O(frame).
    def _windows(self) -> np.ndarray:
        """(N, 4) integer x0, y0, x1, y1 covering each box (one pixel of margin), clipped to the image."""
        h, w = self.image_size
        x0 = np.clip(np.floor(self.boxes[:, 0]), 0, w)
        y0 = np.clip(np.floor(self.boxes[:, 1]), 0, h)
        x1 = np.clip(np.ceil(self.boxes[:, 2]) + 1, 0, w)
        y1 = np.clip(np.ceil(self.boxes[:, 3]) + 1, 0, h)
        return np.stack([x0, y0, x1, y1], 1).astype(int)

    def mask_crops(self):
        """(index, x0, y0, mask crop inside the box window) per instance; needs masks."""
        for i, (x0, y0, x1, y1) in enumerate(self._windows()):
            yield i, x0, y0, self.masks[i, y0:y1, x0:x1]

    @property
    def areas(self) -> np.ndarray:
        """Mask areas in pixels (box areas when there are no masks)."""
        if self.masks is None:
            return ((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])).astype(np.float32)
        out = np.zeros(len(self), np.float32)
        for i, _, _, crop in self.mask_crops():
            out[i] = np.count_nonzero(crop)
        return out

    @property
    def centroids(self) -> np.ndarray:
        """(N, 2) x, y centroid of each mask (box centre when there are no masks or the mask is empty)."""
        if self.masks is not None:
            return self._moments()[1]
        out = np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2, (self.boxes[:, 1] + self.boxes[:, 3]) / 2], 1)
        return out.astype(np.float32).reshape(len(self), 2)

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mask areas and centroids in one pass over the box windows: one ``cv2.moments`` per apple (pixel count
        and coordinate sums in C) rather than the coordinates of every pixel, which cost a frame's budget. The
        same numbers as row and column counts in numpy, and as fast (0.24 ms for a 14-apple frame either way)."""
        areas = np.zeros(len(self), np.float32)
        cents = np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2, (self.boxes[:, 1] + self.boxes[:, 3]) / 2], 1)
        cents = cents.astype(np.float32).reshape(len(self), 2)
        for i, x0, y0, crop in self.mask_crops():
            if not crop.size:
                continue
            m = cv2.moments(crop.view(np.uint8), binaryImage=True)
            areas[i] = m["m00"]
            if m["m00"]:
                cents[i] = (m["m10"] / m["m00"] + x0, m["m01"] / m["m00"] + y0)
        return areas, cents

    def polygons(self) -> list[np.ndarray]:
        """One (bridged) pixel polygon per instance; the box outline where there is no mask."""
        if self.masks is None:
            return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32) for x0, y0, x1, y1 in self.boxes]
        return mask_ops.instance_polygons(self)

    def with_masks_cleaned(self, min_area: int = 0, fill: bool = False, exclusive: bool = True) -> "Instances":
        """Shared label clean-up: holes filled, fragments under ``min_area`` px dropped, overlaps
        resolved (higher score wins), then instances left empty removed and boxes re-derived."""
        if self.masks is None or len(self) == 0:
            return self
        masks = self.masks.copy()
        if fill:
            masks = np.stack([mask_ops.fill_holes(m) for m in masks])
        if exclusive:
            masks = mask_ops.resolve_overlaps(masks, np.argsort(-self.scores, kind="stable"))
        masks = np.stack([mask_ops.remove_small_fragments(m, min_area) for m in masks])
        keep = masks.reshape(len(masks), -1).sum(1) >= max(min_area, 1)
        out = Instances(mask_ops.masks_to_boxes(masks), masks, self.scores, self.class_ids, self.image_size, self.track_ids)
        return out[np.flatnonzero(keep)]

    # --- interop ------------------------------------------------------------------------------------
    def to_supervision(self):
        """As ``supervision.Detections`` (the pipeline's overlays; needs supervision, from pomona[pipeline])."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.boxes.copy(),
            mask=None if self.masks is None else self.masks,
            confidence=self.scores.copy(),
            class_id=self.class_ids.astype(int),
            tracker_id=None if self.track_ids is None else self.track_ids.astype(int),
        )

    @classmethod
    def from_supervision(cls, detections, image_size: tuple[int, int]) -> "Instances":
        n = len(detections)
        return cls(
            detections.xyxy,
            detections.mask,
            np.ones(n) if detections.confidence is None else detections.confidence,
            np.zeros(n) if detections.class_id is None else detections.class_id,
            image_size,
            detections.tracker_id,
        )

    @classmethod
    def from_ultralytics(cls, result) -> "Instances":
        """From one ``ultralytics.engine.results.Results``; masks resized to the original image."""
        h, w = result.orig_shape
        boxes = result.boxes
        n = 0 if boxes is None else len(boxes)
        if n == 0:
            return cls.empty((h, w))
        masks = None
        if result.masks is not None:
            data = result.masks.data
            if tuple(data.shape[1:]) != (h, w):  # retina_masks=False gives letterboxed masks at inference size
                from ultralytics.utils.ops import scale_masks

                data = scale_masks(data[None].float(), (h, w))[0]
            masks = data.cpu().numpy() > 0.5
        inst = cls(
            boxes.xyxy.cpu().numpy(),
            masks,
            boxes.conf.cpu().numpy(),
            boxes.cls.cpu().numpy().astype(np.int64),
            (h, w),
            None if boxes.id is None else boxes.id.cpu().numpy(),
        )
        if masks is not None:  # upsampled low-resolution masks spill a little past their boxes: crop, as Ultralytics does
            inside = np.zeros_like(masks)
            for i, (x0, y0, x1, y1) in enumerate(inst._windows()):
                inside[i, y0:y1, x0:x1] = True
            inst.masks &= inside
        return inst

    def to_records(self, with_polygons: bool = False, decimals: int = 1) -> list[dict]:
        """JSON-ready per-instance dicts (box, score, class, mask area, centroid, optional track id, 3D picking
        fields and polygon)."""
        areas, cents = self._moments() if self.masks is not None else (self.areas, self.centroids)
        polys = self.polygons() if with_polygons else None
        out = []
        for i in range(len(self)):
            rec = {
                "box": [round(float(v), decimals) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
                "class_id": int(self.class_ids[i]),
                "area": int(areas[i]),
                "centroid": [round(float(v), decimals) for v in cents[i]],
            }
            if self.track_ids is not None:
                rec["track_id"] = int(self.track_ids[i])
            if self.picking is not None:
                rec.update(self.picking.record(i))
            if polys is not None:  # a mask's outline runs through pixel coordinates: whole numbers, written as such
                rec["polygon"] = (polys[i].astype(np.int32) if self.masks is not None else np.round(polys[i], decimals)).tolist()
            out.append(rec)
        return out
