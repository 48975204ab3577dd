"""Picking targets from mask + aligned depth (pomona/picking.py, edge/depth.py, pipeline/evaluate_picking.py).

The geometry is checked on spheres rendered here through an exact pinhole camera (each pixel's depth where
its ray meets the sphere), clean and through a small stereo-like noise model of the test's own (error growing
with the square of the distance, spatially correlated, holes), so the answers are known. The CLI is checked
end to end on such pictures and on a tiny ``pomona generate --depth`` render.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pomona.instances import Instances
from pomona.picking import MIN_POINTS, Intrinsics, PickingTargets, measure, projected_disc_area

H, W = 240, 320
K = Intrinsics(300.0, 300.0, W / 2 - 0.5, H / 2 - 0.5, W, H)
CLI = [sys.executable, "-m", "pomona.cli"]
MODEL = "pomona-apple-n"  # the shipped model: it finds the apples, so the 3D fields get checked against the truth


def render_spheres(spheres: list[tuple[tuple[float, float, float], float]], K: Intrinsics = K, h: int = H,
                   w: int = W, background_m: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact depth (metres, z) of spheres (centre, radius) before a flat background; id image (-1 = background)."""
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    qx, qy = (uu - K.cx) / K.fx, (vv - K.cy) / K.fy
    qq = qx * qx + qy * qy + 1
    depth = np.full((h, w), background_m)
    ids = np.full((h, w), -1)
    for k, (c, r) in enumerate(spheres):
        qc = qx * c[0] + qy * c[1] + c[2]
        disc = qc * qc - qq * (c[0] ** 2 + c[1] ** 2 + c[2] ** 2 - r * r)
        t = (qc - np.sqrt(np.maximum(disc, 0))) / qq
        hit = (disc >= 0) & (t < depth)
        depth[hit], ids[hit] = t[hit], k
    return depth, ids


def stereo_noise(depth_m: np.ndarray, k_per_m: float, rng: np.random.Generator, holes: float = 0.05) -> np.ndarray:
    """uint16 mm through a little stereo model: sigma = k z^2 correlated over ~1.5 px, random holes, and no
    depth where the depth jumps (edges)."""
    field = cv2.GaussianBlur(rng.standard_normal(depth_m.shape).astype(np.float32), (0, 0), 1.5)
    field /= field.std() + 1e-9
    noisy = depth_m + field * k_per_m * depth_m ** 2
    jump = cv2.dilate(depth_m.astype(np.float32), np.ones((3, 3))) - cv2.erode(depth_m.astype(np.float32), np.ones((3, 3)))
    invalid = (rng.random(depth_m.shape) < holes) | (jump > 0.04 * depth_m)
    return np.where(invalid, 0, np.round(noisy * 1000)).astype(np.uint16)


def to_mm(depth_m: np.ndarray) -> np.ndarray:
    return np.round(depth_m * 1000).astype(np.uint16)


def instances_of(ids: np.ndarray, labels: list[int]) -> Instances:
    return Instances.from_masks(np.stack([ids == k for k in labels]), image_size=ids.shape)


def errors(t: PickingTargets, i: int, centre, radius) -> tuple[float, float]:
    return float(np.linalg.norm(t.center_m[i] - np.asarray(centre)) * 1000), float(t.diameter_mm[i] - 2000 * radius)


# --- geometry -----------------------------------------------------------------------------------------


def test_whole_sphere_clean_depth_gives_the_sphere_back():
    centre, radius = (0.06, -0.03, 0.55), 0.040
    depth, ids = render_spheres([(centre, radius)])
    t = measure(instances_of(ids, [0]), to_mm(depth), K)
    dc, dd = errors(t, 0, centre, radius)
    assert dc < 1.0 and abs(dd) < 1.0, (dc, dd)
    assert t.visible_fraction[0] == pytest.approx(1.0, abs=0.03)
    assert t.distance_m[0] == pytest.approx(np.linalg.norm(centre), abs=1e-3)
    ray = np.asarray(centre) / np.linalg.norm(centre)
    assert np.allclose(t.approach[0], ray, atol=2e-3)
    assert np.allclose(t.pick_point_m[0], np.asarray(centre) - ray * radius, atol=1.5e-3)  # nearest surface point
    assert t.depth_points[0] >= MIN_POINTS
    rec = t.record(0)
    assert set(rec) == {"center_m", "diameter_mm", "distance_m", "pick_point_m", "approach", "visible_fraction",
                        "depth_points"}


@pytest.mark.parametrize("side", ["left", "bottom"])
def test_half_hidden_noisy_apple_keeps_its_diameter(side):
    """A leaf (nearer plane) hides half the apple: the mask is half as wide or tall, the diameter must not be."""
    rng = np.random.default_rng(1)
    centre, radius = (0.0, 0.0, 0.7), 0.038
    depth, ids = render_spheres([(centre, radius)])
    u0, v0 = K.project(np.array(centre))
    hidden = (np.arange(W)[None, :] < u0) if side == "left" else (np.arange(H)[:, None] > v0)
    hidden = np.broadcast_to(hidden, depth.shape)
    depth = np.where(hidden, 0.55, depth)  # the leaf, 15 cm in front
    ids = np.where(hidden, -1, ids)
    noisy = stereo_noise(depth, 0.0094, rng)  # the D435-like figure: 4.6 mm at 0.7 m
    inst = instances_of(ids, [0])
    t = measure(inst, noisy, K)
    dc, dd = errors(t, 0, centre, radius)
    assert dc < 10.0 and abs(dd) < 8.0, (dc, dd)
    assert t.visible_fraction[0] == pytest.approx(0.5, abs=0.08)
    x0, y0, x1, y1 = inst.boxes[0]
    seen_mm = (x1 - x0 if side == "left" else y1 - y0) / K.fx * (centre[2] - radius) * 1000
    assert seen_mm < 1.5 * radius * 1000  # the silhouette alone would have said ~half the diameter


def test_many_noisy_apples_meet_the_targets_on_median():
    """20 apples at 0.35-1 m, D435-like noise, some overlapping: median centre error <= 1 cm, diameter <= 5 mm."""
    rng = np.random.default_rng(2)
    spheres = []
    for _ in range(20):
        z = rng.uniform(0.35, 1.0)
        spheres.append(((rng.uniform(-0.3, 0.3) * z, rng.uniform(-0.25, 0.25) * z, z), rng.normal(0.039, 0.004)))
    depth, ids = render_spheres(spheres)
    labels = [k for k in range(len(spheres)) if (ids == k).sum() >= 200]
    t = measure(instances_of(ids, labels), stereo_noise(depth, 0.0094, rng), K)
    errs = np.array([errors(t, i, *spheres[k]) for i, k in enumerate(labels)])
    assert np.isfinite(errs).all()
    assert np.median(errs[:, 0]) <= 10.0 and np.median(np.abs(errs[:, 1])) <= 5.0, errs


def test_leaf_pixels_inside_the_mask_are_rejected():
    """A sloppy mask that also covers part of a leaf in front: the robust fit ignores those points."""
    centre, radius = (0.0, 0.02, 0.6), 0.04
    depth, ids = render_spheres([(centre, radius)])
    mask = ids == 0
    ys, xs = np.nonzero(mask)
    leaf = mask & (np.arange(W)[None, :] < xs.min() + 0.3 * (xs.max() - xs.min()))
    depth = np.where(leaf, centre[2] - radius - 0.03, depth)  # 3 cm in front of the apple's nose, inside the mask
    t = measure(Instances.from_masks(mask[None], image_size=(H, W)), to_mm(depth), K)
    dc, dd = errors(t, 0, centre, radius)
    assert dc < 3.0 and abs(dd) < 3.0, (dc, dd)


def test_too_few_valid_points_give_null_fields_not_a_guess():
    centre, radius = (0.0, 0.0, 0.8), 0.04
    depth, ids = render_spheres([(centre, radius)])
    mm = to_mm(depth)
    mm[ids == 0] = 0  # a dark apple: no depth on it at all ...
    keep = np.argwhere(ids == 0)[:: max(1, int((ids == 0).sum()) // (MIN_POINTS // 2))]
    mm[keep[:, 0], keep[:, 1]] = to_mm(depth)[keep[:, 0], keep[:, 1]]  # ... but a few stray pixels
    t = measure(instances_of(ids, [0]), mm, K)
    assert t.depth_points[0] < MIN_POINTS
    rec = t.record(0)
    assert rec["depth_points"] == t.depth_points[0]
    assert all(rec[k] is None for k in rec if k != "depth_points"), rec


def test_projected_outline_area_matches_the_rendered_sphere_off_axis():
    spheres = [((0.25, -0.15, 0.6), 0.045), ((-0.1, 0.1, 1.2), 0.035), ((0.0, 0.0, 0.4), 0.04)]
    for centre, radius in spheres:
        _, ids = render_spheres([(centre, radius)])
        area = projected_disc_area(np.array([centre]), np.array([radius]), K)[0]
        assert area == pytest.approx((ids == 0).sum(), rel=0.03)


def test_instances_carry_picking_fields_into_records():
    spheres = [((0.05, 0.0, 0.5), 0.04), ((-0.1, 0.05, 0.9), 0.035)]
    depth, ids = render_spheres(spheres)
    inst = instances_of(ids, [0, 1])
    mm = to_mm(depth)
    mm[ids == 1] = 0
    inst.picking = measure(inst, mm, K)
    recs = inst.to_records()
    assert recs[0]["diameter_mm"] == pytest.approx(80, abs=1.5) and recs[1]["diameter_mm"] is None
    one = inst[1]
    assert len(one.picking) == 1 and one.to_records()[0]["center_m"] is None
    assert "center_m" not in Instances.from_masks(inst.masks, image_size=(H, W)).to_records()[0]  # None unless set


# --- the CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory) -> Path:
    """Three colour frames with aligned 16-bit depth and intrinsics.json (apples of the renderer's colours)."""
    root = tmp_path_factory.mktemp("rgbd")
    rng = np.random.default_rng(3)
    (root / "images").mkdir()
    (root / "depth").mkdir()
    truth = {}
    for i in range(3):
        spheres = [((rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1), rng.uniform(0.4, 0.9)), 0.04) for _ in range(4)]
        truth[f"f{i}.jpg"] = [c for c, _ in spheres]
        depth, ids = render_spheres(spheres)
        image = np.full((H, W, 3), (40, 110, 50), np.uint8)
        image[ids >= 0] = (40, 40, 190)
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), image)
        cv2.imwrite(str(root / "depth" / f"f{i}.png"), stereo_noise(depth, 0.0094, rng))
    (root / "intrinsics.json").write_text(json.dumps({"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy,
                                                      "width": W, "height": H}))
    (root / "truth.json").write_text(json.dumps(truth))
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def test_run_with_depth_writes_3d_fields(rgbd, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    proc = _run("run", MODEL, "--source", str(rgbd / "images"), "--depth", str(rgbd / "depth"),
                "--intrinsics", str(rgbd / "intrinsics.json"), "--jsonl", str(jsonl), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(recs) == 3 and all("3d" in r["ms"] for r in recs)
    truth = json.loads((rgbd / "truth.json").read_text())
    centre_errors, diameters = [], []
    for r in recs:
        for a in r["apples"]:  # every apple has the fields; a measured one sits on a true sphere
            assert {"center_m", "diameter_mm", "distance_m", "pick_point_m", "approach", "visible_fraction",
                    "depth_points"} <= set(a)
            if a["center_m"] is not None:
                centre_errors.append(min(np.linalg.norm(np.subtract(a["center_m"], c)) for c in truth[r["image"]]))
                diameters.append(a["diameter_mm"])
    assert len(centre_errors) >= 6
    assert np.median(centre_errors) < 0.01 and max(centre_errors) < 0.03, centre_errors
    # flat red discs are not what the model was trained on: its masks run wide of them and the outline with
    # them, so the size is only checked for plausibility here (the geometry tests and the render test pin it)
    assert 60 < np.median(diameters) < 110, diameters


def _bad_depth(rgbd: Path, tmp_path: Path, make) -> Path:
    folder = tmp_path / "depth"
    folder.mkdir()
    for i, path in enumerate(sorted((rgbd / "depth").glob("*.png"))):
        out = make(i, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
        if out is not None:
            cv2.imwrite(str(folder / path.name), out)
    return folder


@pytest.mark.parametrize("case,words", [
    ("size", ("depth for f0.jpg is 160x120", "320x240")),
    ("8bit", ("8-bit",)),
    ("short", ("depth stream ends before the colour stream",)),
])
def test_bad_depth_is_one_line(rgbd, tmp_path, case, words):
    if case == "size":
        depth = _bad_depth(rgbd, tmp_path, lambda i, d: cv2.resize(d, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST))
    elif case == "8bit":
        depth = _bad_depth(rgbd, tmp_path, lambda i, d: (d // 256).astype(np.uint8))
    else:  # two depth frames for three colour frames, named differently so they pair by index
        depth = tmp_path / "d"
        depth.mkdir()
        for i, path in enumerate(sorted((rgbd / "depth").glob("*.png"))[:2]):
            (depth / f"depth_{i:04d}.png").write_bytes(path.read_bytes())
    proc = _run("run", MODEL, "--source", str(rgbd / "images"), "--depth", str(depth),
                "--intrinsics", str(rgbd / "intrinsics.json"), "--jsonl", str(tmp_path / "o.jsonl"))
    _one_line_error(proc, *words)


@pytest.mark.parametrize("content,words", [
    (None, ("--depth needs --intrinsics",)),
    ('{"fx": 300, "cx": 160, "cy": 120}', ("lack 'fy'",)),
    ('{"fx": 300, "fy": "a lot", "cx": 160, "cy": 120}', ("'fy' must be a finite number",)),
    ('{"fx": 300, "fy": 300, "cx": 160, "cy": 120, "width": 640, "height": 480}', ("intrinsics are for 640x480",)),
    ("fx=300", ("neither a JSON object nor JSON Lines",)),
])
def test_bad_intrinsics_are_one_line(rgbd, tmp_path, content, words):
    args = ["run", MODEL, "--source", str(rgbd / "images"), "--depth", str(rgbd / "depth")]
    if content is not None:
        (tmp_path / "k.json").write_text(content)
        args += ["--intrinsics", str(tmp_path / "k.json")]
    _one_line_error(_run(*args), *words)


def test_depth_video_pairs_by_frame_and_must_be_16_bit(rgbd, tmp_path):
    """A colour video with a 16-bit FFV1 depth video; an 8-bit depth video is refused in one line."""
    frames = [cv2.imread(str(p)) for p in sorted((rgbd / "images").glob("*.jpg"))]
    depths = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((rgbd / "depth").glob("*.png"))]
    colour = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(colour), cv2.VideoWriter_fourcc(*"MJPG"), 5, (W, H))
    for f in frames:
        writer.write(f)
    writer.release()
    deep = tmp_path / "depth.mkv"
    writer = cv2.VideoWriter(str(deep), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 5, (W, H),
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    for d in depths:
        writer.write(d)
    writer.release()
    jsonl = tmp_path / "v.jsonl"
    proc = _run("run", MODEL, "--source", str(colour), "--depth", str(deep), "--intrinsics",
                str(rgbd / "intrinsics.json"), "--jsonl", str(jsonl))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(jsonl.read_text().splitlines()) == 3
    flat = tmp_path / "depth8.avi"
    writer = cv2.VideoWriter(str(flat), cv2.VideoWriter_fourcc(*"MJPG"), 5, (W, H))
    for d in depths:
        writer.write(cv2.cvtColor((d // 8).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    proc = _run("run", MODEL, "--source", str(colour), "--depth", str(flat), "--intrinsics",
                str(rgbd / "intrinsics.json"))
    _one_line_error(proc, "8-bit")


# --- end to end on the renderer's RGB-D -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Three clean-depth renders (``pomona generate --depth --depth-noise 0``)."""
    out = tmp_path_factory.mktemp("render") / "ds"
    proc = _run("generate", str(out), "--n", "3", "--size", "320", "--seed", "11", "--depth", "--depth-noise", "0",
                "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_run_then_evaluate_picking_on_a_render(rendered, tmp_path):
    jsonl = tmp_path / "pred.jsonl"
    proc = _run("run", MODEL, "--source", str(rendered / "images"), "--depth",
                str(rendered / "depth"), "--intrinsics", str(rendered / "manifest.jsonl"), "--jsonl", str(jsonl))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _run("evaluate", "picking", str(jsonl), str(rendered), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    truth = sum(len(json.loads(line)["apples_3d"]) for line in (rendered / "manifest.jsonl").read_text().splitlines())
    assert result["apples"] == truth > 0 and result["matched"] + result["missed"] == truth
    for part in (result, result["target"]):
        assert {"median", "p90"} <= set(part["center_error_m"]) and {"median", "p90"} <= set(part["diameter_error_mm"])
    assert sum(b["apples"] for b in result["by_distance"].values()) == truth
    assert sum(b["apples"] for b in result["by_visible_fraction"].values()) == truth
    assert result["target"]["goal"]["max_distance_m"] == 1.0
    assert result["matched"] > 0 and result["center_error_m"]["median"] < 0.02  # the shipped model finds some


def test_true_masks_on_clean_render_give_the_3d_truth_back(rendered, tmp_path):
    """The 3D step on the renderer's own masks and clean depth: the evaluation must report small errors."""
    from pomona.pipeline.evaluate_picking import evaluate_picking, targets_from_true_masks

    result = evaluate_picking(targets_from_true_masks(rendered, tmp_path / "true.jsonl"), rendered)
    assert result["matched"] == result["apples"] > 0 and result["missed"] == 0
    assert result["center_error_m"]["median"] < 0.005 and result["diameter_error_mm"]["median"] < 5.0, result


def test_evaluate_picking_refuses_predictions_without_polygons(rendered, tmp_path):
    from pomona.pipeline.evaluate_picking import targets_from_true_masks

    lines = [json.loads(line) for line in targets_from_true_masks(rendered, tmp_path / "t.jsonl").read_text().splitlines()]
    for rec in lines:
        for apple in rec["apples"]:
            apple.pop("polygon", None)
    (tmp_path / "bare.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    _one_line_error(_run("evaluate", "picking", str(tmp_path / "bare.jsonl"), str(rendered)), "without polygons")


def test_demo_measures_an_uploaded_colour_and_depth_pair(rgbd, tmp_path):
    gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'pomona[demo]')")
    from pomona.edge import demo

    from pomona.models import resolve_model

    cache, model = demo.PredictorCache(), str(resolve_model(MODEL))
    image, depth = rgbd / "images" / "f0.jpg", rgbd / "depth" / "f0.png"
    _, count, latency, table, files = demo.detect_rgbd(cache, str(image), str(depth), str(rgbd / "intrinsics.json"),
                                                       None, None, None, None, model, 0.25, 0.7)
    assert len(table) == count > 0 and all(len(row) == len(demo.RGBD_COLUMNS) for row in table)
    assert 60 < np.median([row[4] for row in table if row[4] is not None]) < 110  # diameter_mm, as in the CLI test
    line = json.loads(Path(files[0]).read_text())
    assert len(line["apples"]) == count and all("diameter_mm" in a and "center_m" in a for a in line["apples"])
    assert "3d" in latency
    # the same with the four fields instead of a file; a depth of another size is a sentence on the page
    demo.detect_rgbd(cache, str(image), str(depth), None, K.fx, K.fy, K.cx, K.cy, model, 0.25, 0.7)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.imread(str(depth), cv2.IMREAD_UNCHANGED)[::2, ::2])
    with pytest.raises(gr.Error, match="aligned, pixel for pixel"):
        demo.detect_rgbd(cache, str(image), str(small), str(rgbd / "intrinsics.json"), None, None, None, None,
                         model, 0.25, 0.7)
    with pytest.raises(gr.Error, match="intrinsics JSON"):
        demo.detect_rgbd(cache, str(image), str(depth), None, None, None, None, None, model, 0.25, 0.7)


def _fake_realsense(images: list, depths: list, served: list):
    """A stand-in for pyrealsense2 that serves ``images`` with ``depths`` (in 0.5 mm units, to check the scaling),
    aligned, one frame pair per 30 ms, appending the index of each pair it serves to ``served``."""
    import time
    import types

    class Frame:
        def __init__(self, data):
            self.data = data

        def get_data(self):
            return self.data

    class Frames:
        def __init__(self, k):
            self.k = k

        def get_color_frame(self):
            return Frame(images[self.k])

        def get_depth_frame(self):  # in the device's units: 0.5 mm here
            return Frame((depths[self.k].astype(np.uint32) * 2).astype(np.uint16))

    class Pipeline:
        def start(self, config):
            intr = types.SimpleNamespace(fx=K.fx, fy=K.fy, ppx=K.cx, ppy=K.cy, width=W, height=H)
            sensor = types.SimpleNamespace(get_depth_scale=lambda: 0.0005)
            stream = types.SimpleNamespace(as_video_stream_profile=lambda: types.SimpleNamespace(get_intrinsics=lambda: intr))
            return types.SimpleNamespace(get_device=lambda: types.SimpleNamespace(first_depth_sensor=lambda: sensor),
                                         get_stream=lambda s: stream)

        def wait_for_frames(self, timeout_ms):
            time.sleep(0.03)
            served.append(len(served) % len(images))
            return Frames(served[-1])

        def stop(self):
            pass

    return types.SimpleNamespace(pipeline=Pipeline, config=lambda: types.SimpleNamespace(
        enable_device=lambda s: None, enable_stream=lambda *a: None), stream=types.SimpleNamespace(depth=0, color=1),
        format=types.SimpleNamespace(z16=0, bgr8=1), align=lambda s: types.SimpleNamespace(process=lambda f: f))


def test_realsense_path_pairs_each_colour_frame_with_its_depth(rgbd, tmp_path, monkeypatch):
    """The --depth realsense plumbing against a stand-in for pyrealsense2 that serves the rgbd frames (no camera
    here: this checks pomona's side, the pairing, units and intrinsics, not Intel's library)."""
    from pomona.edge.runner import run

    images = [cv2.imread(str(p)) for p in sorted((rgbd / "images").glob("*.jpg"))]
    depths = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((rgbd / "depth").glob("*.png"))]
    monkeypatch.setitem(sys.modules, "pyrealsense2", _fake_realsense(images, depths, []))
    jsonl = tmp_path / "rs.jsonl"
    summary = run(MODEL, "realsense", depth="realsense", jsonl=jsonl, max_frames=4, quiet=True)
    assert summary["frames"] == 4
    truth = json.loads((rgbd / "truth.json").read_text())
    errors = []
    for rec in (json.loads(line) for line in jsonl.read_text().splitlines()):
        for a in rec["apples"]:
            if a["center_m"] is not None:  # every frame's apples sit on the spheres of some served frame
                errors.append(min(np.linalg.norm(np.subtract(a["center_m"], c)) for cs in truth.values() for c in cs))
    assert len(errors) >= 4 and np.median(errors) < 0.01, errors
