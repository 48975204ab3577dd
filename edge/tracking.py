"""Follow apples across frames (ByteTrack from ``edgefirst-tracker``: Rust, numpy its only dependency)
and count distinct apples along a row.

It replaced Roboflow's ``trackers``, whose pip package also installs opencv-python (a second cv2 beside
opencv-python-headless), scipy, supervision, matplotlib and PyAV: about 500 MB on a robot for one tracker.
The defaults below were chosen on simulated detections made from the renderer's drive-by ground truth
(benchmarks/install/tracker_choice.py).
"""

from __future__ import annotations

import numpy as np

from pomona.errors import PomonaError
from pomona.instances import Instances


class AppleTracker:
    """``inst = tracker.update(inst)`` sets ``inst.track_ids`` (-1 for a not yet confirmed apple);
    ``tracker.count`` is the number of distinct confirmed apples seen so far.

    frame_rate: frames per second of the source (the tracker ages tracks in time, not frames).
    lost_track_buffer: frames a track survives without a match. high_conf_det_threshold: detections
    at or above it start tracks and take the first association pass. minimum_iou_threshold: IoU gate of
    a match. smoothing: how far each match moves the Kalman state toward the detection (0..1).
    minimum_matches: matches before an apple gets an id and counts.
    """

    def __init__(self, frame_rate: float = 30.0, lost_track_buffer: int = 30, high_conf_det_threshold: float = 0.5,
                 minimum_iou_threshold: float = 0.2, smoothing: float = 0.9, minimum_matches: int = 3,
                 detection_conf: float | None = None):
        if detection_conf is not None:
            # ByteTrack only starts tracks from "high" detections; a model run at a low --conf (typical for
            # small apples) would otherwise count almost nothing (measured on the drive-by clips)
            high_conf_det_threshold = detection_conf + 0.1
        try:
            from edgefirst.tracker import ByteTrack
        except ImportError:
            raise PomonaError("tracking needs the 'edgefirst-tracker' package (pip install edgefirst-tracker; "
                              "part of pomona's base install)") from None
        self.frame_rate = frame_rate if frame_rate and frame_rate > 0 else 30.0
        self._tracker = ByteTrack(high_conf=float(high_conf_det_threshold), iou=float(minimum_iou_threshold),
                                  update=float(smoothing),
                                  lifespan_ns=int(lost_track_buffer / self.frame_rate * 1e9))
        self.minimum_matches = int(minimum_matches)
        self._frame = 0
        self._ids: dict[str, int] = {}  # the tracker's uuids -> 1, 2, 3... in order of confirmation

    @property
    def count(self) -> int:
        return len(self._ids)

    def update(self, instances: Instances) -> Instances:
        n = len(instances)
        # this build of the tracker takes labels only as uint64 (usize), boxes and scores as float32
        tracks = self._tracker.update(np.ascontiguousarray(instances.boxes, np.float32).reshape(n, 4),
                                      np.ascontiguousarray(instances.scores, np.float32),
                                      np.ascontiguousarray(instances.class_ids, np.uint64),
                                      int(round(self._frame * 1e9 / self.frame_rate)))
        self._frame += 1
        ids = np.full(n, -1, np.int64)
        for i, track in enumerate(tracks):
            if track is None or track.count < self.minimum_matches:
                continue
            ids[i] = self._ids.setdefault(track.uuid, len(self._ids) + 1)
        # same arrays (no copy of the masks), the ids added
        return Instances(instances.boxes, instances.masks, instances.scores, instances.class_ids,
                         instances.image_size, ids, dict(instances.meta))
