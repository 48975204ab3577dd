"""Pre- and post-processing for YOLO-seg outputs in numpy/OpenCV, matching Ultralytics' predictor.

Letterbox, box scaling and NMS follow ultralytics (data/augment.py LetterBox, utils/ops.py
scale_boxes, utils/nms.py non_max_suppression) number for number, so the edge runtime returns the
same apples as ``YOLO(model).predict``. Masks follow ``process_mask_native`` (retina masks: the
prototype logits sampled straight at source resolution), but only inside each kept box: a 30-apple
1080p frame costs 30 box-sized warps, not 30 full-frame upsamples.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_WH = 7680  # class offset for class-wise NMS in one pass (as Ultralytics)
MAX_NMS = 30000  # candidates kept for NMS, by score
MAX_DET = 300


@dataclass(frozen=True)
class Letterbox:
    """How a source image of (src_h, src_w) was placed into the (in_h, in_w) network input."""

    src_h: int
    src_w: int
    in_h: int
    in_w: int
    new_h: int  # resized content size inside the input
    new_w: int
    top: int
    left: int

    @property
    def gain_x(self) -> float:
        return self.new_w / self.src_w

    @property
    def gain_y(self) -> float:
        return self.new_h / self.src_h


def letterbox_geometry(src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool = False, stride: int = 32) -> Letterbox:
    """Ultralytics LetterBox.get_params (center=True, scaleup=True); ``auto`` pads only to a stride multiple."""
    h, w = src_hw
    th, tw = target_hw
    r = min(th / h, tw / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Letterbox(h, w, new_h + top + bottom, new_w + left + right, new_h, new_w, top, left)


def letterbox(image: np.ndarray, target_hw: tuple[int, int], auto: bool = False, stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    lb = letterbox_geometry(image.shape[:2], target_hw, auto, stride)
    if (lb.new_h, lb.new_w) != image.shape[:2]:
        image = cv2.resize(image, (lb.new_w, lb.new_h), interpolation=cv2.INTER_LINEAR)
    bottom, right = lb.in_h - lb.new_h - lb.top, lb.in_w - lb.new_w - lb.left
    if lb.top or bottom or lb.left or right:
        image = cv2.copyMakeBorder(image, lb.top, bottom, lb.left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, lb


def to_blob(image_bgr: np.ndarray, dtype=np.float32) -> np.ndarray:
    """HWC BGR uint8 -> 1x3xHxW RGB in [0, 1] (one OpenCV pass)."""
    blob = cv2.dnn.blobFromImage(image_bgr, scalefactor=1 / 255.0, swapRB=True, crop=False)
    return blob if dtype == np.float32 else blob.astype(dtype)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (torchvision semantics: suppress IoU > threshold), indices by descending score; ``scores`` > 0.

    OpenCV's NMSBoxes runs the same greedy loop in C++ (ties in index order, as torchvision's stable sort): the
    same indices as torchvision on random boxes with tied scores (tests/test_edge.py), 30x faster than the numpy
    loop at 100 boxes, where that loop cost 0.3 ms a frame at --conf 0.05. Older OpenCV bindings (before 4.5.4,
    e.g. Ubuntu 20.04's on a Jetson) pass only integer boxes, so there the numpy loop runs.
    """
    if len(boxes) == 0 or not _opencv_nms_takes_floats():
        return greedy_nms(boxes, scores, iou_threshold)
    boxes = np.asarray(boxes, np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), np.asarray(scores, np.float64).tolist(), 0.0, float(iou_threshold))
    return np.asarray(keep, np.int64).reshape(-1)


@functools.lru_cache(maxsize=1)
def _opencv_nms_takes_floats() -> bool:
    """Whether cv2.dnn.NMSBoxes keeps fractional boxes: two 0.4-px boxes overlap by IoU 0.14, which integer
    boxes (both 0 x 0) would not."""
    try:
        keep = cv2.dnn.NMSBoxes([[0.0, 0.0, 0.4, 0.4], [0.2, 0.2, 0.4, 0.4]], [1.0, 0.9], 0.0, 0.1)
    except (cv2.error, AttributeError):
        return False
    return np.asarray(keep).reshape(-1).tolist() == [0]


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """:func:`nms` in numpy, one box per step (where OpenCV's cannot take fractional boxes)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = np.asarray(boxes, np.float32).T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


@dataclass
class Detections:
    """Kept detections in network-input coordinates, before masks."""

    boxes: np.ndarray  # (N, 4) xyxy, input pixels
    scores: np.ndarray
    class_ids: np.ndarray
    coeffs: np.ndarray  # (N, nm) mask coefficients


def decode(pred: np.ndarray, nc: int, conf: float, iou: float, max_det: int = MAX_DET, agnostic: bool = False) -> Detections:
    """One image's raw head output (4 + nc + nm, anchors) -> class-wise NMS'd detections.

    Only anchors above ``conf`` are transposed and touched, so the cost scales with apples, not anchors.
    """
    pred = np.asarray(pred, np.float32)
    cls_scores = pred[4 : 4 + nc]
    best = cls_scores.max(0) if nc > 1 else cls_scores[0]
    idx = np.flatnonzero(best > conf)
    nm = pred.shape[0] - 4 - nc
    if idx.size == 0:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, nm), np.float32))
    cand = pred[:, idx].T  # (K, C)
    scores = best[idx]
    class_ids = cls_scores[:, idx].argmax(0) if nc > 1 else np.zeros(idx.size, np.int64)
    if idx.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cand, scores, class_ids = cand[top], scores[top], class_ids[top]
    xy, wh = cand[:, :2], cand[:, 2:4] / 2
    boxes = np.concatenate([xy - wh, xy + wh], 1)
    offset = 0 if agnostic else class_ids[:, None].astype(np.float32) * MAX_WH
    keep = nms(boxes + offset, scores, iou)[:max_det]
    return Detections(boxes[keep], scores[keep], class_ids[keep].astype(np.int64), cand[keep, 4 + nc :])


def scale_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Input-pixel boxes -> source-pixel boxes, clipped (Ultralytics scale_boxes + clip_boxes)."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.left) / lb.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.top) / lb.gain_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, lb.src_w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, lb.src_h)
    return out


def box_masks(protos: np.ndarray, coeffs: np.ndarray, boxes_src: np.ndarray, lb: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """Instance masks at source resolution, computed only inside each (source-pixel) box, and whether each
    came out non-empty (Ultralytics drops the empty ones; the caller does too).

    A source pixel x maps to letterboxed content ((x + .5) * gain + left) and on to prototype
    coordinates (* mw / in_w - .5): one affine warp per box samples the logit map bilinearly
    (edge-clamped, as F.interpolate), exactly where the mask can be non-zero after the box crop.
    The logits themselves are only computed in the prototype window under each box (plus the pixel
    that bilinear sampling reads beyond it), with einsum rather than one big matmul: numpy's BLAS runs a
    matmul of the whole map on threads of its own that fight ONNX Runtime's for the cores (measured
    33 ms instead of 0.4 ms for 21 apples on a busy 2-core machine). Every box's window is worked out for
    all boxes at once, so the loop holds only the per-box numpy and OpenCV calls.
    """
    nm, mh, mw = protos.shape
    n = len(coeffs)
    masks = np.zeros((n, lb.src_h, lb.src_w), bool)
    filled = np.zeros(n, bool)
    if n == 0:
        return masks, filled
    protos = protos.astype(np.float32, copy=False)
    coeffs = coeffs.astype(np.float32, copy=False)
    sx, sy = mw / lb.in_w, mh / lb.in_h
    ax, ay = lb.gain_x * sx, lb.gain_y * sy
    bx = (0.5 * lb.gain_x + lb.left) * sx - 0.5
    by = (0.5 * lb.gain_y + lb.top) * sy - 0.5
    # Ultralytics crop_mask keeps integer pixel columns c with x1 <= c < x2
    x0s = np.ceil(boxes_src[:, 0]).astype(int)
    y0s = np.ceil(boxes_src[:, 1]).astype(int)
    x1s = np.minimum(np.ceil(boxes_src[:, 2]).astype(int), lb.src_w)
    y1s = np.minimum(np.ceil(boxes_src[:, 3]).astype(int), lb.src_h)
    # prototype pixels the warp reads for each box: from floor(first sample) to floor(last sample) + 1
    px0s = np.clip(np.floor(ax * x0s + bx).astype(int), 0, mw - 1)
    py0s = np.clip(np.floor(ay * y0s + by).astype(int), 0, mh - 1)
    px1s = np.minimum(np.maximum(np.floor(ax * (x1s - 1) + bx).astype(int) + 2, px0s + 1), mw)
    py1s = np.minimum(np.maximum(np.floor(ay * (y1s - 1) + by).astype(int) + 2, py0s + 1), mh)
    windows = np.stack([x0s, y0s, x1s, y1s, px0s, py0s, px1s, py1s], 1).tolist()
    for i, (x0, y0, x1, y1, px0, py0, px1, py1) in enumerate(windows):
        if x1 <= x0 or y1 <= y0:
            continue
        window = np.einsum("k,khw->hw", coeffs[i], protos[:, py0:py1, px0:px1])
        m = np.array([[ax, 0.0, ax * x0 + bx - px0], [0.0, ay, ay * y0 + by - py0]], np.float64)
        region = cv2.warpAffine(window, m, (x1 - x0, y1 - y0),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        inside = masks[i, y0:y1, x0:x1]
        np.greater(region, 0, out=inside)
        filled[i] = inside.any()
    return masks, filled
