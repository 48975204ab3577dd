"""Many instances' masks packed side by side into one label image, so one OpenCV call works on all of them.

Per-apple work on a frame of 20-40 apples used to be a handful of OpenCV and numpy calls per apple, and on a
2-core edge CPU the Python around each call cost more than the call itself (findContours on a 50x50 crop is a
few microseconds; reaching it is more). A mosaic puts every mask window into one uint8 image, window k's pixels
holding the label k + 1, with ``GAP`` empty pixels between windows: one findContours outlines every mask, one
erosion erodes every mask (no window reaches another), one histogram counts every area. Used by the picking
step (pomona/picking.py) and by the polygons of each JSONL line (Instances.polygons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

GAP = 2  # empty pixels between two windows: the reach of a 5x5 erosion, so no window sees another
PER_MOSAIC = 255  # windows per mosaic: its pixels are uint8 labels (1..255, 0 = background)


@dataclass
class Mosaic:
    """Up to 255 mask windows in one image; ``image`` pixels hold each window's label (k + 1), 0 elsewhere."""

    image: np.ndarray  # (H, W) uint8 labels
    index: np.ndarray  # (K,) index of each window's instance
    at: np.ndarray  # (K, 2) x, y of each window in the mosaic
    origin: np.ndarray  # (K, 2) x0, y0 of each window in the frame
    shape: np.ndarray  # (K, 2) height, width of each window
    area: np.ndarray  # (K,) mask pixels of each window (counted on the crops: a histogram of the whole mosaic
    # reads every pixel of every window, gaps included, and cost 8x as much)

    def contours(self, method: int = cv2.CHAIN_APPROX_NONE) -> tuple[list[np.ndarray], np.ndarray]:
        """The outer contours of every mask part, in the frame's pixel coordinates, and the window (k) of each."""
        found, _ = cv2.findContours(self.image, cv2.RETR_EXTERNAL, method)
        if not found:
            return [], np.zeros(0, np.int64)
        points, window = self._in_frame(found)
        starts = np.cumsum([len(c) for c in found[:-1]], dtype=np.int64)
        return np.split(points, starts), window[np.r_[0, starts]]

    def boundary(self) -> tuple[np.ndarray, np.ndarray]:
        """Every window's outer boundary pixels as one (M, 2) array of frame x, y, and the window (k) of each
        point: what ``contours()`` gives, without a Python step per point. Grouped by window (its contours one
        after another, in findContours' order, each contour's points in order): the contours are sorted, not
        their thousands of points."""
        found, _ = cv2.findContours(self.image, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not found:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
        first = np.array([c[0, 0] for c in found])  # each contour's first point (x, y), inside its own window
        order = np.argsort(self.image[first[:, 1], first[:, 0]], kind="stable")
        return self._in_frame([found[i] for i in order.tolist()])

    def _in_frame(self, found) -> tuple[np.ndarray, np.ndarray]:
        """findContours' points joined, moved from the mosaic to the frame, and the window (k) of each point."""
        points = np.concatenate(found).reshape(-1, 2)
        window = self.image[points[:, 1], points[:, 0]].astype(np.int64) - 1  # each point is its own mask's pixel
        return points + (self.origin - self.at)[window], window

def _pack(shapes: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Shelf packing: windows by height, left to right in rows about as wide as the mosaic is tall.
    Returns each window's x, y and the mosaic's height, width."""
    order = np.argsort(-shapes[:, 0], kind="stable")
    width = max(int(shapes[:, 1].max()), int(math.sqrt((shapes + GAP).prod(1).sum()))) + GAP
    at = np.zeros((len(shapes), 2), np.int64)
    x = y = shelf = GAP
    for k in order.tolist():
        h, w = int(shapes[k, 0]), int(shapes[k, 1])
        if x + w + GAP > width:
            x, y = GAP, shelf
        at[k] = x, y
        x += w + GAP
        shelf = max(shelf, y + h + GAP)
    return at, (shelf, width)


def mosaics(instances) -> list[Mosaic]:
    """The instances' non-empty mask windows (``Instances.mask_crops``), 255 to a mosaic."""
    crops = [c for c in instances.mask_crops() if c[3].size]
    return [_mosaic(crops[s:s + PER_MOSAIC]) for s in range(0, len(crops), PER_MOSAIC)]


def _mosaic(crops: list) -> Mosaic:
    index = np.array([c[0] for c in crops])
    origin = np.array([(c[1], c[2]) for c in crops], np.int64)
    shape = np.array([c[3].shape for c in crops], np.int64)
    at, size = _pack(shape)
    image = np.zeros(size, np.uint8)
    area = np.zeros(len(crops), np.int64)
    for k, ((_, _, _, crop), (x, y)) in enumerate(zip(crops, at.tolist())):
        # uint8 x uint8 into the window (a bool crop times a Python int would run in int64 and cast back: 2x slower)
        np.multiply(crop.view(np.uint8), np.uint8(k + 1), out=image[y:y + crop.shape[0], x:x + crop.shape[1]])
        area[k] = np.count_nonzero(crop)
    return Mosaic(image, index, at, origin, shape, area)
