"""Draw instances on a frame with supervision's annotators (masks, boxes, optional track ids)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pomona.instances import Instances


@lru_cache(maxsize=1)
def _annotators():
    import supervision as sv

    return (sv.MaskAnnotator(opacity=0.45, color_lookup=sv.ColorLookup.INDEX),
            sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.INDEX),
            sv.LabelAnnotator(text_scale=0.45, text_padding=3, color_lookup=sv.ColorLookup.INDEX))


def draw_instances(image_bgr: np.ndarray, instances: Instances, show_ids: bool = False) -> np.ndarray:
    """A copy of ``image_bgr`` with masks, boxes and (with ``show_ids`` and tracking) "#id" labels."""
    scene = image_bgr.copy()
    if len(instances) == 0:
        return scene
    masks, boxes, labels = _annotators()
    det = instances.to_supervision()
    # with tracking, colour by track id so an apple keeps its colour from frame to frame
    colours = np.maximum(instances.track_ids, 0) if instances.track_ids is not None else None
    if det.mask is not None:
        scene = masks.annotate(scene, det, custom_color_lookup=colours)
    scene = boxes.annotate(scene, det, custom_color_lookup=colours)
    if show_ids and instances.track_ids is not None:
        text = [f"#{t}" if t >= 0 else "?" for t in instances.track_ids]
        scene = labels.annotate(scene, det, labels=text, custom_color_lookup=colours)
    return scene
