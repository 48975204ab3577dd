"""Drive-by clip: the camera slides along one rendered orchard row, so every apple keeps its
identity across frames; ground-truth boxes per frame carry the apple's track id.

With depth (``render_driveby(..., depth_noise=...)``, ``pomona generate OUT --video --depth``) the clip
also has aligned depth and 3D ground truth, laid out like the stills' (see ``render_driveby``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pomona import atomic

from . import camera
from . import depth as depth_mod
from .depth_noise import DepthNoise, depth_rng, sense
from .scene import MIN_VISIBLE_PX, World, _check, apple_spheres, apple_truth, build_world, scene_rng
from .params import sample_params

FPS = 15


def _boxes(idbuf: np.ndarray) -> list[dict]:
    ids = idbuf[idbuf > 0]
    if ids.size == 0:
        return []
    counts = np.bincount(ids)
    out = []
    for k in np.nonzero(counts >= MIN_VISIBLE_PX)[0]:
        ys, xs = np.nonzero(idbuf == k)
        out.append({"track_id": int(k), "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                    "area": int(counts[k])})
    return out


def render_driveby(out_dir: Path, frames: int = 90, seed: int = 0, size=(640, 360), prompt: str | None = None,
                   depth_noise: DepthNoise | None = None) -> dict:
    """Write driveby.mp4, driveby_gt.jsonl and driveby.json into ``out_dir``; return the summary.

    driveby_gt.jsonl has one line per frame: ``{"frame": i, "apples": [{"track_id", "box", "area"}, ...]}``.
    With ``depth_noise`` (the depth sensor; level 0 = clean depth) the clip also gets:

    - ``depth/frame_%06d.png`` for frame i = 0, 1, ...: uint16 millimetres, 0 = invalid, the video's size,
      aligned to the frame (what the sensor saw: ``depth_noise.sense``);
    - in each driveby_gt.jsonl line: ``"depth": "depth/frame_000000.png"``, ``"intrinsics": {fx, fy, cx, cy,
      width, height}`` (the same every frame) and ``"apples_3d": [{"track_id", "frame", "center_m": [x, y, z],
      "diameter_mm", "visible_fraction"}, ...]`` for the apples of that line's "apples" (OpenCV camera frame,
      metres, the apple sphere's centre; visible_fraction: the share of its outline the frame shows);
    - in driveby.json: ``"depth": "depth/frame_%06d.png"``, ``"intrinsics"`` and ``"depth_noise"`` (its parameters).
    """
    w, h, frames = _checked_size_and_frames(size, frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Without a prompt: a typical row seen from a vehicle, apples at a readable size.
    text = prompt or "apples on trellised trees in a row, 1.5 m away, many apples"
    rng = scene_rng(text, seed)
    step = max(2, int(round(w * 0.012)))
    prm, world, pano = _panorama(text, rng, (w, h), step, frames, depth=depth_noise is not None)

    lines, seen = [], set()
    drng = depth_rng(text, seed)  # the depth noise's own stream: the frames are the same with or without it
    with _video_writer(out_dir / "driveby.mp4", (w, h)) as writer:
        for i in range(frames):
            x, dy, frame, ids = _frame(pano, world.idbuf, i, step, w, rng, prm["noise_sigma"])
            writer.write(frame)
            line = _ground_truth_line(out_dir, world, prm, i, x, dy, frame, ids, depth_noise, drng)
            seen.update(a["track_id"] for a in line["apples"])
            lines.append(json.dumps(line))
    atomic.write_text(out_dir / "driveby_gt.jsonl", "\n".join(lines) + "\n")
    summary = _summary(len(seen), frames, (w, h), seed, prompt, prm, step, depth_noise)
    atomic.write_json(out_dir / "driveby.json", summary)
    return summary


def _checked_size_and_frames(size, frames) -> tuple[int, int, int]:
    """(width, height, frames) as ints; ValueError for a size under 16x16 or fewer than one frame."""
    w, h, _ = _check(size, frozenset())
    frames = int(frames)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return w, h, frames


def _panorama(text: str, rng: np.random.Generator, size: tuple[int, int], step: int, frames: int,
              depth: bool) -> tuple[dict, World, np.ndarray]:
    """The whole row the camera slides along: its scene parameters, the drawn world (``build_world``) and
    the finished panorama image (uint8 BGR), ``step * (frames - 1)`` pixels wider than a frame."""
    w, h = size
    pano_w = w + step * (frames - 1)
    # The camera (focal length) is the frame's; the world is the whole panorama.
    # a vehicle's wide-angle camera, not the narrow crops the stills also cover
    prm = sample_params(text, rng, (w, h), frozenset({"blur"}), fov_range=(45.0, 66.0))
    prm["no_apples"] = False
    world = build_world(rng, prm, (pano_w, h), depth=depth)
    # The panorama is finished without sensor noise, JPEG or vignette: noise is added to each frame
    # (``_frame``), fresh every frame.
    still = dict(prm, noise_sigma=0.0, jpeg_quality=0, vignette=0.0)
    pano = camera.finish(rng, world.image, world.sky, still, stream=True)
    return prm, world, pano


@contextlib.contextmanager
def _video_writer(path: Path, size: tuple[int, int]) -> Iterator[cv2.VideoWriter]:
    """An mp4v writer at FPS into a temporary file that becomes ``path`` only once the block succeeds."""
    with atomic.atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
        if not writer.isOpened():
            raise RuntimeError("OpenCV could not open an mp4v video writer")
        try:
            yield writer
        finally:
            writer.release()


def _frame(pano: np.ndarray, idbuf: np.ndarray, i: int, step: int, w: int, rng: np.random.Generator,
           noise_sigma: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Frame i: the panorama from column ``x = i * step``, moved down ``dy`` rows, with sensor noise; and its
    apple ids. Returns (x, dy, frame uint8 BGR, ids int32)."""
    # A little vertical bob, like a vehicle on uneven ground.
    x = i * step
    dy = int(round(2 * np.sin(i * 0.7)))
    frame = np.roll(pano[:, x : x + w], dy, axis=0)
    ids = np.roll(idbuf[:, x : x + w], dy, axis=0)
    noise = rng.standard_normal(frame.shape, dtype=np.float32) * 255 * noise_sigma * 0.5
    frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return x, dy, frame, ids


def _ground_truth_line(out_dir: Path, world: World, prm: dict, i: int, x: int, dy: int, frame: np.ndarray, ids: np.ndarray,
                       depth_noise: DepthNoise | None, drng: np.random.Generator) -> dict:
    """Frame i's driveby_gt.jsonl line: its apples' boxes; with depth also its depth PNG (written here),
    intrinsics and 3D truth (``_frame_depth``)."""
    apples = _boxes(ids)
    line = {"frame": i, "apples": apples}
    if depth_noise is not None:
        line.update(_frame_depth(out_dir, world, i, x, dy, frame, ids, apples, prm["focal_px"], depth_noise, drng))
    return line


def _summary(distinct_apples: int, frames: int, size: tuple[int, int], seed: int, prompt: str | None, prm: dict,
             step: int, depth_noise: DepthNoise | None) -> dict:
    """driveby.json's content (and render_driveby's return value)."""
    w, h = size
    summary = {"distinct_apples": distinct_apples, "frames": frames, "fps": FPS, "size": [w, h], "seed": int(seed),
               "prompt": prompt, "cultivar": prm["cultivar"], "light": prm["light"], "step_px_per_frame": step}
    if depth_noise is not None:
        summary.update(depth="depth/frame_%06d.png", intrinsics=depth_mod.intrinsics(prm["focal_px"], w, h),
                       depth_noise=depth_noise.as_dict())
    return summary


def _frame_depth(out_dir: Path, world, i: int, x: int, dy: int, frame: np.ndarray, ids: np.ndarray, apples: list[dict],
                 focal: float, noise: DepthNoise, rng: np.random.Generator) -> dict:
    """Write frame i's depth PNG; return its driveby_gt.jsonl fields (depth, intrinsics, apples_3d)."""
    h, w = ids.shape
    intr = depth_mod.intrinsics(focal, w, h)
    spheres = apple_spheres(world, intr, -x, dy)  # the frame shows the panorama from column x, moved down dy rows
    clean = depth_mod.frame_depth(np.roll(world.depth.zbuf[:, x : x + w], dy, axis=0), ids, spheres, intr)
    name = f"depth/frame_{i:06d}.png"
    depth_mod.write_depth_png(out_dir / name, sense(clean, frame, focal, noise, rng))
    truth = apple_truth(world, ids, spheres, [a["track_id"] for a in apples])
    return {"depth": name, "intrinsics": intr, "apples_3d": [{"track_id": a["track_id"], "frame": i, **t} for a, t in zip(apples, truth)]}
