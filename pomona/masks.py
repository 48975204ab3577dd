"""Conversions between binary masks, polygons and COCO RLE, plus the mask clean-up every labeller shares.

Masks are ``bool`` arrays (H, W) or stacks (N, H, W) at image resolution. Polygons are float
arrays (K, 2) of pixel ``x, y``. An instance may have several parts (an apple split by a
branch): YOLO-seg stores one polygon per instance, so parts are joined by zero-width bridges,
the same convention as the real dev labels.
"""

from __future__ import annotations

import cv2
import numpy as np

from pomona.mosaic import mosaics


def mask_to_polygons(mask: np.ndarray, min_area: float = 1.0) -> list[np.ndarray]:
    """Outer contours of each connected part of ``mask`` (largest first), as float (K, 2) arrays."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3 and cv2.contourArea(c) >= min_area]
    if not parts:  # keep tiny/thin masks rather than silently dropping them
        parts = [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 1]
        parts = [p if len(p) >= 3 else _pixel_square(p) for p in parts]
    return sorted(parts, key=lambda p: -abs(cv2.contourArea(p)) if len(p) >= 3 else 0)


def _pixel_square(points: np.ndarray) -> np.ndarray:
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def join_polygons(parts: list[np.ndarray]) -> np.ndarray:
    """One polygon visiting every part, linked to the first by zero-width bridges (there and back)."""
    if not parts:
        return np.zeros((0, 2), np.float32)
    base = parts[0]
    if len(parts) == 1:  # the common case (one whole apple): no bridges, no per-point work
        return base.astype(np.float32)
    excursions: dict[int, list[np.ndarray]] = {}
    base32 = np.ascontiguousarray(base, np.float32)
    for part in parts[1:]:
        # the closest pair of points, base to part: OpenCV's nearest neighbour of each part point (8x faster than
        # numpy's full distance matrix, which cost 0.4 ms a frame at low thresholds, where fragments are common)
        dist, nearest = cv2.batchDistance(np.ascontiguousarray(part, np.float32), base32, cv2.CV_32F,
                                          normType=cv2.NORM_L2SQR, K=1)
        k = int(dist.argmin())
        i = int(nearest[k, 0])
        loop = np.concatenate([np.roll(part, -k, axis=0), part[k : k + 1], base[i : i + 1]])
        excursions.setdefault(int(i), []).append(loop)
    out, start = [], 0
    for i in sorted(excursions):  # base points up to and including i, then the excursions that leave from i
        out.append(base[start : i + 1])
        out.extend(excursions[i])
        start = i + 1
    out.append(base[start:])
    return np.concatenate(out).astype(np.float32)


def instance_polygons(instances, min_area: float = 1.0) -> list[np.ndarray]:
    """``mask_to_polygon`` of every instance's mask, in frame pixels: all masks outlined by one findContours
    on a mosaic of their windows (pomona/mosaic.py); only a mask in several parts, or one too small for a
    polygon, is redone on its own."""
    out = [np.zeros((0, 2), np.float32) for _ in range(len(instances))]
    for mosaic in mosaics(instances):
        contours, window = mosaic.contours(cv2.CHAIN_APPROX_SIMPLE)
        parts = np.bincount(window, minlength=len(mosaic.index))
        done = np.zeros(len(mosaic.index), bool)
        for contour, k in zip(contours, window.tolist()):
            if parts[k] == 1 and len(contour) >= 3 and cv2.contourArea(contour) >= min_area:
                out[mosaic.index[k]] = contour.astype(np.float32)
                done[k] = True
        for k in np.flatnonzero(~done).tolist():
            (x0, y0), (h, w) = mosaic.origin[k], mosaic.shape[k]
            crop = instances.masks[mosaic.index[k], y0:y0 + h, x0:x0 + w]
            out[mosaic.index[k]] = mask_to_polygon(crop, min_area) + np.array([x0, y0], np.float32)
    return out


def mask_to_polygon(mask: np.ndarray, min_area: float = 1.0) -> np.ndarray:
    """A single (bridged) polygon for one instance mask; empty (0, 2) when the mask is empty."""
    return join_polygons(mask_to_polygons(mask, min_area))


def polygons_to_mask(polygons: list[np.ndarray] | np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise one instance's polygon(s) (pixel coordinates) to a bool mask."""
    if isinstance(polygons, np.ndarray):
        polygons = [polygons]
    canvas = np.zeros((height, width), np.uint8)
    pts = [np.round(p).astype(np.int32).reshape(-1, 1, 2) for p in polygons if len(p) >= 3]
    if pts:
        cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (N, 4) float32 of (N, H, W) masks; pixel-edge convention (x1 = last col + 1)."""
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows = masks.any(2)
    cols = masks.any(1)
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        if len(xs):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE with a JSON-ready ``counts`` string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = dict(rle)
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) between mask stacks (N, H, W) and (M, H, W)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return (inter / np.maximum(union, 1.0)).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) between xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


# --- clean-up shared by all labellers -------------------------------------------------------------


def remove_small_fragments(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected parts smaller than ``min_area`` pixels (SAM leaves speckles at leaf edges)."""
    if min_area <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background (specular highlights that SAM cuts out of an apple)."""
    if not mask.any():
        return mask
    m = mask.astype(np.uint8)
    h, w = m.shape
    flood = np.pad(m, 1)
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return mask | (flood[1:-1, 1:-1] == 0)


def resolve_overlaps(masks: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Give each pixel to one instance only: the first in ``order`` (e.g. by descending score) wins."""
    out = masks.copy()
    taken = np.zeros(masks.shape[1:], bool)
    for i in order:
        out[i] &= ~taken
        taken |= out[i]
    return out
