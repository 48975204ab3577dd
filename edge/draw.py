"""Draw instances on a frame with OpenCV alone: masks tinted box by box, boxes, and "#id" labels with tracking.

No supervision here: its pip package brings scipy, matplotlib and PyAV, which a robot does not need to
draw a rectangle. The result equals supervision's MaskAnnotator + BoxAnnotator given this palette
(tests/test_edge.py checks it when supervision is installed, as with pomona[pipeline]).
"""

from __future__ import annotations

import cv2
import numpy as np

from pomona.instances import Instances

# pomona's overlay colours (RGB hex): saturated, none of them apple red/green or leaf green, so a tint
# and a box stay visible on the fruit and the canopy; instance i (or track id i) gets PALETTE[i % 10].
PALETTE = ("#FF00FF", "#00E5FF", "#FFD400", "#3D5AFE", "#FF6D00", "#AA00FF", "#FFFFFF", "#FF4081", "#00B8D4",
           "#C6FF00")
_BGR = np.array([[int(h[5:7], 16), int(h[3:5], 16), int(h[1:3], 16)] for h in PALETTE], np.float32)
_BGR_U8 = _BGR.astype(np.uint8)
OPACITY = 0.45
THICKNESS = 2


def colour(index: int) -> tuple[int, int, int]:
    """The BGR colour of instance (or track id) ``index``."""
    return tuple(int(v) for v in _BGR[int(index) % len(_BGR)])


def _blend_masks(scene: np.ndarray, instances: Instances, colour_index: np.ndarray, opacity: float = OPACITY) -> None:
    """Tint the masks in place as supervision's MaskAnnotator does: each mask painted in its colour on a copy
    (larger masks first, so smaller ones stay on top), then one weighted blend. Per apple only a uint8 fill of
    its box window; the float blend runs once, over the rectangle that holds every box (was: a float blend per
    apple, whose cost grew with the apples and set drawing's p99)."""
    crops = list(instances.mask_crops())
    if not crops:
        return
    painted = scene.copy()
    for i in np.argsort(-instances.areas, kind="stable"):
        _, x0, y0, inside = crops[i]
        painted[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]][inside] = _BGR_U8[int(colour_index[i]) % len(_BGR_U8)]
    x0 = min(c[1] for c in crops)
    y0 = min(c[2] for c in crops)
    x1 = max(c[1] + c[3].shape[1] for c in crops)
    y1 = max(c[2] + c[3].shape[0] for c in crops)
    window = (slice(y0, y1), slice(x0, x1))
    scene[window] = cv2.addWeighted(painted[window], opacity, scene[window], 1 - opacity, 0)


def _label(scene: np.ndarray, text: str, x: int, y: int, bgr: tuple[int, int, int], scale: float = 0.45,
           pad: int = 3) -> None:
    """``text`` on a filled box of colour ``bgr`` just above (x, y), kept inside the frame."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    w, h = tw + 2 * pad, th + base + 2 * pad
    x = min(max(x, 0), max(scene.shape[1] - w, 0))
    y = y - h if y - h >= 0 else y  # above the box, or inside it at the top edge of the frame
    cv2.rectangle(scene, (x, y), (x + w, y + h), bgr, -1)
    luminance = 0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(scene, text, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def draw_instances(image_bgr: np.ndarray, instances: Instances, show_ids: bool = False) -> np.ndarray:
    """A copy of ``image_bgr`` with masks, boxes and (with ``show_ids`` and tracking) "#id" labels."""
    scene = image_bgr.copy()
    if len(instances) == 0:
        return scene
    # with tracking, colour by track id so an apple keeps its colour from frame to frame
    if instances.track_ids is not None:
        colours = np.maximum(instances.track_ids, 0)
    else:
        colours = np.arange(len(instances))
    if instances.masks is not None:
        _blend_masks(scene, instances, colours)
    boxes = instances.boxes.astype(int)
    for (x1, y1, x2, y2), ci in zip(boxes, colours):
        cv2.rectangle(scene, (int(x1), int(y1)), (int(x2), int(y2)), colour(ci), THICKNESS)
    if show_ids and instances.track_ids is not None:
        for (x1, y1, _, _), t, ci in zip(boxes, instances.track_ids, colours):
            _label(scene, f"#{t}" if t >= 0 else "?", int(x1), int(y1), colour(ci))
    return scene
