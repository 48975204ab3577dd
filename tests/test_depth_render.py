"""The renderer's depth and 3D ground truth (pipeline/procedural/depth.py) and the stereo sensor model
(depth_noise.py): geometry against known answers, the noise model on flat planes, the image unchanged by
--depth, and `pomona generate --depth` (stills and --video) end to end."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from pomona.errors import PomonaError
from pomona.pipeline.procedural import render, render_driveby
from pomona.pipeline.procedural.depth import ROW_SPACING_M, read_depth_png, write_depth_png
from pomona.pipeline.procedural.depth_noise import DepthNoise, depth_noise, depth_edges, sense, shadowed
from tests.test_cli import assert_one_line_error, pomona

SIZE = (192, 160)
GREY = np.full((240, 320, 3), 128, np.uint8)


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through (N, 3) points: |p|^2 = 2 p.c + (r^2 - |c|^2)."""
    a = np.c_[2 * points, np.ones(len(points))]
    sol = np.linalg.lstsq(a, (points**2).sum(1), rcond=None)[0]
    return sol[:3], float(np.sqrt(sol[3] + sol[:3] @ sol[:3]))


def back_project(depth: np.ndarray, mask: np.ndarray, intr: dict) -> np.ndarray:
    ys, xs = np.nonzero(mask & (depth > 0))
    z = depth[ys, xs].astype(np.float64)
    return np.c_[(xs - intr["cx"]) / intr["fx"] * z, (ys - intr["cy"]) / intr["fy"] * z, z]


@pytest.fixture(scope="module")
def clear_scenes():
    """Apples at 0.4-1 m with no occluders (drawn in front of the canopy): many are whole and in the frame."""
    return [render(f"apples, {d} m away", s, SIZE, frozenset({"occluders"}), depth=True) for d, s in ((0.4, 1), (0.6, 2), (1, 3), (0.6, 4))]


# --- geometry ------------------------------------------------------------------------------------------
def test_clean_depth_gives_back_each_whole_apple(clear_scenes):
    """A sphere fitted to the clean depth inside a fully visible apple's mask is its ground truth (~1 mm),
    and so is one fitted to the millimetre PNG."""
    checked = 0
    for sc in clear_scenes:
        assert sc.depth.shape == sc.image.shape[:2] and sc.depth.dtype == np.float32
        assert len(sc.apples_3d) == len(sc.instances)
        mm = write_and_read(sc.depth)
        for truth, mask in zip(sc.apples_3d, sc.instances.masks):
            if truth["visible_fraction"] < 0.999 or mask.sum() < 150:
                continue
            for depth, tol in ((sc.depth, 1.0), (mm, 1.5)):
                centre, radius = fit_sphere(back_project(depth, mask, sc.intrinsics))
                assert np.linalg.norm(centre - truth["center_m"]) * 1000 < tol, (truth, centre)
                assert abs(2000 * radius - truth["diameter_mm"]) < tol, (truth, radius)
            checked += 1
    assert checked >= 3, f"only {checked} whole apples in the test scenes"
    print("whole apples checked:", checked)


def write_and_read(depth: np.ndarray) -> np.ndarray:
    """Through the uint16 millimetre PNG and back."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.png"
        write_depth_png(path, depth)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        return read_depth_png(path)


def test_truth_is_the_camera_geometry(clear_scenes):
    """Each apple's centre projects to its mask (OpenCV pinhole, x right, y down), its depth is the renderer's
    distance, its diameter an apple's; what is drawn over an apple is nearer than the apple there."""
    for sc in clear_scenes:
        intr, dist = sc.intrinsics, sc.params["distance_m"]
        assert (intr["width"], intr["height"]) == SIZE and (intr["cx"], intr["cy"]) == (SIZE[0] / 2 - 0.5, SIZE[1] / 2 - 0.5)
        assert intr["fx"] == intr["fy"] == pytest.approx(sc.params["focal_px"])
        for truth, mask in zip(sc.apples_3d, sc.instances.masks):
            x, y, z = truth["center_m"]
            assert 0.1 < z < dist * 2 and 40 < truth["diameter_mm"] < 120 and 0 < truth["visible_fraction"] <= 1
            u, v = intr["fx"] * x / z + intr["cx"], intr["fy"] * y / z + intr["cy"]
            ys, xs = np.nonzero(mask)
            if truth["visible_fraction"] > 0.999:  # whole apple: its centre is inside, near the mask's centroid
                assert mask[int(round(v)), int(round(u))]
                assert abs(xs.mean() - u) < 2 and abs(ys.mean() - v) < 2
        # Nothing lies beyond the next row; only open sky has no depth.
        assert sc.depth.max() <= dist + ROW_SPACING_M + 1e-4 and (sc.depth[sc.instances.masks.any(0)] > 0).all()


def test_what_hides_an_apple_is_in_front_of_it():
    """Where a leaf, twig or post is drawn over an apple, its depth is nearer than the apple's front."""
    from pomona.pipeline.procedural.apples import draw_apple
    from pomona.pipeline.procedural.params import sample_params
    from pomona.pipeline.procedural.scene import build_world, scene_rng

    rng = scene_rng("apples heavily occluded by leaves", 7)
    prm = sample_params("apples heavily occluded by leaves, 0.7 m away", rng, SIZE, frozenset())
    world = build_world(rng, prm, SIZE, depth=True)
    hidden = 0
    for k, spec in enumerate(world.apples, 1):
        outline = np.zeros(world.idbuf.shape, np.int32)
        draw_apple(np.zeros((*outline.shape, 3), np.uint8), outline, spec, 1, prm, 1.0)
        covered = (outline == 1) & (world.idbuf == 0)
        radius = spec["r"] * spec["z"] / prm["focal_px"]
        assert (world.depth.zbuf[covered] < np.hypot(spec["z"], radius) - radius).all()
        hidden += int(covered.sum())
    assert hidden > 100


def test_depth_leaves_the_image_unchanged():
    for seed in (5, 6):
        plain, with_depth = render("apples", seed, SIZE), render("apples", seed, SIZE, depth=True)
        assert np.array_equal(plain.image, with_depth.image)
        assert np.array_equal(plain.instances.masks, with_depth.instances.masks)
        assert plain.depth is None and with_depth.depth is not None


def test_visible_fraction_counts_occlusion_and_the_frame():
    sc = render("apples heavily occluded by leaves, cut by the border, 1 m away", 3, SIZE, depth=True)
    fractions = np.array([a["visible_fraction"] for a in sc.apples_3d])
    assert len(fractions) and fractions.min() < 0.6, fractions


def test_outline_area_is_the_drawn_apple():
    """visible_fraction's denominator for apples the frame cuts: the outline draw_apple paints, counted off-frame."""
    from pomona.pipeline.procedural.apples import apple_spec, draw_apple
    from pomona.pipeline.procedural.depth import outline_area
    from pomona.pipeline.procedural.params import sample_params

    rng = np.random.default_rng(0)
    prm = sample_params("apples", rng, (128, 128), frozenset())
    for radius, tol in ((4.0, 0.08), (12.0, 0.02), (50.0, 0.005)):
        for _ in range(4):
            spec = dict(apple_spec(rng, prm, 64 + rng.uniform(-1, 1), 64 + rng.uniform(-1, 1), radius, 1.0), sun_scale=1.0)
            ids = np.zeros((128, 128), np.int32)
            draw_apple(np.zeros((128, 128, 3), np.uint8), ids, spec, 1, prm, 1.0)
            assert outline_area(spec) == pytest.approx((ids == 1).sum(), rel=tol)


# --- the sensor model on flat planes -------------------------------------------------------------------
def test_error_grows_with_the_square_of_distance():
    noise = replace(depth_noise("d435"), max_range_m=10.0)
    rng = np.random.default_rng(0)
    std = {}
    for z in (0.5, 1.0, 2.0, 4.0):
        sensed = sense(np.full(GREY.shape[:2], z, np.float32), GREY, 400.0, noise, rng)
        assert (sensed > 0).all()
        std[z] = float(sensed.std())
        assert std[z] == pytest.approx(noise.k_per_m * z * z, rel=0.15)
        assert abs(float(sensed.mean()) - z) < 0.2 * std[z]
    assert std[2.0] / std[1.0] == pytest.approx(4, rel=0.15) and std[4.0] / std[1.0] == pytest.approx(16, rel=0.15)
    assert noise.k_per_m * 2.0 == pytest.approx(0.02, rel=0.1), "D435-like: ~2% RMS at 2 m"
    louder = sense(np.full(GREY.shape[:2], 1.0, np.float32), GREY, 400.0, replace(noise, level=2.0), rng)
    assert louder.std() == pytest.approx(2 * std[1.0], rel=0.15)


def test_holes_at_depth_edges():
    """A near box in front of a far wall: the band the second imager cannot see (left of the box, as wide as the
    disparity jump) and the far side of each edge are holes; the rest is measured."""
    fx, near, far = 400.0, 1.0, 3.0
    clean = np.full((120, 200), far, np.float32)
    clean[30:90, 100:140] = near
    sensed = sense(clean, GREY[:120, :200], fx, depth_noise("d435"), np.random.default_rng(1))
    hole = sensed[60] == 0
    band = fx * 0.05 * (1 / near - 1 / far)  # 13.3 px
    left = np.nonzero(hole[:100])[0]
    assert len(left) == pytest.approx(band, abs=2) and left.max() == 99
    assert hole[140] and not hole[141:].any() and not hole[100:140].any()
    assert (sensed[10] > 0).all() and (sensed[40:80, 105:135] > 0).all()
    assert shadowed(clean, fx * 0.05)[60, 100 - int(band) + 1 : 100].all()
    assert depth_edges(clean, 0.04)[60, [99, 140]].all()


def test_range_dark_and_highlights():
    noise = depth_noise("d435")
    plane = np.full(GREY.shape[:2], 1.0, np.float32)
    assert (sense(plane * 5, GREY, 400.0, noise, np.random.default_rng(0)) == 0).all(), "beyond max range"
    assert (sense(plane * 0.1, GREY, 400.0, noise, np.random.default_rng(0)) == 0).all(), "nearer than min range"
    dark, white = np.full_like(GREY, 4), np.full_like(GREY, 255)
    assert (sense(plane, dark, 400.0, noise, np.random.default_rng(0)) == 0).all()
    assert (sense(plane, white, 400.0, noise, np.random.default_rng(0)) == 0).all()
    spot = GREY.copy()
    cv2.circle(spot, (160, 120), 20, (255, 255, 255), -1)
    sensed = sense(plane, spot, 400.0, noise, np.random.default_rng(0))
    assert (sensed[120, 145:176] == 0).all() and (sensed[:, :100] > 0).all()


def test_level_zero_is_the_clean_depth_and_levels_parse():
    clean = np.random.default_rng(0).uniform(0.2, 9, (50, 60)).astype(np.float32)
    clean[:5] = 0
    assert np.array_equal(sense(clean, GREY[:50, :60], 400.0, depth_noise(0), np.random.default_rng(0)), clean)
    assert depth_noise(None) == DepthNoise() and depth_noise("d435").level == 1.0
    assert depth_noise("clean").level == depth_noise("0").level == 0.0 and depth_noise("2.5").level == 2.5
    assert depth_noise("1").name == "d435" and depth_noise("0").name == "clean"
    for bad in ("-1", "loud", "nan"):
        with pytest.raises(PomonaError, match="--depth-noise"):
            depth_noise(bad)


# --- end to end ----------------------------------------------------------------------------------------
def test_generate_depth_end_to_end(tmp_path):
    out, plain = tmp_path / "rgbd", tmp_path / "rgb"
    assert pomona("generate", out, "--n", "3", "--size", "160x128", "--depth", "--depth-noise", "0", "--workers", "1",
                  "--prompts", write_prompts(tmp_path)).returncode == 0
    assert pomona("generate", plain, "--n", "3", "--size", "160x128", "--workers", "1", "--prompts", write_prompts(tmp_path)).returncode == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and sum(len(r["apples_3d"]) for r in records) > 0
    fronts = 0
    for rec in records:
        stem = rec["file"].split("/")[-1][:-4]
        assert rec["depth"] == f"depth/{stem}.png"
        assert (out / rec["file"]).read_bytes() == (plain / rec["file"]).read_bytes(), "--depth changed the image"
        raw = cv2.imread(str(out / rec["depth"]), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == cv2.imread(str(out / rec["file"])).shape[:2]
        assert set(rec["intrinsics"]) == {"fx", "fy", "cx", "cy", "width", "height"} and rec["intrinsics"]["width"] == 160
        assert rec["depth_noise"]["level"] == 0 and "k_per_m" in rec["depth_noise"]
        lines = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        assert sorted(a["label"] for a in rec["apples_3d"]) == list(range(len(lines)))
        intr, depth = rec["intrinsics"], raw.astype(np.float32) / 1000
        for a in rec["apples_3d"]:  # the clean depth at the centre pixel of a whole apple is its front
            x, y, z = a["center_m"]
            u, v = int(round(intr["fx"] * x / z + intr["cx"])), int(round(intr["fy"] * y / z + intr["cy"]))
            if a["visible_fraction"] > 0.999 and a["diameter_mm"] / 1000 * intr["fx"] / z > 12:
                assert depth[v, u] == pytest.approx(front(a), abs=0.002)
                fronts += 1
    assert fronts >= 1
    noisy = tmp_path / "noisy"
    assert pomona("generate", noisy, "--n", "1", "--size", "160x128", "--depth", "--workers", "1").returncode == 0
    assert json.loads((noisy / "manifest.jsonl").read_text())["depth_noise"]["name"] == "d435"
    clip = tmp_path / "clip"
    assert pomona("generate", clip, "--video", "--frames", "2", "--size", "96x64", "--depth", "--depth-noise", "2").returncode == 0
    assert sorted(p.name for p in (clip / "depth").iterdir()) == ["frame_000000.png", "frame_000001.png"]
    assert json.loads((clip / "driveby.json").read_text())["depth_noise"]["level"] == 2.0


def front(apple: dict) -> float:
    """Depth of the apple's surface on the ray through its centre: z - R z / |C|."""
    centre = np.array(apple["center_m"])
    return float(centre[2] - apple["diameter_mm"] / 2000 * centre[2] / np.linalg.norm(centre))


def write_prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("many apples in clear view, 0.8 m away\nred apples, 1 m away, partly hidden by leaves\n")
    return path


def test_generate_depth_bad_input(tmp_path):
    assert_one_line_error(pomona("generate", tmp_path / "a", "--n", "1", "--depth", "--depth-noise", "loud"), "--depth-noise")
    assert_one_line_error(pomona("generate", tmp_path / "b", "--n", "1", "--depth-noise", "1"), "--depth")
    assert_one_line_error(pomona("generate", tmp_path / "c", "--n", "1", "--depth", "--backend", "diffusers"), "procedural")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_driveby_depth(tmp_path):
    plain, deep = tmp_path / "plain", tmp_path / "deep"
    size, frames = (192, 128), 4
    render_driveby(plain, frames=frames, seed=1, size=size, prompt="many apples in clear view, 0.8 m away")
    summary = render_driveby(deep, frames=frames, seed=1, size=size, prompt="many apples in clear view, 0.8 m away",
                             depth_noise=depth_noise(0))
    assert summary["depth"] == "depth/frame_%06d.png" and summary["depth_noise"]["level"] == 0
    assert read_frames(plain / "driveby.mp4") == read_frames(deep / "driveby.mp4"), "--depth changed the video"
    lines = [json.loads(line) for line in (deep / "driveby_gt.jsonl").read_text().splitlines()]
    assert len(lines) == frames and sum(len(ln["apples_3d"]) for ln in lines) > 0
    fronts = 0
    for ln in lines:
        name = f"depth/frame_{ln['frame']:06d}.png"
        assert ln["depth"] == name and ln["intrinsics"] == summary["intrinsics"]
        depth = read_depth_png(deep / name)
        assert depth.shape == (size[1], size[0])
        assert [a["track_id"] for a in ln["apples_3d"]] == [a["track_id"] for a in ln["apples"]]
        assert all(a["frame"] == ln["frame"] for a in ln["apples_3d"])
        intr = ln["intrinsics"]
        for a, box in zip(ln["apples_3d"], ln["apples"]):
            x, y, z = a["center_m"]
            u, v = intr["fx"] * x / z + intr["cx"], intr["fy"] * y / z + intr["cy"]
            x0, y0, x1, y1 = box["box"]
            if a["visible_fraction"] > 0.999:  # whole: the centre is the box's centre, its depth the front
                assert abs((x0 + x1 - 1) / 2 - u) < 1.5 and abs((y0 + y1 - 1) / 2 - v) < 1.5
                assert depth[int(round(v)), int(round(u))] == pytest.approx(front(a), abs=0.002)
                fronts += 1
    assert fronts >= 1
    # The same apple seen in two frames: the camera moved sideways, so x changes and z does not.
    first = {a["track_id"]: a for a in lines[0]["apples_3d"]}
    last = {a["track_id"]: a for a in lines[-1]["apples_3d"]}
    common = set(first) & set(last)
    assert common
    for k in common:
        assert first[k]["center_m"][2] == pytest.approx(last[k]["center_m"][2], abs=1e-6)
        assert first[k]["center_m"][0] > last[k]["center_m"][0]


def read_frames(path) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.tobytes())
    cap.release()
    return frames
