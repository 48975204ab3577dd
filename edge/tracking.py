"""Follow apples across frames (ByteTrack from Roboflow's ``trackers``, the tracker supervision
delegates to) and count distinct apples along a row."""

from __future__ import annotations

import numpy as np

from pomona.errors import PomonaError
from pomona.instances import Instances


class AppleTracker:
    """``inst = tracker.update(inst)`` sets ``inst.track_ids`` (-1 for a not yet confirmed apple);
    ``tracker.count`` is the number of distinct confirmed apples seen so far."""

    def __init__(self, frame_rate: float = 30.0, lost_track_buffer: int = 30, track_activation_threshold: float = 0.3,
                 high_conf_det_threshold: float = 0.5, minimum_consecutive_frames: int = 2,
                 minimum_iou_threshold: float = 0.1, detection_conf: float | None = None):
        if detection_conf is not None:
            # ByteTrack only starts tracks from "high" detections; a model run at a low --conf (typical for
            # small apples) would otherwise count almost nothing (measured on the drive-by clips)
            track_activation_threshold = detection_conf
            high_conf_det_threshold = detection_conf + 0.1
        try:
            from trackers import ByteTrackTracker
        except ImportError:
            raise PomonaError("tracking needs the 'trackers' package (pip install trackers), "
                              "which supervision uses for ByteTrack") from None
        self._tracker = ByteTrackTracker(
            lost_track_buffer=lost_track_buffer, frame_rate=frame_rate,
            track_activation_threshold=track_activation_threshold, high_conf_det_threshold=high_conf_det_threshold,
            minimum_consecutive_frames=minimum_consecutive_frames, minimum_iou_threshold=minimum_iou_threshold)
        self._seen: set[int] = set()

    @property
    def count(self) -> int:
        return len(self._seen)

    def update(self, instances: Instances) -> Instances:
        tracked = self._tracker.update(instances.to_supervision())
        ids = np.asarray(tracked.tracker_id if tracked.tracker_id is not None else [], np.int64)
        self._seen.update(int(i) for i in ids if i >= 0)
        if len(tracked) == 0:
            out = Instances.empty(instances.image_size, with_masks=instances.masks is not None)
            out.track_ids = np.zeros(0, np.int64)
            return out
        out = Instances.from_supervision(tracked, instances.image_size)
        out.track_ids = ids
        out.meta = dict(instances.meta)
        return out
