"""Clean depth and 3D ground truth of a render, from the same pinhole camera that placed everything.

``pomona generate OUT --depth`` writes, for each still ``images/<stem>.jpg``, ``depth/<stem>.png`` (uint16,
millimetres, 0 = invalid, the image's size; what the depth sensor of ``depth_noise`` saw) and adds to its
manifest.jsonl record: ``"depth": "depth/<stem>.png"``, ``"intrinsics": {fx, fy, cx, cy, width, height}``,
``"depth_noise": {the sensor's parameters}`` and ``"apples_3d": [{"label", "center_m": [x, y, z],
"diameter_mm", "visible_fraction"}, ...]``, where ``label`` is the apple's line in ``labels/<stem>.txt`` and
visible_fraction the share of its whole outline the image shows (occlusion and the frame's edge).
Drive-by clips: see ``driveby.render_driveby``.

Camera frame: OpenCV (x right, y down, z forward), metres. Intrinsics: fx = fy = the render's focal
length in pixels, principal point at the image centre, in OpenCV's convention where pixel (u, v)
has its centre at integer coordinates (so cx = w / 2 - 0.5; the renderer's own continuous coordinates
put pixel u's centre at u + 0.5).

Leaves, branches, posts, tape and wires are fronto-parallel at their depth z; the neighbouring rows
behind the canopy sit ``ROW_SPACING_M`` further back; the ground comes towards the camera from there
to the foot of this row at the image's bottom; open sky has no depth (0). Apples are spheres: an apple drawn as a disc of radius r
pixels at depth z has diameter 2 R = 2 r z / f (the renderer's own ``ppm(z) = f / z``), and its centre
lies on the ray through the disc's centre at a z of sqrt(z^2 + R^2), where the sphere's silhouette
is exactly the drawn disc (on the axis; a fraction of a per cent off it). The depth of an apple pixel is
where its ray meets that sphere, so fitting a sphere to the clean depth inside a mask gives the ground
truth back. An occluder painted over an apple is kept at least ``OCCLUDER_GAP_M`` in front of the
apple's front: the painter's order (by the apple's centre) then agrees with the depth.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from pomona import atomic

from .depth_noise import DepthNoise, depth_rng, sense

ROW_SPACING_M = 3.0  # the next row behind the canopy (typical modern orchards: 3-4 m between rows)
OCCLUDER_GAP_M = 0.01


def intrinsics(focal: float, w: int, h: int) -> dict:
    """Pinhole intrinsics of a w x h render (OpenCV convention), as written to the manifest."""
    return {"fx": float(focal), "fy": float(focal), "cx": w / 2 - 0.5, "cy": h / 2 - 0.5, "width": int(w), "height": int(h)}


def apple_sphere(spec: dict, focal: float, px: float, py: float) -> tuple[np.ndarray, float]:
    """(centre xyz in metres, radius in metres) of an apple spec drawn at (px, py) pixels from the principal point."""
    radius = spec["r"] * spec["z"] / focal
    z = math.sqrt(spec["z"] ** 2 + radius**2)
    return np.array([px / focal * z, py / focal * z, z]), radius


def ray_sphere_depth(qx: np.ndarray, qy: np.ndarray, centre: np.ndarray, radius) -> np.ndarray:
    """Depth (z) where the rays (qx, qy, 1) first meet the spheres; rays that miss (the drawn outline is not
    a perfect circle) take the depth of their closest approach. ``centre``: (..., 3), broadcast with qx."""
    cx, cy, cz = centre[..., 0], centre[..., 1], centre[..., 2]
    qq = qx * qx + qy * qy + 1.0
    qc = qx * cx + qy * cy + cz
    disc = qc * qc - qq * (cx * cx + cy * cy + cz * cz - np.asarray(radius) ** 2)
    return ((qc - np.sqrt(np.maximum(disc, 0.0))) / qq).astype(np.float32)


def background_depth(h: int, w: int, distance: float, ground: np.ndarray | None) -> np.ndarray:
    """Depth behind everything drawn: the next row, and the ground (a level plane) in front of it."""
    z_far = distance + ROW_SPACING_M
    zbuf = np.full((h, w), z_far, np.float32)
    if ground is not None and ground.any():
        # A level plane seen from a camera looking along it: z = A / (v - horizon), here reaching the next
        # row (z_far) at the ground's mean top edge and the foot of this row (0.9 x distance) at the bottom.
        z_near = 0.9 * distance
        edge = float(np.mean(ground.argmax(0)[ground.any(0)]))
        horizon = (z_far * edge - z_near * h) / (z_far - z_near)
        rows = np.arange(h, dtype=np.float32)[:, None]
        z_ground = np.clip(z_far * (edge - horizon) / np.maximum(rows - horizon, 1e-3), z_near, z_far)
        zbuf = np.where(ground, z_ground, zbuf).astype(np.float32)
    return zbuf


class DepthLayer:
    """The depth buffer drawn alongside the id-buffer.

    ``zbuf`` holds the depth of the last occluder drawn at each pixel (branches and clutter write it as
    they draw, leaves once the frame is done, see ``canopy.shade_leaves``); ``cover`` the nearest z of any
    apple drawn at each pixel so far (the front of its sphere: the same for every camera, so a drive-by's
    panorama serves all its frames). Apple pixels get their depth per camera in ``frame_depth``.
    """

    def __init__(self, background: np.ndarray, focal: float):
        self.zbuf = background
        self.cover = np.full(background.shape, np.inf, np.float32)
        self.focal = float(focal)
        self.full_area: dict[int, float] = {}  # apple id -> pixels of its whole outline, the frame's edge ignored

    def apple(self, idbuf: np.ndarray, spec: dict, apple_id: int) -> None:
        """After apples.draw_apple painted ``apple_id``: note its surface and its full area."""
        h, w = idbuf.shape
        half = spec["r"] * 1.12 + 2  # draw_apple's own patch
        x0, x1 = int(max(0, math.floor(spec["cx"] - half))), int(min(w, math.ceil(spec["cx"] + half)))
        y0, y1 = int(max(0, math.floor(spec["cy"] - half))), int(min(h, math.ceil(spec["cy"] + half)))
        if x1 <= x0 or y1 <= y0:
            self.full_area[apple_id] = 0
            return
        mine = idbuf[y0:y1, x0:x1] == apple_id
        area = int(mine.sum())
        clipped = spec["cx"] - half < 0 or spec["cy"] - half < 0 or spec["cx"] + half > w or spec["cy"] + half > h
        self.full_area[apple_id] = outline_area(spec) if clipped else area
        if area:
            radius = spec["r"] * spec["z"] / self.focal
            front = math.sqrt(spec["z"] ** 2 + radius**2) - radius  # apple_sphere's centre z, less its radius
            cover = self.cover[y0:y1, x0:x1]
            cover[mine] = np.minimum(cover[mine], np.float32(front))

    def settle(self, idbuf: np.ndarray) -> None:
        """Once everything is drawn: an occluder over an apple stays in front of it."""
        over = (idbuf == 0) & np.isfinite(self.cover)
        self.zbuf[over] = np.minimum(self.zbuf[over], self.cover[over] - OCCLUDER_GAP_M)


def outline_area(spec: dict) -> float:
    """Area in pixels inside an apple's whole outline, wherever the frame's edge is. The outline of
    apples.draw_apple is rho <= rim(t) in its (u, v) frame (u in radii, v in radii x aspect), with
    rim(t) = 1 + two harmonics - a flat shoulder: the area is r^2 aspect / 2 times the integral of rim^2
    over the polar angle t. tests/test_depth_render.py checks it against draw_apple's pixels."""
    t = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    cos_t, sin_t = np.cos(t), np.sin(t)
    a2, p2, a3, p3 = spec["harm"]
    cos2, sin2 = cos_t * cos_t - sin_t * sin_t, 2 * sin_t * cos_t
    cos3, sin3 = cos_t * cos2 - sin_t * sin2, sin_t * cos2 + cos_t * sin2
    rim = 1 + a2 * (cos2 * math.cos(p2) - sin2 * math.sin(p2)) + a3 * (cos3 * math.cos(p3) - sin3 * math.sin(p3))
    rim = rim - 0.05 * np.clip(-sin_t, 0, 1) ** 4
    return float(math.pi * spec["r"] ** 2 * spec["aspect"] * np.mean(rim * rim))


def frame_depth(zbuf: np.ndarray, idbuf: np.ndarray, spheres: dict[int, tuple[np.ndarray, float]], intr: dict) -> np.ndarray:
    """Clean depth (float32 metres, 0 = none) of one camera view: ``zbuf`` for the occluders and the
    background, each apple pixel on its sphere (``spheres``: apple id -> (centre, radius) in this camera)."""
    depth = zbuf.astype(np.float32, copy=True)
    ys, xs = np.nonzero(idbuf > 0)
    if len(ys):
        ids = idbuf[ys, xs]
        top = int(ids.max())
        centres = np.zeros((top + 1, 3))
        radii = np.zeros(top + 1)
        for k, (c, r) in spheres.items():
            if k <= top:
                centres[k], radii[k] = c, r
        depth[ys, xs] = ray_sphere_depth((xs - intr["cx"]) / intr["fx"], (ys - intr["cy"]) / intr["fy"], centres[ids], radii[ids])
    depth[idbuf == -1] = 0.0
    return depth


def write_depth_png(path, depth_m: np.ndarray) -> None:
    """uint16 PNG in millimetres, 0 = invalid (no depth, or beyond 65.535 m), written atomically."""
    mm = np.where(np.isfinite(depth_m) & (depth_m > 0), np.round(depth_m * 1000.0), 0)
    atomic.write_image(path, np.where(mm > 65535, 0, mm).astype(np.uint16))  # OpenCV's default PNG settings: the fastest here


def read_depth_png(path) -> np.ndarray:
    """float32 metres, 0 = invalid."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16:
        raise ValueError(f"{path} is not a 16-bit depth PNG")
    return raw.astype(np.float32) / 1000.0


def write_still_depth(folder, stem: str, scene, prompt: str, seed: int, noise: DepthNoise) -> dict:
    """Write ``folder/depth/<stem>.png`` (what the sensor saw) for a scene rendered with ``depth=True``;
    return its manifest fields: depth, intrinsics, depth_noise, apples_3d (``label``: the apple's line in
    ``labels/<stem>.txt``; an instance the labels file skips, a degenerate polygon, is left out)."""
    sensed = sense(scene.depth, scene.image, scene.intrinsics["fx"], noise, depth_rng(prompt, seed))
    write_depth_png(Path(folder) / "depth" / f"{stem}.png", sensed)
    written = [len(p) >= 3 for p in scene.instances.polygons()] if len(scene.instances) else []
    line = np.cumsum(written) - 1
    apples = [dict(a, label=int(line[a["label"]])) for a in scene.apples_3d if written[a["label"]]]
    return {"depth": f"depth/{stem}.png", "intrinsics": scene.intrinsics, "depth_noise": noise.as_dict(), "apples_3d": apples}
