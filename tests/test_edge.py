"""Edge runtime: same apples as Ultralytics, no torch on the ONNX path, sources, JSONL, CLI, tracking."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pomona.errors import PomonaError
from pomona.instances import Instances

IMGSZ = 160


def _video(path: Path, n: int, size=(240, 180)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = rng.integers(0, 255, (h, w, 3), np.uint8)
        cv2.circle(frame, (20 + 5 * i % w, h // 2), 15, (30, 30, 200), -1)
        writer.write(frame)
    writer.release()
    return path


# --- processing matches Ultralytics ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(180, 240), (240, 180), (97, 333), (160, 160)])
@pytest.mark.parametrize("auto", [False, True])
def test_letterbox_matches_ultralytics(shape, auto):
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    from pomona.edge.processing import letterbox

    image = np.random.default_rng(1).integers(0, 255, (*shape, 3), np.uint8)
    ours, _ = letterbox(image, (160, 160), auto=auto)
    theirs = LetterBox((160, 160), auto=auto, stride=32)(image=image)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(threshold):
    """OpenCV's NMSBoxes (where it takes fractional boxes, as here) and the numpy loop of older OpenCVs."""
    torchvision = pytest.importorskip("torchvision")
    import torch

    from pomona.edge.processing import _opencv_nms_takes_floats, greedy_nms, nms

    assert _opencv_nms_takes_floats()  # this OpenCV: the C++ loop is the one tested
    rng = np.random.default_rng(2)
    for n, tied in ((300, False), (120, True), (1, False)):
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (n, 2))], 1).astype(np.float32)
        scores = rng.uniform(0.01, 1, n).astype(np.float32)
        if tied:  # equal scores: both keep index order
            scores = np.round(scores, 1) + np.float32(0.01)
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert np.array_equal(nms(boxes, scores, threshold), ref)
        assert np.array_equal(greedy_nms(boxes, scores, threshold), ref)
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), threshold).shape == (0,)


@pytest.mark.parametrize("kind", ["onnx", "dynamic"])
def test_edge_gives_the_same_apples_as_ultralytics_predict(model_files, frames_dir, kind):
    from ultralytics import YOLO

    from pomona.edge import Predictor
    from pomona.masks import box_iou, mask_iou

    path = model_files[kind]
    predictor = Predictor(path, conf=0.01)  # random weights: a low threshold yields plenty of detections
    yolo = YOLO(str(path), task="segment")
    total = 0
    for image_path in sorted(frames_dir.glob("*.jpg"))[:2]:
        image = cv2.imread(str(image_path))
        ours = predictor(image)
        ref = Instances.from_ultralytics(yolo.predict(image, conf=0.01, imgsz=IMGSZ, retina_masks=True,
                                                      verbose=False)[0])
        assert len(ours) == len(ref) > 0
        assert ours.masks.shape == (len(ours), *image.shape[:2])  # source resolution
        assert np.diag(box_iou(ours.boxes, ref.boxes)).min() > 0.999
        assert np.abs(ours.scores - ref.scores).max() < 1e-4
        ious = [mask_iou(ours.masks[i : i + 1], ref.masks[i : i + 1])[0, 0] for i in range(len(ours))]
        assert np.mean(ious) > 0.98 and np.min(ious) > 0.9
        total += len(ours)
    assert set(predictor.last_timings) == {"pre", "infer", "post"}
    assert total > 0


def test_zero_detections_and_odd_inputs(model_files):
    from pomona.edge import Predictor

    p = Predictor(model_files["onnx"], conf=0.999)
    inst = p(np.zeros((50, 70, 3), np.uint8))
    assert len(inst) == 0 and inst.masks.shape == (0, 50, 70) and inst.image_size == (50, 70)
    assert len(p(np.zeros((40, 40), np.uint8))) == 0  # grayscale accepted
    assert len(p(np.zeros((40, 40, 4), np.uint8))) == 0  # BGRA accepted
    with pytest.raises(PomonaError):
        p(None)
    with pytest.raises(PomonaError, match="fixed"):
        Predictor(model_files["onnx"], imgsz=320)
    assert Predictor(model_files["dynamic"], imgsz=200).imgsz == 224  # rounded up to the stride


def test_bad_models_are_one_line_errors(model_files, tmp_path):
    from pomona.edge import Predictor

    with pytest.raises(PomonaError, match="unknown backend"):
        Predictor(model_files["onnx"], backend="openvino")
    with pytest.raises(PomonaError, match="not found"):
        Predictor(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf")
    with pytest.raises(PomonaError, match="cannot load ONNX model"):
        Predictor(junk)
    import onnx

    plain = onnx.load(str(model_files["onnx"]))
    for p in list(plain.metadata_props):
        if p.key == "pomona":
            plain.metadata_props.remove(p)
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(PomonaError, match="no pomona metadata"):
        Predictor(tmp_path / "plain.onnx")
    with pytest.raises(PomonaError, match="backend"):
        Predictor(tmp_path / "model.tflite")


def test_onnx_path_imports_no_torch(model_files, frames_dir, tmp_path):
    code = f"""
import sys, cv2
from pomona.edge import Predictor, AppleTracker, draw_instances
from pomona.edge.runner import run
p = Predictor({str(model_files['onnx'])!r}, conf=0.01)
inst = AppleTracker().update(p(cv2.imread({str(next(frames_dir.glob('*.jpg')))!r})))
draw_instances(cv2.imread({str(next(frames_dir.glob('*.jpg')))!r}), inst, show_ids=True)
run({str(model_files['onnx'])!r}, {str(frames_dir)!r}, out={str(tmp_path / 'o')!r}, jsonl={str(tmp_path / 'a.jsonl')!r},
    track=True, quiet=True)
import pomona.cli
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'torchvision'))
print('HEAVY', bad)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


# --- sources -----------------------------------------------------------------------------------------
def test_folder_and_video_sources_in_order(frames_dir, tmp_path):
    from pomona.edge.sources import FrameSource

    with FrameSource(str(frames_dir)) as src:
        names = [f.name for f in src]
    assert names == sorted(p.name for p in frames_dir.glob("*.jpg"))
    video = _video(tmp_path / "v.mp4", 12)
    with FrameSource(str(video)) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(12)) and not src.live and src.dropped == 0
    assert frames[0].image.shape == (180, 240, 3)


def test_sources_that_do_not_open(tmp_path):
    from pomona.edge.sources import FrameSource

    with pytest.raises(PomonaError, match="not found"):
        FrameSource(str(tmp_path / "nope.mp4"))
    (tmp_path / "notavideo.mp4").write_text("hello")
    with pytest.raises(PomonaError, match="cannot open"):
        FrameSource(str(tmp_path / "notavideo.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PomonaError, match="no images"):
        FrameSource(str(tmp_path / "empty"))
    with pytest.raises(PomonaError, match="cannot open"):
        FrameSource("rtsp://127.0.0.1:9/none")


class FakeCamera:
    """A camera that delivers ``n`` frames (every ``delay`` s) and then stops answering."""

    def __init__(self, n: int, delay: float = 0.0, start: int = 0):
        self.n, self.delay, self.i = n, delay, start

    def read(self):
        time.sleep(self.delay)
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, np.full((8, 8, 3), self.i % 255, np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_live_source_reconnects_then_fails_clearly():
    from pomona.edge.sources import FrameSource

    opens = []

    def opener():
        opens.append(1)
        if len(opens) <= 2:
            return FakeCamera(3)  # first connection and one reconnect deliver frames
        raise PomonaError("camera gone")

    src = FrameSource("fake-cam", opener=opener, live=True, retries=3, retry_delay=0.01, frame_timeout=5)
    got = []
    with pytest.raises(PomonaError, match="gave up after 3 reconnect"):
        for frame in src:
            got.append(frame)
            time.sleep(0.01)
    src.close()
    assert src.reconnects == 1 and len(opens) == 5 and len(got) >= 2


def test_live_source_keeps_only_the_newest_frame():
    from pomona.edge.sources import FrameSource

    src = FrameSource("fast-cam", opener=lambda: FakeCamera(200, delay=0.002), live=True, retries=0, frame_timeout=5)
    seen = []
    with pytest.raises(PomonaError):  # the fake camera ends, and retries=0 gives up at once
        for frame in src:
            seen.append(frame.index)
            time.sleep(0.03)  # a slow model
    src.close()
    assert src.dropped > 0 and seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len(seen) + src.dropped <= 200


def test_live_source_that_goes_silent_times_out():
    from pomona.edge.sources import FrameSource

    src = FrameSource("hung", opener=lambda: FakeCamera(0, delay=10), live=True, frame_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(PomonaError, match="no frame"):
        next(iter(src))
    assert time.monotonic() - t0 < 3
    src._stop.set()


# --- runner, JSONL, CLI ------------------------------------------------------------------------------
def test_run_writes_images_and_valid_jsonl(model_files, frames_dir, tmp_path):
    from pomona.edge.runner import run

    summary = run(model_files["onnx"], str(frames_dir), conf=0.01, out=tmp_path / "out", jsonl=tmp_path / "r.jsonl",
                  quiet=True)
    assert summary["frames"] == 4 and summary["apples"] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in frames_dir.glob("*.jpg"))
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == [0, 1, 2, 3]
    apple = lines[0]["apples"][0]
    assert {"box", "score", "area", "centroid", "polygon"} <= set(apple) and apple["area"] > 0
    assert sum(rec["count"] for rec in lines) == summary["apples"]


def test_run_video_with_tracking_and_saved_video(model_files, tmp_path):
    from pomona.edge.runner import run

    video = _video(tmp_path / "clip.mp4", 8)
    summary = run(model_files["onnx"], str(video), conf=0.01, out=tmp_path / "o", save_video=True, track=True,
                  jsonl=tmp_path / "t.jsonl", quiet=True)
    assert summary["frames"] == 8 and "distinct_apples" in summary
    cap = cv2.VideoCapture(summary["video"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()


def test_jsonl_stays_valid_after_ctrl_c(model_files, tmp_path):
    video = _video(tmp_path / "long.mp4", 400)
    jsonl = tmp_path / "live.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pomona.cli", "run", str(model_files["onnx"]), "--source", str(video),
                             "--jsonl", str(jsonl), "--conf", "0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not jsonl.exists() or jsonl.read_text().count("\n") < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-1500:]
    assert "stopped by Ctrl-C" in out
    text = jsonl.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert 3 <= len(records) < 400 and [r["frame"] for r in records] == list(range(len(records)))


def test_cli_run_and_bench_json(model_files, frames_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "pomona.cli", "run", str(model_files["onnx"]), "--source",
                          str(frames_dir), "--json", "--conf", "0.01"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    assert json.loads(run.stdout)["frames"] == 4
    bench = subprocess.run([sys.executable, "-m", "pomona.cli", "bench", str(model_files["onnx"]), "--source",
                            str(frames_dir), "--frames", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr[-1500:]
    result = json.loads(bench.stdout)
    assert set(result["stages_ms"]) == {"capture", "pre", "infer", "post", "render"}
    assert result["fps_e2e"] > 0 and result["peak_rss_mb"] > 0 and result["machine"]["cores"] >= 1
    assert all(result["stages_ms"][s]["p50"] <= result["stages_ms"][s]["p99"] for s in result["stages_ms"])
    bad = subprocess.run([sys.executable, "-m", "pomona.cli", "run", str(model_files["onnx"]), "--source",
                          str(tmp_path / "nothing"), "--backend", "onnxruntime"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: source not found")
    unknown = subprocess.run([sys.executable, "-m", "pomona.cli", "run", str(model_files["onnx"]), "--source",
                              str(frames_dir), "--backend", "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown backend" in unknown.stderr


def test_huge_frames_are_scaled_not_fatal(model_files, tmp_path):
    from pomona.edge.runner import MAX_SIDE, run

    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "wide.png"), np.zeros((64, MAX_SIDE + 904, 3), np.uint8))
    summary = run(model_files["onnx"], str(big), jsonl=tmp_path / "b.jsonl", quiet=True)
    rec = json.loads((tmp_path / "b.jsonl").read_text())
    assert summary["frames"] == 1 and rec["size"][0] == MAX_SIDE and rec["scale"] < 1


# --- tracking and drawing ----------------------------------------------------------------------------
def _disc_instances(centres, size=(120, 200), r=10) -> Instances:
    h, w = size
    masks = []
    for cx, cy in centres:
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (int(cx), int(cy)), r, 1, -1)
        masks.append(m.astype(bool))
    inst = Instances.from_masks(np.stack(masks), image_size=size)
    inst.scores = np.full(len(inst), 0.9, np.float32)
    return inst


def test_tracker_follows_moving_apples_and_counts_them():
    from pomona.edge import AppleTracker

    tracker = AppleTracker()
    ids = []
    for t in range(12):
        inst = tracker.update(_disc_instances([(20 + 4 * t, 30), (60 + 4 * t, 80), (110 + 4 * t, 50)]))
        if t >= 3:
            order = np.argsort(inst.boxes[:, 0])
            ids.append(tuple(inst.track_ids[order]))
    assert tracker.count == 3
    assert len(set(ids)) == 1 and -1 not in ids[0]  # the same three ids on every frame once confirmed
    empty = tracker.update(Instances.empty((120, 200)))
    assert len(empty) == 0 and tracker.count == 3


def test_draw_instances_marks_the_masks():
    from pomona.edge import draw_instances

    image = np.zeros((120, 200, 3), np.uint8)
    inst = _disc_instances([(50, 50), (140, 60)])
    inst.track_ids = np.array([4, 7])
    out = draw_instances(image, inst, show_ids=True)
    assert out.shape == image.shape and out[inst.masks[0]].any() and not image.any()
    assert np.array_equal(draw_instances(image, Instances.empty((120, 200))), image)


def test_drawing_matches_supervision_mask_annotator():
    """The OpenCV-only drawing (box-local mask tint, boxes) is the picture supervision's MaskAnnotator and
    BoxAnnotator draw with the same palette, not a different one (supervision: pomona[pipeline])."""
    sv = pytest.importorskip("supervision")

    from pomona.edge.draw import PALETTE, draw_instances
    from pomona.instances import Instances
    from tests.conftest import disc

    image = np.full((120, 160, 3), 90, np.uint8)
    inst = Instances.from_masks(np.stack([disc(120, 160, 40, 50, 20), disc(120, 160, 110, 60, 30)]))
    ours = draw_instances(image, inst)
    det = inst.to_supervision()
    palette = sv.ColorPalette.from_hex(list(PALETTE))
    ref = sv.MaskAnnotator(color=palette, opacity=0.45, color_lookup=sv.ColorLookup.INDEX).annotate(image.copy(), det)
    ref = sv.BoxAnnotator(color=palette, thickness=2, color_lookup=sv.ColorLookup.INDEX).annotate(ref, det)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    assert (ours != image).any()
