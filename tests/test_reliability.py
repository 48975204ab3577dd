"""Camera faults for `pomona run` on a live RTSP stream (benchmarks/reliability/run.py), each a short test.

The camera is GStreamer's RTSP server on 127.0.0.1 (benchmarks/reliability/rtsp_server.py, run with
Debian's /usr/bin/python3; `make test` installs it with tests/install_rtsp.sh). Without it the tests that
need it skip and say why. Each frame carries its number in its pixels, so every frame lost is counted.
The run under test is pomona's runner with the tiny random model of tests/test_edge.py: it detects little,
which does not matter here. Target: nothing lost except frames during an outage, and no crash.

The first tests need no server: the frame numbers and the accounting, and the two FrameSource bugs the
faults found (a stall's slow reconnects cut short; a capture released under a blocked read: segfault).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pomona.errors import PomonaError

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("pomona_reliability_bench", ROOT / "benchmarks/reliability/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rel = _load_benchmark()


@pytest.fixture(scope="session")
def rtsp() -> None:
    """Skips (before the model is built) when GStreamer's RTSP server cannot run here."""
    why = rel.server_unavailable()
    if why:
        pytest.skip(f"cannot start the RTSP server: {why}")


def _bgr(k: int, w: int, h: int) -> np.ndarray:
    i420 = np.frombuffer(rel._srv.make_frame(k, w, h, rel._srv.ramp(w, h), moving_bar=True), np.uint8)
    return cv2.cvtColor(i420.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)


# --- no server needed ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(320, 240), (640, 360)])
def test_frame_numbers_survive_encoding_and_scaling(size):
    w, h = size
    for k in (0, 1, 77, 20_000, 2**24 - 1):
        image = _bgr(k, w, h)
        assert rel.decode_counter(image) == k
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])  # lossy, like H.264
        assert rel.decode_counter(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == k
        assert rel.decode_counter(cv2.resize(image, (320, 240))) == k  # what OpenCV does after a size change
    assert rel.decode_counter(np.full((240, 320, 3), 128, np.uint8)) is None  # no clean strip: no guess


def test_accounting_puts_every_missing_frame_in_one_place(tmp_path):
    """An outage gap goes to its event, a gap the server logged as never sent is not a loss, any other is."""
    cam = rel.RtspCamera(tmp_path, fps=10)
    t = lambda k: cam.epoch + k / 10 + 0.2  # noqa: E731  (delivered 0.2 s after it was made)
    ks = list(range(0, 30)) + list(range(61, 80)) + list(range(83, 90)) + list(range(95, 100))
    (tmp_path / "tap.log").write_text("".join(f"F {i} {t(k):.3f} {k} 320 240\n" for i, k in enumerate(ks)))
    (tmp_path / "server.log").write_text("1.0 size 320x240 at k=0\n2.0 skip 90 94\n")
    processed = range(0, len(ks), 3)  # every third frame reached the model; all but the last other one were dropped
    (tmp_path / "run.jsonl").write_text("".join(f'{{"frame": {i}, "size": [320, 240]}}\n' for i in processed))
    (tmp_path / "summary.json").write_text(f'{{"dropped": {len(ks) - len(processed) - 1}, "reconnects": 1}}')
    ev = rel.Event("restart", cam.epoch + 3.0, cam.epoch + 5.5)  # frames 30..55 made while down
    r = rel.account(tmp_path, [ev], cam)
    assert r["events"]["restart"]["lost"] == 31 and r["events"]["restart"]["gaps"] == [[29, 61]]
    assert r["lost_unexpected"] == 3 and r["lost_elsewhere_gaps"][0]["missing"] == 3  # 80..82
    assert r["never_made"] == 5 and r["unaccounted"] == 1 and r["repeats"] == 0
    assert r["events"]["restart"]["recovery_s"] == pytest.approx(6.1 + 0.2 - 5.5, abs=0.01)


class _Cam:
    """A capture that delivers ``n`` small frames, then fails its reads."""

    def __init__(self, n: int):
        self.n = n

    def read(self):
        time.sleep(0.005)
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop):
        return 15.0

    def release(self):
        pass


def test_live_source_waits_for_its_own_reconnects():
    """Reopens that each take a while (FFmpeg: up to 5 s while a stream is stalled) add up to longer than
    frame_timeout; the run used to end there with attempts unused. Every attempt returns, so it waits."""
    from pomona.edge.sources import FrameSource

    opens = []

    def opener():
        opens.append(time.monotonic())
        if len(opens) == 1:
            return _Cam(3)
        time.sleep(0.3)  # an open that gives up after its timeout
        if len(opens) < 5:
            raise PomonaError("no answer")
        return _Cam(10**6)

    src = FrameSource("slow-reconnects", opener=opener, live=True, retries=5, retry_delay=0.05, frame_timeout=0.8)
    got, t0 = [], time.monotonic()
    try:
        for frame in src:
            got.append(frame.index)
            if len(got) >= 8:
                break
    finally:
        src.close()
    assert len(opens) == 5 and src.reconnects == 1
    assert opens[-1] - opens[1] > 0.8  # the outage outlasted frame_timeout, and the run went on
    assert time.monotonic() - t0 < 10


def test_close_never_releases_a_capture_under_a_blocked_read():
    """Ctrl-C or SIGTERM while a stream is stalled: the capture thread sits in a read (up to 5 s). Releasing
    OpenCV's capture under it segfaulted the process when the read returned; the thread now releases it."""
    from pomona.edge.sources import FrameSource

    class Blocking(_Cam):
        def __init__(self):
            super().__init__(1)
            self.reading = self.released_during_read = False
            self.released = threading.Event()

        def read(self):
            if self.n:
                return super().read()
            self.reading = True
            time.sleep(3.0)
            self.reading = False
            return False, None

        def release(self):
            self.released_during_read |= self.reading
            self.released.set()

    cam = Blocking()
    src = FrameSource("stalled", opener=lambda: cam, live=True, retries=0, frame_timeout=10)
    next(iter(src))
    time.sleep(0.3)  # the capture thread is now inside the blocked read
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 2.5  # close() itself stays bounded
    assert cam.released.wait(5) and not cam.released_during_read


# --- real RTSP server ------------------------------------------------------------------------------------------
def _check(r: dict) -> None:
    """What every fault must keep: no crash, whole JSONL lines, no frame lost outside an outage."""
    assert not r["traceback"] and (r["exit_code"] is None or r["exit_code"] >= 0), r["outcome"]
    assert r["jsonl_torn_lines"] == 0
    assert r["lost_unexpected"] == 0, r["lost_elsewhere_gaps"]
    assert r["unaccounted"] is None or r["unaccounted"] <= 2  # the frame in the model and the one waiting
    assert r["undecodable"] == 0 and r["repeats"] == 0


@pytest.mark.slow
def test_server_killed_and_restarted_reconnects(rtsp, model_files, tmp_path):
    r = rel.run_fault("restart", model_files["onnx"], tmp_path)
    _check(r)
    ev = r["events"]["restart"]
    assert r["ok"] and r["continued"] and r["reconnects"] >= 1, r["outcome"]
    assert ev["lost"] > 0 and ev["frames_after"] >= rel.AFTER_FRAMES
    assert ev["recovery_s"] is not None and ev["recovery_s"] < 10
    assert r["exit_code"] == 143 and r["summary"]["signal"] == "SIGTERM"


@pytest.mark.slow
def test_server_gone_ends_the_run_with_one_clear_error(rtsp, model_files, tmp_path):
    r = rel.run_fault("gone", model_files["onnx"], tmp_path)
    _check(r)
    assert r["ok"] and r["exit_code"] == 1, r["outcome"]
    assert "gave up after 5 reconnect attempts" in r["summary"]["error"]
    assert r["ended_after_s"] is not None and r["ended_after_s"] < 30


@pytest.mark.slow
def test_stalled_stream_resumes_and_loses_only_the_stall(rtsp, model_files, tmp_path):
    r = rel.run_fault("stall", model_files["onnx"], tmp_path)
    _check(r)
    ev = r["events"]["stall"]
    assert r["ok"] and r["continued"], r["outcome"]
    assert 0 < ev["lost"] <= ev["made_while_down"] + 2 * 15  # the stall, and at most 2 s around it
    assert ev["recovery_s"] is not None and ev["recovery_s"] < 5


@pytest.mark.slow
def test_resolution_change_mid_stream_and_at_a_restart(rtsp, model_files, tmp_path):
    r = rel.run_fault("resize", model_files["onnx"], tmp_path)
    _check(r)
    assert r["ok"] and r["continued"], r["outcome"]
    assert r["events"]["resize_in_stream"]["lost"] == 0  # no frame lost at the change itself
    assert "640x360" in r["sizes_delivered"] and "640x360" in r["jsonl_sizes"]  # after the reconnect
    video = Path(r["summary"]["video"])
    assert video.is_file() and video.stat().st_size > 0  # the annotated video went on across the size change


@pytest.mark.slow
def test_sigterm_during_a_stall_exits_cleanly(rtsp, model_files, tmp_path):
    """Was a segfault (exit -11) once the blocked read returned; the worker lingers to be there when it does."""
    r = rel.run_fault("sigterm_stall", model_files["onnx"], tmp_path)
    _check(r)
    assert r["exit_code"] == 143 and r["summary"]["signal"] == "SIGTERM", r["outcome"]
    assert r["ended_after_s"] < 6
