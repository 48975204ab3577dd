"""Per-frame JSON records (one JSON Lines entry per frame)."""

from __future__ import annotations

from pomona.instances import Instances


def frame_record(index: int, timestamp: float, inst: Instances, source_name: str = "", timings: dict | None = None,
                 polygons: bool = True, extra: dict | None = None) -> dict:
    rec = {"frame": int(index), "timestamp": round(float(timestamp), 4), "image": source_name,
           "size": [int(inst.image_size[1]), int(inst.image_size[0])], "count": len(inst),
           "apples": inst.to_records(with_polygons=polygons)}
    if timings:
        rec["ms"] = {k: round(float(v), 2) for k, v in timings.items()}
    if extra:
        rec.update(extra)
    return rec
