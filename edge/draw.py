"""Draw instances on a frame: masks tinted box by box, boxes and track ids with supervision's annotators."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pomona.instances import Instances


@lru_cache(maxsize=1)
def _annotators():
    import supervision as sv

    return (sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.INDEX),
            sv.LabelAnnotator(text_scale=0.45, text_padding=3, color_lookup=sv.ColorLookup.INDEX))


def _blend_masks(scene: np.ndarray, instances: Instances, colour_index: np.ndarray, opacity: float = 0.45) -> None:
    """Tint each mask in place, touching only the pixels inside its box.

    supervision's MaskAnnotator does the same over the whole frame once per apple, which made drawing
    the slowest stage of a 30-apple frame on a small CPU; the colours come from its palette.
    """
    import supervision as sv

    palette = sv.ColorPalette.DEFAULT
    for (_, x0, y0, inside), ci in zip(instances.mask_crops(), colour_index):
        region = scene[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]]
        colour = np.array(palette.by_idx(int(ci)).as_bgr(), np.float32)
        region[inside] = (region[inside] * (1 - opacity) + colour * opacity).astype(np.uint8)


def draw_instances(image_bgr: np.ndarray, instances: Instances, show_ids: bool = False) -> np.ndarray:
    """A copy of ``image_bgr`` with masks, boxes and (with ``show_ids`` and tracking) "#id" labels."""
    scene = image_bgr.copy()
    if len(instances) == 0:
        return scene
    boxes, labels = _annotators()
    det = instances.to_supervision()
    # with tracking, colour by track id so an apple keeps its colour from frame to frame
    colours = np.maximum(instances.track_ids, 0) if instances.track_ids is not None else None
    if instances.masks is not None:
        _blend_masks(scene, instances, colours if colours is not None else np.arange(len(instances)))
    scene = boxes.annotate(scene, det, custom_color_lookup=colours)
    if show_ids and instances.track_ids is not None:
        text = [f"#{t}" if t >= 0 else "?" for t in instances.track_ids]
        scene = labels.annotate(scene, det, labels=text, custom_color_lookup=colours)
    return scene
