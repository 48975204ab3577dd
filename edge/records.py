"""Per-frame JSON records (one JSON Lines entry per frame), computed on each box crop, not the full frame."""

from __future__ import annotations

import numpy as np

from pomona.instances import Instances
from pomona.masks import mask_to_polygon


def apple_records(inst: Instances, polygons: bool = True, decimals: int = 1) -> list[dict]:
    """box, score, mask area, centroid, polygon (and track id) per apple; O(box area) per apple."""
    out = []
    h, w = inst.image_size
    for i in range(len(inst)):
        box = inst.boxes[i]
        rec = {"box": [round(float(v), decimals) for v in box], "score": round(float(inst.scores[i]), 4),
               "class_id": int(inst.class_ids[i])}
        if inst.track_ids is not None:
            rec["track_id"] = int(inst.track_ids[i])
        if inst.masks is not None:
            x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
            x1, y1 = min(int(np.ceil(box[2])) + 1, w), min(int(np.ceil(box[3])) + 1, h)
            crop = inst.masks[i, y0:y1, x0:x1]
            ys, xs = np.nonzero(crop)
            rec["area"] = int(len(xs))
            cx, cy = (xs.mean() + x0, ys.mean() + y0) if len(xs) else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            rec["centroid"] = [round(float(cx), decimals), round(float(cy), decimals)]
            if polygons:
                poly = mask_to_polygon(crop) + np.array([x0, y0], np.float32) if len(xs) else np.zeros((0, 2))
                rec["polygon"] = np.round(poly, decimals).tolist()
        else:
            rec["area"] = int((box[2] - box[0]) * (box[3] - box[1]))
            rec["centroid"] = [round(float((box[0] + box[2]) / 2), decimals), round(float((box[1] + box[3]) / 2), decimals)]
        out.append(rec)
    return out


def frame_record(index: int, timestamp: float, inst: Instances, source_name: str = "", timings: dict | None = None,
                 polygons: bool = True, extra: dict | None = None) -> dict:
    rec = {"frame": int(index), "timestamp": round(float(timestamp), 4), "image": source_name,
           "size": [int(inst.image_size[1]), int(inst.image_size[0])], "count": len(inst),
           "apples": apple_records(inst, polygons)}
    if timings:
        rec["ms"] = {k: round(float(v), 2) for k, v in timings.items()}
    if extra:
        rec.update(extra)
    return rec
