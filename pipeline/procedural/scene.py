"""Compose one orchard frame: background, branches, leaf clusters, apples, clutter, in depth order.

Everything is placed in a simple camera model (focal length in pixels, depth in metres) so
leaves, apples and branches keep their real size ratios at every distance. Each opaque draw
also writes the id-buffer (apple id, or 0 for an occluder), so the modal mask of an apple is
exactly where its id survives after everything in front of it has been drawn.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from pomona.instances import Instances

from . import apples as apple_mod
from . import camera
from . import depth as depth_mod
from .canopy import (_BARK_PALETTE, background, cast_shadow, draw_branch, draw_leaf, leaf_batch, leaf_code, leaf_colours, leaf_polygons,
                     leaf_structure, random_walk_branch, shade_leaves)
from .params import FAMILIES, sample_params

MIN_VISIBLE_PX = 12
_MAX_LEAVES_PER_MPX = 11000  # speed cap: leaves per 1e6 pixels
# Paint, tape and flagging ribbon in an orchard, BGR in [0, 1]: red, orange, yellow, blue, pink, white, black.
_MARKER_COLOURS = np.array([[0.12, 0.1, 0.72], [0.1, 0.38, 0.88], [0.12, 0.72, 0.85], [0.65, 0.38, 0.12],
                            [0.55, 0.42, 0.85], [0.88, 0.88, 0.88], [0.1, 0.1, 0.1]], np.float32)
_MARKER_WEIGHTS = (0.4, 0.15, 0.1, 0.1, 0.1, 0.1, 0.05)
# Dry, yellowed and autumn-red leaves, BGR albedo.
_DRY_LEAF_PALETTE = np.array([[0.16, 0.34, 0.5], [0.14, 0.62, 0.74], [0.14, 0.2, 0.5], [0.3, 0.45, 0.55]], np.float32)


@dataclass
class Scene:
    image: np.ndarray
    instances: Instances
    params: dict
    # With ``render(..., depth=True)`` (see depth.py): clean depth (float32 metres, 0 = none) aligned to
    # ``image``, the pinhole intrinsics, and per labelled apple (in the instances' order) its 3D truth.
    depth: np.ndarray | None = None
    intrinsics: dict | None = None
    apples_3d: list[dict] | None = None


@dataclass
class World:
    """Everything drawn for one frame (or one drive-by panorama) before camera effects."""

    image: np.ndarray  # uint8 BGR
    idbuf: np.ndarray  # int32: -1 sky, 0 background / occluder, k > 0 apple k (leaf codes <= -2 exist only while drawing)
    sky: np.ndarray  # float32 in [0, 1]: how much of the pixel is open sky
    apples: list[dict]
    stats: dict
    depth: depth_mod.DepthLayer | None = None  # with build_world(..., depth=True): occluder depth, apple areas


def scene_rng(prompt: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32((prompt or "").encode())])


def _check(size, disable) -> tuple[int, int, frozenset]:
    w, h = int(size[0]), int(size[1])
    if w < 16 or h < 16:
        raise ValueError(f"render size must be at least 16x16, got {size}")
    unknown = set(disable) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown randomisation families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    return w, h, frozenset(disable)


def render(prompt: str, seed: int, size: tuple[int, int] = (640, 640), disable: frozenset[str] = frozenset(),
           depth: bool = False) -> Scene:
    """One synthetic orchard image with exact modal masks of every visible apple; with ``depth``, also its
    clean depth and each labelled apple's 3D ground truth (the image is the same either way)."""
    w, h, disable = _check(size, disable)
    rng = scene_rng(prompt, seed)
    prm = sample_params(prompt, rng, (w, h), disable)
    world = build_world(rng, prm, (w, h), depth=depth)
    image = camera.finish(rng, world.image, world.sky, prm)
    instances = instances_from_idbuf(world.idbuf, len(world.apples))
    prm.update(world.stats)
    prm["apples_labelled"] = int(len(instances))
    scene = Scene(image=image, instances=instances, params=prm)
    if depth:
        scene.intrinsics = depth_mod.intrinsics(prm["focal_px"], w, h)
        spheres = apple_spheres(world, scene.intrinsics, 0.0, 0.0)
        scene.depth = depth_mod.frame_depth(world.depth.zbuf, world.idbuf, spheres, scene.intrinsics)
        truth = apple_truth(world, world.idbuf, spheres, instances.meta.get("apple_ids", []))
        scene.apples_3d = [{"label": i, **t} for i, t in enumerate(truth)]
    return scene


def apple_spheres(world: World, intr: dict, shift_x: float, shift_y: float) -> dict[int, tuple[np.ndarray, float]]:
    """Apple id -> (centre, radius) in the camera ``intr`` that sees the world shifted by (shift_x, shift_y) pixels."""
    px0, py0 = intr["cx"] + 0.5 - shift_x, intr["cy"] + 0.5 - shift_y  # principal point, renderer coordinates
    return {k + 1: depth_mod.apple_sphere(a, intr["fx"], a["cx"] - px0, a["cy"] - py0) for k, a in enumerate(world.apples)}


def apple_truth(world: World, idbuf: np.ndarray, spheres: dict, apple_ids: list[int]) -> list[dict]:
    """3D ground truth of the apples ``apple_ids`` in the view whose id-buffer is ``idbuf``: centre (metres,
    camera frame), diameter (mm) and the share of its whole outline that view shows (occlusion and frame cut)."""
    counts = np.bincount(idbuf[idbuf > 0].ravel(), minlength=len(world.apples) + 1)
    out = []
    for k in apple_ids:
        centre, radius = spheres[k]
        full = world.depth.full_area.get(k, 0)
        out.append({"center_m": [round(float(c), 6) for c in centre], "diameter_mm": round(2000.0 * radius, 3),
                    "visible_fraction": round(min(1.0, float(counts[k]) / full), 4) if full else 0.0})
    return out


def instances_from_idbuf(idbuf: np.ndarray, n_apples: int, min_area: int = MIN_VISIBLE_PX) -> Instances:
    h, w = idbuf.shape
    counts = np.bincount(idbuf[idbuf > 0].ravel(), minlength=n_apples + 1)
    keep = [k for k in range(1, n_apples + 1) if counts[k] >= min_area]
    if not keep:
        return Instances.empty((h, w))
    masks = np.stack([idbuf == k for k in keep])
    inst = Instances.from_masks(masks, image_size=(h, w))
    inst.meta["apple_ids"] = keep
    return inst


# ------------------------------------------------------------------------------------------------
# Scene layout: one builder per layer
# ------------------------------------------------------------------------------------------------
def build_world(rng: np.random.Generator, prm: dict, size: tuple[int, int], depth: bool = False) -> World:
    """Lay out one frame layer by layer, then draw it back to front (with ``depth``, a depth buffer too).

    The builders run in this order because they share ``rng``: the same seed then gives the same
    branches, leaves, apples and clutter. Distractors draw from their own stream (``extra``).
    The depth buffer draws nothing from ``rng``: the image is the same with or without it.
    """
    lay = _Layout(rng, size[0], size[1], prm["focal_px"], prm["distance_m"])
    image, sky, idbuf, ground = _sky_and_rows(lay, prm)
    layer = depth_mod.DepthLayer(depth_mod.background_depth(lay.h, lay.w, lay.distance, ground), lay.focal) if depth else None
    lay.extra = rng.spawn(1)[0]  # distractors draw from their own stream: the rest of a seed's scene stays the same
    _branches(lay, prm)
    _canopy_behind(lay, prm)
    apples, front_leaf_ratio, front_twigs = _fruit(lay, prm)  # with the canopy in front of each apple
    clutter = _clutter(lay, prm)
    leaves = _leaf_batch(lay, prm)
    image = _draw_back_to_front(lay, prm, image, idbuf, leaves, apples, clutter, layer)
    stats = dict(apples_drawn=len(apples), leaves_drawn=0 if leaves is None else len(leaves["x"]), branches_drawn=len(lay.branches),
                 front_leaves=len(front_leaf_ratio), front_leaf_to_apple=float(np.median(front_leaf_ratio)) if front_leaf_ratio else 0.0,
                 front_twigs=front_twigs, clutter_drawn=len(clutter))
    return World(image=image, idbuf=idbuf, sky=np.where(idbuf == -1, sky, 0).astype(np.float32), apples=apples, stats=stats,
                 depth=layer)


@dataclass
class _Layout:
    """The camera and depth range of one frame, and the branches and leaves the builders have placed so far.

    Depth z is in metres from the camera; ``ppm(z)`` is pixels per metre at that depth, so leaves, apples
    and branches keep their real size ratios at every distance.
    """

    rng: np.random.Generator
    w: int
    h: int
    focal: float  # pixels
    distance: float  # metres, camera to the row
    extra: np.random.Generator | None = None  # the distractors' own stream
    bark_choice: int = 0  # one bark colour for the whole tree
    branches: list = field(default_factory=list)  # (z, points, bark)
    # One array per leaf cluster; concatenated into one leaf batch before drawing.
    leaf_x: list = field(default_factory=list)
    leaf_y: list = field(default_factory=list)
    leaf_len: list = field(default_factory=list)
    leaf_ang: list = field(default_factory=list)
    leaf_z: list = field(default_factory=list)
    leaf_area: float = 0.0  # rough pixel area of the leaves placed so far
    z_front: float = field(init=False)  # the nearest apples and leaves
    z_back: float = field(init=False)
    span: float = field(init=False)

    def __post_init__(self):
        self.z_front = max(0.1, self.distance * 0.75 - 0.08)
        self.z_back = self.distance * 1.3 + 0.35
        self.span = self.z_back - self.z_front

    def ppm(self, z):  # pixels per metre at depth z
        return self.focal / np.maximum(z, 0.05)

    def leaf_cap(self, leaf_density: float) -> int:
        return int(_MAX_LEAVES_PER_MPX * self.w * self.h / 1e6 * min(1.0, leaf_density))

    def n_leaves(self) -> int:
        return sum(len(a) for a in self.leaf_x)

    def add_branch(self, z, start, direction, length, width, depth=0) -> None:
        """A random-walk branch at depth z and (above depth 2) its side shoots, recursively."""
        rng = self.rng
        pts = random_walk_branch(rng, start, direction, length, width, step_px=max(3.0, self.ppm(z) * 0.04))
        bark = _BARK_PALETTE[self.bark_choice] * np.exp(rng.normal(0, 0.08, 3))
        self.branches.append((float(z), pts, bark.astype(np.float32)))
        if depth < 2:
            for _ in range(int(rng.integers(0, 4 - depth))):
                k = int(rng.integers(len(pts) // 4, max(len(pts) // 4 + 1, len(pts) - 1)))
                self.add_branch(z + rng.normal(0, 0.05), pts[k, :2], direction + rng.choice([-1, 1]) * rng.uniform(0.5, 1.3),
                                length * rng.uniform(0.3, 0.6), max(1.0, pts[k, 2] * 0.6), depth + 1)

    def add_cluster(self, cx, cy, z, n, spread, length_m=(0.075, 0.14)) -> np.ndarray:
        """A rosette of n leaves around (cx, cy) at depth z; returns their lengths in pixels."""
        rng = self.rng
        scale = self.ppm(z)
        base = rng.uniform(0, 2 * math.pi)
        angs = base + np.linspace(0, spread, n) + rng.normal(0, 0.35, n)
        lens = scale * rng.uniform(*length_m, n)
        self.leaf_x.append(cx + np.cos(angs) * lens * 0.55)
        self.leaf_y.append(cy + np.sin(angs) * lens * 0.55)
        self.leaf_len.append(lens)
        self.leaf_ang.append(angs)
        self.leaf_z.append(z + rng.normal(0, 0.03, n))
        self.leaf_area += float((lens**2).sum() * 0.2)
        return lens


def _sky_and_rows(lay: _Layout, prm: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Sky, ground and the blurred neighbouring rows: (image, soft sky mask, id-buffer with -1 on open sky, ground mask)."""
    image, sky, ground = background(lay.rng, prm, prm, (lay.w, lay.h))
    return image, sky, np.where(sky > 0.5, -1, 0).astype(np.int32), ground


def _branches(lay: _Layout, prm: dict) -> None:
    """The trunk (if any) and the limbs, with their side shoots, spread through the canopy's depth."""
    rng, w, h = lay.rng, lay.w, lay.h
    view_m = max(w, h) / lay.focal * lay.distance
    n_limbs = int(np.clip(round(rng.uniform(1.0, 2.5) * view_m / 0.7), 1, 9))
    lay.bark_choice = rng.integers(len(_BARK_PALETTE))
    if prm["trunk"]:
        z = lay.distance * rng.uniform(1.0, 1.25)
        x = rng.uniform(0.1, 0.9) * w
        lay.add_branch(z, (x, h * 1.05), -math.pi / 2 + rng.normal(0, 0.12), h * 1.2, lay.ppm(z) * rng.uniform(0.05, 0.11), depth=1)
    for _ in range(n_limbs):
        z = lay.z_front + lay.span * rng.uniform(0.15, 1.0)
        if rng.random() < 0.6:  # limbs enter from the left/right edge, roughly horizontal (trellis)
            left = rng.random() < 0.5
            start = (-10.0 if left else w + 10.0, rng.uniform(0, h))
            direction = (0.0 if left else math.pi) + rng.normal(0, 0.45)
        else:
            start = (rng.uniform(0, w), rng.uniform(0, h))
            direction = rng.uniform(0, 2 * math.pi)
        lay.add_branch(z, start, direction, rng.uniform(0.5, 1.4) * max(w, h), lay.ppm(z) * rng.uniform(0.012, 0.035))


def _canopy_behind(lay: _Layout, prm: dict) -> None:
    """Leaves: rosettes along the branches, then free clusters until the canopy is full."""
    rng = lay.rng
    cap = lay.leaf_cap(prm["leaf_density"])
    target_area = prm["leaf_density"] * lay.w * lay.h * 1.5 * (1 - 0.6 * prm["sky_fraction"])
    for z, pts, _ in lay.branches:
        spacing = max(4.0, lay.ppm(z) * rng.uniform(0.05, 0.1))
        seg = np.hypot(*np.diff(pts[:, :2], axis=0).T)
        dist = np.concatenate([[0], np.cumsum(seg)])
        for s in np.arange(rng.uniform(0, spacing), dist[-1], spacing):
            if lay.leaf_area > target_area * 0.6:  # leave the rest of the canopy to the free clusters
                break
            k = int(np.searchsorted(dist, s))
            k = min(k, len(pts) - 1)
            lay.add_cluster(pts[k, 0] + rng.normal(0, 3), pts[k, 1] + rng.normal(0, 3), z + rng.normal(0, 0.04),
                            int(rng.integers(3, 8)), rng.uniform(2.5, 6.3))
    tries = 0
    while lay.leaf_area < target_area and lay.n_leaves() < cap and tries < 5000:
        tries += 1
        z = lay.z_front + lay.span * rng.random() ** 0.8
        lay.add_cluster(rng.uniform(-0.05, 1.05) * lay.w, rng.uniform(-0.05, 1.05) * lay.h, z, int(rng.integers(3, 9)), rng.uniform(2.5, 6.3))


def _fruit(lay: _Layout, prm: dict) -> tuple[list[dict], list[float], int]:
    """Apples, in clusters, each with the canopy in front of it (see ``_canopy_in_front``).

    Returns the apple specs, the length of each leaf hung in front of an apple / that apple's diameter,
    and how many twigs cross an apple.
    """
    apples: list[dict] = []
    front_leaf_ratio: list[float] = []
    front_twigs = 0
    if prm["no_apples"]:
        return apples, front_leaf_ratio, front_twigs
    rng, z_front, span = lay.rng, lay.z_front, lay.span
    n_target = _apple_count(lay, prm)
    q_lo, q_hi = {"none": (0.0, 0.5), "low": (0.0, 0.08), "partial": (0.02, 0.25), "heavy": (0.15, 0.45)}[prm["occlusion"]]
    branch_pts = np.concatenate([p[:, :2] for _, p, _ in lay.branches]) if lay.branches else None  # not the twigs added below
    while len(apples) < n_target:
        cluster = int(min(n_target - len(apples), rng.choice([1, 2, 3, 4, 5], p=[0.4, 0.27, 0.17, 0.1, 0.06])
                          + (prm["density"] == "many")))
        z0 = z_front + span * rng.uniform(q_lo, q_hi)
        r0 = lay.ppm(z0) * rng.normal(0.078, 0.008) / 2
        cx, cy = _cluster_centre(lay, prm, r0, branch_pts)
        for k in range(cluster):
            ang = rng.uniform(0, 2 * math.pi) if k else 0.0
            off = 0.0 if k == 0 else r0 * rng.uniform(1.5, 2.0)
            z = z0 + rng.normal(0, 0.03) if k else z0
            r = lay.ppm(z) * rng.normal(0.078, 0.008) / 2
            spec = apple_mod.apple_spec(rng, prm, cx + math.cos(ang) * off, cy + math.sin(ang) * off * 0.8, max(r, 2.0), z)
            # Apples deeper in the canopy are more often in the shade of the leaves above them.
            spec["sun_scale"] = 1.0 if rng.random() > 0.15 + 0.5 * (z - z_front) / span else float(rng.uniform(0.0, 0.4))
            apples.append(spec)
            leaf_ratio, twigs = _canopy_in_front(lay, prm, spec["cx"], spec["cy"], r, z)
            front_leaf_ratio += leaf_ratio
            front_twigs += twigs
    return apples, front_leaf_ratio, front_twigs


def _apple_count(lay: _Layout, prm: dict) -> int:
    # Density is how many apples are in view, not apples per square metre: were the count to grow
    # as apples shrink with distance, far views (dozens of specks each) would make up most of the
    # training instances and close, well-resolved apples would be rare. Only the frame's area
    # limits the count (few large apples fit); a drive-by panorama holds several frames' worth.
    views = lay.w * lay.h / float(prm["size"][0] * prm["size"][1])
    lo, hi = {"few": (1, 6), "normal": (6, 20), "many": (16, 45)}[prm["density"]]
    fits = 0.35 * lay.w * lay.h / prm["apple_px_at_distance"] ** 2
    return max(1, int(round(min(lay.rng.integers(lo, hi + 1) * views, fits))))


def _cluster_centre(lay: _Layout, prm: dict, r0: float, branch_pts: np.ndarray | None) -> tuple[float, float]:
    """Where an apple cluster hangs: cut by the frame's edge (border_cut), just below a branch, or anywhere."""
    rng, w, h = lay.rng, lay.w, lay.h
    if prm["border_cut"] and rng.random() < 0.3:
        edge = rng.integers(4)
        t = rng.uniform(0, 1)
        cx, cy = [(t * w, 0), (t * w, h), (0, t * h), (w, t * h)][edge]
        return cx + rng.normal(0, r0 * 0.5), cy + rng.normal(0, r0 * 0.5)
    if branch_pts is not None and rng.random() < 0.7:
        bx, by = branch_pts[rng.integers(len(branch_pts))]
        return bx + rng.normal(0, r0 * 0.5), by + r0 * rng.uniform(0.8, 1.6)
    return rng.uniform(0, w), rng.uniform(0, h)


def _canopy_in_front(lay: _Layout, prm: dict, ax: float, ay: float, r: float, z: float) -> tuple[list[float], int]:
    """Spur leaves and maybe a twig in front of the apple at (ax, ay), radius r, depth z.

    Returns each leaf's length / the apple's diameter, and the number of twigs (0 or 1).
    """
    # What hangs right in front of this apple (the main source of partial occlusion): the
    # leaves of its own fruiting spur, a hand's width away at most and mostly no longer than
    # the fruit is wide, so they cut several bites out of it rather than hide half of it
    # behind one big leaf; and now and then the twig it hangs from, crossing it.
    rng = lay.rng
    leaf_ratio, twigs = [], 0
    if rng.random() < prm["front_leaf_fraction"] * 1.6:
        lens = lay.add_cluster(ax + rng.normal(0, r), ay + rng.normal(0, r) - r * 0.3, z - rng.uniform(0.01, 0.06),
                               int(rng.integers(2, 7)), rng.uniform(1.5, 5), length_m=(0.04, 0.09))
        leaf_ratio = list(lens / (2 * r))
    if rng.random() < prm["front_leaf_fraction"] * 0.6:
        zt = z - rng.uniform(0.01, 0.05)
        ang = rng.uniform(0, 2 * math.pi)
        start = (ax - math.cos(ang) * r * rng.uniform(1.2, 2.5), ay - math.sin(ang) * r * rng.uniform(1.2, 2.5))
        lay.add_branch(zt, start, ang, r * rng.uniform(3, 6), max(1.0, lay.ppm(zt) * rng.uniform(0.004, 0.01)), depth=2)
        twigs = 1
    return leaf_ratio, twigs


def _clutter(lay: _Layout, prm: dict) -> list[tuple]:
    """Clutter: posts, striped poles, painted posts, flagging tape, wires, drip hose, as (z, kind, payload)."""
    return _posts(lay, prm) + _tapes(lay, prm) + _wires(lay, prm)


def _posts(lay: _Layout, prm: dict) -> list[tuple]:
    rng, extra, d, w, h = lay.rng, lay.extra, lay.distance, lay.w, lay.h
    posts = []
    for _ in range(prm["posts"]):
        z = d * rng.uniform(0.9, 1.5)
        post = dict(x=rng.uniform(0, w), width=lay.ppm(z) * rng.uniform(0.06, 0.12), lean=rng.normal(0, 0.04),
                    colour=rng.choice([[0.38, 0.44, 0.5], [0.62, 0.64, 0.66], [0.28, 0.32, 0.36]]).tolist())
        post["bands"] = _random_bands(extra, h, lay.ppm(z)) if extra.random() < prm["band_chance"] else []
        posts.append((z, "post", post))
    for _ in range(prm["poles"]):  # red/white striped pole: a classic false-positive trap
        z = d * rng.uniform(0.8, 1.3)
        x, width, lean = rng.uniform(0, w), lay.ppm(z) * rng.uniform(0.03, 0.05), rng.normal(0, 0.03)
        stripe = max(4.0, lay.ppm(z) * rng.uniform(0.1, 0.25))
        bands = [[h - (k + 1) * stripe, h - k * stripe, _MARKER_COLOURS[0].tolist()] for k in range(1, int(h / stripe) + 2, 2)]
        posts.append((z, "post", dict(x=x, width=width, lean=lean, colour=[0.9, 0.9, 0.9], bands=bands)))
    for _ in range(prm["banded_posts"]):  # white, grey or wooden posts marked with paint or tape
        z = d * extra.uniform(0.7, 1.5)
        colour = extra.choice([[0.84, 0.86, 0.87], [0.62, 0.64, 0.66], [0.3, 0.42, 0.52]], p=[0.5, 0.25, 0.25])
        posts.append((z, "post", dict(x=extra.uniform(0, w), width=lay.ppm(z) * extra.uniform(0.04, 0.12), lean=extra.normal(0, 0.04),
                                      colour=(colour * np.exp(extra.normal(0, 0.05, 3))).tolist(), bands=_random_bands(extra, h, lay.ppm(z)))))
    return posts


def _tapes(lay: _Layout, prm: dict) -> list[tuple]:
    """Flagging tape tied to a branch, hanging down."""
    extra, tapes = lay.extra, []
    for _ in range(prm["tapes"] if lay.branches else 0):
        z, pts, _ = lay.branches[int(extra.integers(len(lay.branches)))]
        x, y = pts[int(extra.integers(len(pts))), :2]
        length, n = lay.ppm(z) * extra.uniform(0.08, 0.35), 8
        ang = math.pi / 2 + extra.normal(0, 0.5) + np.cumsum(extra.normal(0, 0.15, n))
        step = length / n
        tape = np.concatenate([[[x, y]], [x, y] + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * step, 0)])
        colour = _marker_colour(extra)
        tapes.append((z - 0.02, "tape", dict(points=tape, width=max(1, int(round(lay.ppm(z) * extra.uniform(0.012, 0.035)))),
                                             colour=colour.tolist(), twist=extra.uniform(0.3, 1.0, n).tolist())))
    return tapes


def _wires(lay: _Layout, prm: dict) -> list[tuple]:
    """Trellis wires and the drip hose near the ground."""
    rng, d, h, wires = lay.rng, lay.distance, lay.h, []
    for _ in range(prm["wires"]):
        z = d * rng.uniform(0.85, 1.4)
        wires.append((z, "wire", dict(y0=rng.uniform(0, h), y1=rng.uniform(0, h), sag=rng.uniform(0, 0.05) * h,
                                      width=max(1, int(round(lay.ppm(z) * 0.003))))))
    if prm["hose"]:
        z = d * rng.uniform(1.0, 1.4)
        wires.append((z, "wire", dict(y0=rng.uniform(0.7, 1.0) * h, y1=rng.uniform(0.7, 1.0) * h, sag=0.0,
                                      width=max(2, int(round(lay.ppm(z) * 0.016))), colour=[0.05, 0.05, 0.05])))
    return wires


def _leaf_batch(lay: _Layout, prm: dict) -> dict | None:
    """Shapes and materials of every leaf placed (None if there are none), at most ``leaf_cap`` of them."""
    if not lay.leaf_x:
        return None
    rng, extra, cap = lay.rng, lay.extra, lay.leaf_cap(prm["leaf_density"])
    leaves = leaf_batch(rng, np.concatenate(lay.leaf_x), np.concatenate(lay.leaf_y), np.concatenate(lay.leaf_len),
                        np.concatenate(lay.leaf_ang), np.concatenate(lay.leaf_z), yellow=float(rng.uniform(0.05, 0.4)))
    if len(leaves["x"]) > cap:  # keep the ones nearest the camera
        order = np.argsort(leaves["z"])[:cap]
        leaves = {k: v[order] for k, v in leaves.items()}
    dry = extra.random(len(leaves["x"])) < prm["dry_leaf_fraction"]
    if dry.any():  # at harvest some leaves have yellowed, browned or turned red
        pick = extra.integers(len(_DRY_LEAF_PALETTE), size=int(dry.sum()))
        leaves["albedo"][dry] = _DRY_LEAF_PALETTE[pick] * np.exp(extra.normal(0, 0.1, (int(dry.sum()), 3))).astype(np.float32)
    return leaves


def _brightness(prm: dict, z):
    """Light reaching depth z: a night flash falls off with the square of the distance, daylight does not."""
    if prm["light"] == "night_flash":
        return np.clip((prm["distance_m"] / np.maximum(z, 0.05)) ** 2, 0.02, 1.8)
    return np.ones_like(np.asarray(z, np.float32))


def _depth_order(leaves: dict | None, branches: list, clutter: list, apples: list[dict], prm: dict) -> list[tuple]:
    """(z, kind, payload) of everything to draw, farthest first."""
    items = [(float(z), "leaf", i) for i, z in enumerate(leaves["z"])] if leaves is not None else []
    items += [(z, "branch", i) for i, (z, _, _) in enumerate(branches)]
    items += [(z, kind, payload) for z, kind, payload in clutter]
    apple_shift = -1000.0 if prm["occlusion"] == "none" else 0.0  # unoccluded: apples go in front of everything
    items += [(a["z"] + apple_shift, "apple", i) for i, a in enumerate(apples)]
    items.sort(key=lambda it: -it[0])
    return items


def _draw_back_to_front(lay: _Layout, prm: dict, image: np.ndarray, idbuf: np.ndarray, leaves: dict | None,
                        apples: list[dict], clutter: list, layer: depth_mod.DepthLayer | None = None) -> np.ndarray:
    """Draw everything far to near into ``image`` (returned: the depth-of-field blur replaces it), ``idbuf``
    and, if given, the depth ``layer``."""
    zbuf = None if layer is None else layer.zbuf
    n_leaves = 0 if leaves is None else len(leaves["x"])
    if n_leaves:
        depth_frac = np.clip((leaves["z"] - lay.z_front) / lay.span, 0, 1)
        poly_a, poly_b, ribs = leaf_polygons(leaves)
        colours = leaf_colours(leaves, prm, depth_frac, _brightness(prm, leaves["z"]).astype(np.float32))
        draw_rib = leaves["length"] > 22
        structure = leaf_structure(lay.rng.spawn(1)[0], n_leaves)  # own stream: the rest of a seed's scene stays the same
        in_focus = np.ones(n_leaves, np.float32)
    # Shadows fall away from the sun, further the deeper the gap behind the leaf (camera frame: x right, y down).
    lx, ly, lz = prm["light_dir"]
    shadow_dir = np.array([-lx, -ly], np.float32) / max(lz, 0.35) * prm["shadow_gap_m"]
    dof_z = lay.distance * 1.25 + 0.2
    blurred = prm["background_blur_px"] <= 1.0
    for z, kind, payload in _depth_order(leaves, lay.branches, clutter, apples, prm):
        if not blurred and z < dof_z:
            image = cv2.GaussianBlur(image, (0, 0), min(2.0, 0.35 * prm["background_blur_px"]))
            blurred = True
            if n_leaves:  # the leaves drawn so far are out of focus: no sharp structure on them
                in_focus[leaves["z"] >= z] = 0
        if kind == "leaf":
            i = payload
            if prm["shadow_strength"] > 0:
                offset = np.round(shadow_dir * lay.ppm(z)).astype(np.int32)
                cast_shadow(image, idbuf, (poly_a[i], poly_b[i]), (int(offset[0]), int(offset[1])), 1 - prm["shadow_strength"])
            draw_leaf(image, idbuf, poly_a[i], poly_b[i], ribs[i], colours[i], bool(draw_rib[i]), leaf_code(i))
        elif kind == "apple":
            spec = apples[payload]
            apple_mod.draw_apple(image, idbuf, spec, payload + 1, dict(prm, sun=prm["sun"] * spec["sun_scale"]), float(_brightness(prm, spec["z"])))
            if layer is not None:
                layer.apple(idbuf, spec, payload + 1)
        elif kind == "branch":
            _, pts, bark = lay.branches[payload]
            draw_branch(image, idbuf, pts, bark, prm, float(_brightness(prm, z)), zbuf, z)
        else:
            _draw_clutter(image, idbuf, kind, payload, prm, float(_brightness(prm, z)), lay.h, lay.w, zbuf, z)
    if n_leaves:
        shade_leaves(image, idbuf, leaves, structure, in_focus, zbuf)
    if layer is not None:
        layer.settle(idbuf)
    return image


def _marker_colour(rng: np.random.Generator) -> np.ndarray:
    """A paint, tape or ribbon colour (BGR in [0, 1]), a little off its nominal shade."""
    return _MARKER_COLOURS[rng.choice(len(_MARKER_COLOURS), p=_MARKER_WEIGHTS)] * np.exp(rng.normal(0, 0.08, 3))


def _random_bands(rng: np.random.Generator, h: int, px_per_m: float) -> list[list]:
    """1-4 painted or taped bands on a post: [top, bottom, BGR colour], image rows."""
    bands = []
    for _ in range(int(rng.integers(1, 5))):
        top = rng.uniform(-0.1, 1.0) * h
        colour = _marker_colour(rng)
        bands.append([float(top), float(top + max(3.0, px_per_m * rng.uniform(0.04, 0.3))), colour.tolist()])
    return bands


def _draw_clutter(image, idbuf, kind, p, light, brightness, h, w, zbuf=None, z=0.0) -> None:
    """Draw one post, tape or wire into ``image`` and ``idbuf`` (and its depth z into ``zbuf``, if given)."""
    marks = [idbuf] if zbuf is None else [idbuf, zbuf]
    values = (0, float(z))
    amb, sun = light["ambient"], light["sun"]
    tint = np.array(light["light_bgr"], np.float32)
    if kind == "post":
        x0, x1 = p["x"], p["x"] + p["lean"] * h
        half = p["width"] / 2
        quad = np.array([[x0 - half, h], [x0 + half, h], [x1 + half, 0], [x1 - half, 0]], np.float32)
        for buf, value in zip(marks, values):
            cv2.fillPoly(buf, [quad.round().astype(np.int32)], value)
        for top, bottom, colour in [[0.0, float(h), p["colour"]], *p.get("bands", [])]:
            # Three vertical strips, darker on the side away from the light: the post reads as round.
            base = np.array(colour, np.float32) * tint * brightness
            for k, shade in enumerate((amb + 0.2 * sun, amb + 0.6 * sun, amb + 0.95 * sun)):
                a, b = -half + k * p["width"] / 3, -half + (k + 1) * p["width"] / 3
                xt, xb = x0 + (x1 - x0) * (1 - top / h), x0 + (x1 - x0) * (1 - bottom / h)
                q = np.array([[xb + a, bottom], [xb + b, bottom], [xt + b, top], [xt + a, top]], np.float32).round().astype(np.int32)
                cv2.fillPoly(image, [q], np.clip(base * shade * 255, 0, 255).tolist(), cv2.LINE_AA)
    elif kind == "tape":  # a twisting ribbon: each piece catches the light differently
        pts = np.round(p["points"]).astype(np.int32)
        base = np.array(p["colour"], np.float32) * tint * brightness
        for k, twist in enumerate(p["twist"]):
            colour = np.clip(base * (amb + twist * sun) * 255, 0, 255).tolist()
            cv2.line(image, tuple(pts[k].tolist()), tuple(pts[k + 1].tolist()), colour, p["width"], cv2.LINE_AA)
            for buf, value in zip(marks, values):
                cv2.line(buf, tuple(pts[k].tolist()), tuple(pts[k + 1].tolist()), value, p["width"])
    else:  # wire / hose: a sagging curve across the frame
        xs = np.linspace(-5, w + 5, 24, dtype=np.float32)
        t = xs / w
        ys = p["y0"] + (p["y1"] - p["y0"]) * t + p["sag"] * 4 * t * (1 - t)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        colour = np.array(p.get("colour", [0.45, 0.45, 0.45]), np.float32) * (amb + 0.8 * sun) * brightness * 255
        cv2.polylines(image, [pts], False, np.clip(colour, 0, 255).tolist(), p["width"], cv2.LINE_AA)
        for buf, value in zip(marks, values):
            cv2.polylines(buf, [pts], False, value, p["width"])
