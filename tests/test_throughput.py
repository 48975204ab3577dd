"""The runtime's pipeline (issue 17): what makes `pomona run` fast must not change what it writes.

No timing here (benchmarks/latency measures that): these check that the three-stage pipeline (letterbox in
the capture thread, model, post-processing in the sink's thread) gives the same JSONL as one thread, keeps
frames in order, hands a sink error to the run, prepares only the live frames it uses, and that a stream
whose frames change size mid-stream runs through.
"""

from __future__ import annotations

import gc
import json
import threading
import time

import numpy as np
import pytest

from pomona.errors import PomonaError
from tests.conftest import disc


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in lines:
        rec.pop("ms")  # stage times differ run to run; everything else must not
    return lines


@pytest.mark.parametrize("kind", ["onnx", "dynamic"])
def test_pipelined_run_writes_what_one_thread_writes(model_files, frames_dir, tmp_path, monkeypatch, kind):
    from pomona.edge.runner import run

    out = {}
    for mode in ("0 1", "1 1", "1 3"):  # one thread; post-processing in the sink's thread; and 3 frames at once
        pipeline, at_once = mode.split()
        monkeypatch.setenv("POMONA_PIPELINE", pipeline)
        monkeypatch.setenv("POMONA_FRAMES_AT_ONCE", at_once)
        summary = run(model_files[kind], str(frames_dir), conf=0.01, jsonl=tmp_path / "r.jsonl", track=True,
                      quiet=True)
        out[mode] = (summary["frames"], summary["apples"], _records(tmp_path / "r.jsonl"))
    assert out["0 1"][0] == 4 and out["0 1"][1] > 0
    assert out["0 1"] == out["1 1"] == out["1 3"]


def test_frames_at_once_share_the_cores_on_a_cpu(model_files, monkeypatch):
    from pomona.edge.backends import onnx_on_cpu_only
    from pomona.edge.predictor import Predictor
    from pomona.edge.sink import frames_at_once
    from pomona.machine import cpu_cores

    monkeypatch.delenv("POMONA_FRAMES_AT_ONCE", raising=False)
    assert frames_at_once(live=True) == 1  # a live camera: the newest frame, on every core
    assert frames_at_once(live=False) == cpu_cores()
    p = Predictor(model_files["onnx"], frames_at_once=2)
    if onnx_on_cpu_only():
        assert p.frames_at_once == 2 and p._backend.threads == max(1, cpu_cores() // 2)
        assert Predictor(model_files["onnx"])._backend.threads == cpu_cores()
    else:  # a GPU build of ONNX Runtime: frames go one at a time
        assert p.frames_at_once == 1


def test_sink_keeps_order_and_finishes_what_was_put():
    from pomona.edge.sink import FrameSink

    done, threads = [], set()

    def finish(item):
        time.sleep(0.002 if item % 3 else 0.01)  # uneven work must not reorder frames
        threads.add(threading.current_thread().name)
        done.append(item)

    sink = FrameSink(finish, threaded=True, depth=2)
    for i in range(30):
        sink.put(i)
    sink.close()
    assert done == list(range(30)) and threads == {"pomona-sink"}


def test_sink_error_ends_the_run_in_the_callers_thread():
    from pomona.edge.sink import FrameSink

    def finish(item):
        if item == 3:
            raise PomonaError("disk full writing x.jsonl")

    sink = FrameSink(finish, threaded=True, depth=2)
    with pytest.raises(PomonaError, match="disk full"):
        for i in range(100):
            sink.put(i)
    sink.close()  # the error was raised once; closing afterwards is quiet


def test_full_disk_in_the_sink_is_still_one_error(model_files, frames_dir, tmp_path, monkeypatch):
    """The JSONL write now happens in the sink's thread: its OSError must still end the run as a PomonaError."""
    import errno
    import os

    from pomona.edge import runner

    real_write, calls = os.write, []

    def full_after_two(fd, data):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(runner.os, "write", full_after_two)
    with pytest.raises(PomonaError, match="disk full"):
        runner.run(model_files["onnx"], str(frames_dir), conf=0.01, jsonl=tmp_path / "r.jsonl", quiet=True)
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_folder_frames_are_prepared_in_the_capture_thread(frames_dir):
    from pomona.edge.sources import FrameSource

    where = []
    src = FrameSource(str(frames_dir), prepare=lambda image: where.append(threading.current_thread().name) or image.shape)
    frames = list(src)
    src.close()
    assert [f.prepared for f in frames] == [f.image.shape for f in frames]
    assert len(where) == 4 and all(name.startswith("capture:") for name in where)


def test_live_frames_are_prepared_only_when_taken():
    """A live camera's stale frames are dropped unprepared: letterboxing them would be work thrown away."""
    from pomona.edge.sources import FrameSource
    from tests.test_edge import FakeCamera

    prepared = []
    src = FrameSource("fast-cam", opener=lambda: FakeCamera(200, delay=0.002), live=True, retries=0, frame_timeout=5,
                      prepare=lambda image: prepared.append(1) or "ready")
    seen = []
    with pytest.raises(PomonaError):  # the fake camera ends
        for frame in src:
            seen.append(frame.prepared)
            time.sleep(0.03)
    src.close()
    assert src.dropped > 0 and seen == ["ready"] * len(seen) and len(prepared) == len(seen)


class ResizingCamera:
    """Frames of one size, then of another, within one stream (a camera switching mode mid-stream)."""

    def __init__(self, sizes=((240, 320), (360, 640)), per_size: int = 6):
        self.sizes, self.per_size, self.i = sizes, per_size, 0

    def read(self):
        k = self.i // self.per_size
        if k >= len(self.sizes):
            return False, None
        h, w = self.sizes[k]
        self.i += 1
        image = np.full((h, w, 3), 60, np.uint8)
        for cx, cy, r in ((w // 3, h // 2, h // 6), (2 * w // 3, h // 2, h // 5)):
            image[disc(h, w, cx, cy, r)] = (40, 40, 200)
        return True, image

    def get(self, prop):
        return 15.0

    def release(self):
        pass


@pytest.mark.parametrize("kind", ["onnx", "dynamic"])
def test_resolution_change_within_one_stream(model_files, tmp_path, kind, capsys):
    from pomona.edge.runner import run

    summary = run(model_files[kind], "cam", conf=0.01, jsonl=tmp_path / "r.jsonl", track=True, out=tmp_path / "out",
                  save_video=True, source_kwargs={"opener": ResizingCamera, "live": False})
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert summary["frames"] == 12 and [r["frame"] for r in lines] == list(range(12))
    assert [tuple(r["size"]) for r in lines] == [(320, 240)] * 6 + [(640, 360)] * 6
    for rec in lines:  # every apple inside the frame it was found in
        w, h = rec["size"]
        for apple in rec["apples"]:
            x0, y0, x1, y1 = apple["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
    assert summary["size_changes"] == 1
    assert "frame size changed from 320x240 to 640x360 at frame 6" in capsys.readouterr().err
    import cv2

    cap = cv2.VideoCapture(summary["video"])
    sizes = set()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        sizes.add(image.shape[:2])
    cap.release()
    assert sizes == {(240, 320)}  # one video, the first size; later frames fitted into it


def test_heap_is_frozen_only_while_frames_run():
    from pomona.edge.runner import steady_heap

    before = gc.get_freeze_count()
    with steady_heap():
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == before


def test_overlapping_masks_are_drawn_as_supervision_draws_them():
    sv = pytest.importorskip("supervision")

    from pomona.edge.draw import PALETTE, draw_instances
    from pomona.instances import Instances

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    inst = Instances.from_masks(np.stack([disc(120, 160, 40, 50, 20), disc(120, 160, 55, 60, 25),
                                          disc(120, 160, 120, 80, 15)]))
    det = inst.to_supervision()
    palette = sv.ColorPalette.from_hex(list(PALETTE))
    ref = sv.MaskAnnotator(color=palette, opacity=0.45, color_lookup=sv.ColorLookup.INDEX).annotate(image.copy(), det)
    ref = sv.BoxAnnotator(color=palette, thickness=2, color_lookup=sv.ColorLookup.INDEX).annotate(ref, det)
    assert np.array_equal(draw_instances(image, inst), ref)
