"""The field demo (``pomona demo``): Gradio app on the edge runtime, driven over its API and in a real browser.

The model is a tiny YOLO11n-seg with random weights, exported to ONNX by pomona's exporter. Random
weights detect nothing, so its class bias is raised to make it emit (meaningless) masks: enough to push
real tensors through every stage of the page. The tests check the page against the runtime itself
(same counts as ``Predictor`` on the same picture), never against hard-coded numbers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'pomona[demo]')")
pytest.importorskip("ultralytics", reason="the test model is built with ultralytics")

from pomona.dataset import read_image  # noqa: E402
from pomona.edge import demo  # noqa: E402
from pomona.errors import PomonaError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "runs" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMGSZ = 128


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 1-class YOLO11n-seg (random weights, class bias raised so it emits confident masks) exported to ONNX."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel

    from pomona.export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("demo-model")
    torch.manual_seed(0)
    yolo = YOLO("yolo11n-seg.yaml")
    net = SegmentationModel("yolo11n-seg.yaml", nc=1, verbose=False)
    net.names = {0: "apple"}
    with torch.no_grad():
        for branch in net.model[-1].cv3:  # class-score convs of each detection scale
            branch[-1].bias.fill_(0.5)  # sigmoid 0.62: above ByteTrack's 0.5 bar for starting a track
    yolo.model = net
    yolo.ckpt = {"train_args": {"task": "segment", "imgsz": IMGSZ}}  # what a training run records
    yolo.save(root / "tiny.pt")
    path, _ = export_onnx(root / "tiny.pt", root / "tiny.onnx", imgsz=IMGSZ)
    return path


@pytest.fixture(scope="module")
def served(tiny_model):
    """The demo launched as ``pomona demo`` would, on a free local port."""
    app = demo.build_app(tiny_model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, **demo.launch_options())
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


def example_image() -> Path:
    images = demo.example_images()
    assert len(images) >= 3, "edge/assets should ship example images (edge/assets/make_examples.py)"
    return images[0]


def short_clip(src: Path, dst: Path, frames: int) -> Path:
    """The first frames of the shipped drive-by (the test model's random masks make full clips slow on CPU)."""
    cap = cv2.VideoCapture(str(src))
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok, f"{src} has fewer than {frames} frames"
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"VP80"), 15, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    cap.release()
    return dst


def runtime_count(model: Path, image: Path, conf=0.25, iou=0.7) -> int:
    from pomona.edge import Predictor

    return len(Predictor(model, conf=conf, iou=iou)(read_image(image)))


# --- without a server ----------------------------------------------------------------------------------


def test_default_model_is_the_shipped_one(tmp_path, monkeypatch):
    from pomona.models import DEFAULT_MODEL, get_model

    monkeypatch.chdir(tmp_path)
    shipped = get_model(DEFAULT_MODEL)
    assert shipped is not None, "the default model must ship with pomona"
    assert demo.default_model() == shipped.file("onnx")
    assert demo.find_models(None, tmp_path / "runs")[0] == shipped.file("onnx")
    assert demo.build_app(None) is not None  # `pomona demo` with no --model starts on the shipped model


def test_no_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POMONA_MODELS_DIR", str(tmp_path / "no-models"))  # an install without the shipped model
    with pytest.raises(PomonaError, match=r"make quickstart.*--model"):
        demo.build_app(None)
    weights = tmp_path / "runs" / "quickstart" / "weights"
    weights.mkdir(parents=True)
    (weights / "best.pt").write_bytes(b"x")
    assert demo.default_model() == Path("runs/quickstart/weights/best.pt")
    (weights / "best.onnx").write_bytes(b"x")
    assert demo.default_model() == Path("runs/quickstart/weights/best.onnx")  # the edge format wins


def test_cli_reports_a_bad_model_in_one_line(tmp_path):
    with pytest.raises(PomonaError, match="model not found"):
        demo.build_app(tmp_path / "missing.onnx")
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not an onnx file")
    proc = subprocess.run([sys.executable, "-m", "pomona.cli", "demo", "--model", str(bogus)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and bogus.name in lines[0], proc.stderr


def test_only_loopback_binds_quietly():
    assert demo.exposure_warning("127.0.0.1") is None and demo.exposure_warning("localhost") is None
    for host in ("0.0.0.0", "192.168.1.7", "::"):
        assert "exposes the demo" in demo.exposure_warning(host)


def test_model_dropdown_lists_run_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("POMONA_MODELS_DIR", str(tmp_path / "no-models"))
    for rel in ("runs/a/weights/best.onnx", "runs/a/weights/best.pt", "runs/b/weights/last.engine",
                "runs/b/weights/notes.txt", "runs/c/export/stray.onnx"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    extra = tmp_path / "elsewhere.onnx"
    found = demo.find_models(extra, tmp_path / "runs")
    assert found[0] == extra
    assert {p.relative_to(tmp_path).as_posix() for p in found[1:]} == {
        "runs/a/weights/best.onnx", "runs/a/weights/best.pt", "runs/b/weights/last.engine"}


def test_upload_checks_name_the_problem(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels")
    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((10, 4100, 3), np.uint8))
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:  # sparse: 201 MB on paper, nothing on disk
        f.truncate(demo.MAX_BYTES + 2**20)
    cases = [(empty, "image", "empty"), (text, "image", "not an image"), (huge, "image", "4100x10"),
             (big, "video", "up to 200 MB"), (text, "video", "not a video")]
    for path, kind, needle in cases:
        with pytest.raises(gr.Error) as err:
            demo.load_image(path) if kind == "image" else demo.open_video(path)
        assert needle in err.value.message, err.value.message


def test_webcam_frames_are_tracked_per_session(tiny_model):
    cache = demo.PredictorCache()
    frame = cv2.cvtColor(read_image(example_image()), cv2.COLOR_BGR2RGB)
    overlay, _, text, tracker = demo.detect_webcam(cache, frame, str(tiny_model), 0.25, 0.7, None)
    assert overlay.shape == frame.shape and "FPS" in text
    _, _, _, same = demo.detect_webcam(cache, frame, str(tiny_model), 0.25, 0.7, tracker)
    assert same is tracker  # one tracker per browser session, carried in gr.State
    assert cache.get(tiny_model, 0.25, 0.7) is cache.get(tiny_model, 0.25, 0.7)  # cached per (model, conf, iou)


# --- through Gradio's API --------------------------------------------------------------------------------


def test_api_image_in_overlay_and_count_out(served, tiny_model):
    from gradio_client import Client, handle_file

    _, url = served
    image = example_image()
    client = Client(url, verbose=False)
    overlay, count, latency, table, files = client.predict(handle_file(str(image)), str(tiny_model), 0.25, 0.7,
                                                           api_name="/detect_image")
    expected = runtime_count(tiny_model, image)
    assert expected > 0, "the test model should emit masks on the example"
    assert count == expected
    drawn = read_image(overlay)
    assert drawn.shape == read_image(image).shape
    assert not np.array_equal(drawn, read_image(image))  # masks were drawn
    assert len(table["data"]) == expected and table["headers"] == demo.TABLE_COLUMNS
    assert "infer" in latency and "FPS" in latency
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    line = json.loads(by_suffix[".jsonl"].read_text().splitlines()[0])
    assert line["count"] == expected and len(line["apples"]) == expected and "polygon" in line["apples"][0]
    coco = json.loads(by_suffix[".json"].read_text())
    assert len(coco["annotations"]) == expected and coco["categories"][0]["name"] == "apple"


def test_api_video_tracks_distinct_apples(served, tiny_model, tmp_path):
    from gradio_client import Client, handle_file

    _, url = served
    clip = short_clip(demo.example_videos()[0], tmp_path / "clip.webm", frames=8)
    client = Client(url, verbose=False)
    video, distinct, latency, table, files = client.predict(handle_file(str(clip)), str(tiny_model),
                                                            0.25, 0.7, api_name="/detect_video")
    src = cv2.VideoCapture(str(clip))
    n_src = int(src.get(cv2.CAP_PROP_FRAME_COUNT))
    out = cv2.VideoCapture(video["video"] if isinstance(video, dict) else video)
    n_out = 0
    while out.read()[0]:
        n_out += 1
    assert n_out == n_src > 0
    jsonl = next(Path(f) for f in files if f.endswith(".jsonl"))
    frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(frames) == n_src
    ids = {a["track_id"] for f in frames for a in f["apples"] if a["track_id"] >= 0}
    assert distinct == len(ids) == len(table["data"]) > 0
    coco = json.loads(next(Path(f) for f in files if f.endswith("_coco.json")).read_text())
    assert len(coco["images"]) == n_src
    assert len(coco["annotations"]) == sum(f["count"] for f in frames) == len({a["id"] for a in coco["annotations"]})
    assert f"{n_src} frames" in latency


def test_api_bad_uploads_get_a_sentence(served, tiny_model, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    _, url = served
    client = Client(url, verbose=False)
    text = tmp_path / "report.jpg"
    text.write_text("not pixels at all")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "wide.png"
    cv2.imwrite(str(huge), np.zeros((8, 5000, 3), np.uint8))
    for path, needle in [(text, "not an image"), (empty, "empty"), (huge, "up to 4096x4096")]:
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(path)), str(tiny_model), 0.25, 0.7, api_name="/detect_image")
        assert needle in str(err.value) and "Traceback" not in str(err.value), str(err.value)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(text)), str(tiny_model), 0.25, 0.7, api_name="/detect_video")
    assert "not a video" in str(err.value)


# --- in a real browser -------------------------------------------------------------------------------------


@pytest.fixture
def page_model(served, tiny_model):
    """The test model, or the model in $POMONA_DEMO_SCREENSHOT_MODEL for the README's picture:
    POMONA_DEMO_SCREENSHOT_MODEL=runs/quickstart/weights/best.onnx pytest tests/test_demo.py -k browser
    cp runs/test-artifacts/demo.png docs/demo.png"""
    chosen = os.environ.get("POMONA_DEMO_SCREENSHOT_MODEL")
    if not chosen:
        yield tiny_model, served[1]
        return
    app = demo.build_app(Path(chosen))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, **demo.launch_options())
    yield Path(chosen), f"http://127.0.0.1:{port}/"
    app.close()


@pytest.mark.browser
def test_browser_upload_detect_and_screenshot(page_model):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (bash tests/install_browser.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
    model, url = page_model
    image = example_image()
    expected = runtime_count(model, image)
    outside = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith((url.rstrip("/"), "data:", "blob:")) else None)
            page.goto(url, wait_until="load")
            page.locator("#image-in input[type=file]").set_input_files(str(image))
            page.locator("#image-in img").first.wait_for(state="visible", timeout=20_000)
            page.locator("#detect-image").click()
            page.locator("#image-out img").first.wait_for(state="visible", timeout=30_000)
            count = page.locator("#image-count input")
            page.wait_for_function("el => el.value !== ''", arg=count.element_handle(), timeout=30_000)
            assert int(float(count.input_value())) == expected
            assert "FPS" in page.locator("#image-latency textarea, #image-latency input").first.input_value()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this machine: {outside}"
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000
