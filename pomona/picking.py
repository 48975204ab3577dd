"""Picking targets: each apple's 3D centre, diameter, picking point and approach from its mask and aligned depth.

Per apple, a sphere is fitted to two kinds of evidence at once:
- the valid depth pixels inside its (slightly eroded) mask, back-projected through the pinhole camera: the
  visible surface, which pins the apple's range;
- the rays through the part of its outline that is the apple's own edge (what lies just outside is farther
  away or unseen, not a leaf or an apple in front): each is tangent to the sphere, which pins its angular
  size to a fraction of a pixel where stereo depth is weakest (noise ~ z^2, holes along the rim).
Only the visible surface and the unhidden outline count, never the mask's width, so the diameter holds when
leaves hide part of the apple. Robust Gauss-Newton on the geometric residuals (Tukey weights per apple and
per kind), the radius held to a plausible apple range. An apple with fewer than ``MIN_POINTS`` valid depth
points, or whose fit explains too few of them, gets no 3D fields (NaN here, null in JSON): never a guess
presented as a measurement.

All apples of a frame are fitted together on padded (apples, points) arrays, so the cost is a few numpy
calls per iteration, not per apple. Pure numpy and OpenCV: the edge install stays lean (no torch, no scipy).
Camera frame as OpenCV: x right, y down, z forward, metres; pixel (u, v) is the centre of column u, row v.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pomona.mosaic import Mosaic, mosaics

DIAMETER_RANGE_MM = (40.0, 130.0)  # crab apples to the largest dessert apples; the fit's radius stays inside
PRIOR_DIAMETER_MM = 75.0  # starting guess only (a typical dessert apple)
MIN_POINTS = 30  # fewer valid depth points than this: no 3D fields
MAX_POINTS = 96  # points per apple used by the fit (evenly spread over the mask): bounds the cost per frame
ITERATIONS = 4  # Gauss-Newton steps; the first unweighted, the rest Tukey-weighted
ROBUST_STEPS = (1, 2)  # steps that re-estimate each apple's residual scale for the Tukey weights
MIN_INLIERS = 0.5  # a fit that keeps fewer of its points than this did not find the apple: no 3D fields
MAX_STEP_M = 0.03  # largest move of a centre or radius in one Gauss-Newton step
DEPTH_WINDOW_M = 0.08  # points this far from the apple's median depth are something else (a leaf, the row behind)
MAX_OUTLINE = 32  # outline points per apple (evenly spread along it)
OUTSIDE_PX = (3.0, 6.0)  # where the depth just outside an outline point is read (pixels outward)
IN_FRONT_M = 0.01  # something outside the outline nearer than the apple's median depth + this hides the apple there
OUTLINE_EXPECTILE = 0.9  # the sphere's silhouette is fitted to the upper side of the outline (see fit_spheres)
OUTLINE_FLOOR_PX = 0.3  # the outline's residual scale is at least this (pixel quantisation)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; ``width``/``height`` of the image they belong to, when known."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None

    def scaled(self, scale: float) -> "Intrinsics":
        """The same camera after the image was resized by ``scale`` (pixel centres kept aligned)."""
        if scale == 1.0:
            return self
        size = lambda v: None if v is None else int(round(v * scale))  # noqa: E731
        return Intrinsics(self.fx * scale, self.fy * scale, (self.cx + 0.5) * scale - 0.5, (self.cy + 0.5) * scale - 0.5,
                          size(self.width), size(self.height))

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) camera points -> (..., 2) pixel coordinates."""
        p = np.asarray(points, np.float64)
        return np.stack([self.fx * p[..., 0] / p[..., 2] + self.cx, self.fy * p[..., 1] / p[..., 2] + self.cy], -1)


@dataclass
class PickingTargets:
    """Per-apple 3D fields for N apples; NaN (null in JSON) where an apple had too little valid depth.

    center_m: (N, 3) sphere centre in the camera frame. diameter_mm: (N,). pick_point_m: (N, 3) the point of
    the fitted sphere nearest the camera on the ray to its centre. approach: (N, 3) unit vector from the camera
    toward the centre (the direction a gripper comes in along). visible_fraction: (N,) mask area over the area
    of the fitted sphere's projected outline. depth_points: (N,) valid depth points the fit used (inside the
    eroded mask, near the apple's median depth; at most MAX_POINTS, sampled evenly from larger apples).
    """

    center_m: np.ndarray
    diameter_mm: np.ndarray
    pick_point_m: np.ndarray
    approach: np.ndarray
    visible_fraction: np.ndarray
    depth_points: np.ndarray

    @classmethod
    def unknown(cls, n: int) -> "PickingTargets":
        nan3, nan = np.full((n, 3), np.nan), np.full(n, np.nan)
        return cls(nan3, nan.copy(), nan3.copy(), nan3.copy(), nan.copy(), np.zeros(n, np.int64))

    def __len__(self) -> int:
        return len(self.diameter_mm)

    def __getitem__(self, index) -> "PickingTargets":
        return PickingTargets(self.center_m[index], self.diameter_mm[index], self.pick_point_m[index],
                              self.approach[index], self.visible_fraction[index], self.depth_points[index])

    @property
    def distance_m(self) -> np.ndarray:
        """Camera to apple centre, metres."""
        return np.linalg.norm(self.center_m, axis=1)

    @property
    def known(self) -> np.ndarray:
        return np.isfinite(self.diameter_mm)

    def record(self, i: int) -> dict:
        """JSON-ready fields of apple ``i`` (null where unknown)."""
        if not self.known[i]:
            return {"center_m": None, "diameter_mm": None, "distance_m": None, "pick_point_m": None,
                    "approach": None, "visible_fraction": None, "depth_points": int(self.depth_points[i])}
        vec = lambda v, d: [round(float(x), d) for x in v]  # noqa: E731
        vis = self.visible_fraction[i]
        return {"center_m": vec(self.center_m[i], 4), "diameter_mm": round(float(self.diameter_mm[i]), 1),
                "distance_m": round(float(self.distance_m[i]), 4), "pick_point_m": vec(self.pick_point_m[i], 4),
                "approach": vec(self.approach[i], 4),
                "visible_fraction": round(float(vis), 3) if np.isfinite(vis) else None,
                "depth_points": int(self.depth_points[i])}


# --- gathering the depth points -----------------------------------------------------------------------


_KERNELS = {px: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)) for px in (1, 2)}
_NONE = np.zeros((0, 2), np.int32)


@dataclass
class _Samples:
    """What the fit reads of each apple, padded to fixed widths (0 / False = padding)."""

    u: np.ndarray  # (N, P) pixel column of each depth point
    v: np.ndarray
    z: np.ndarray  # (N, P) its depth, in the depth image's units
    ou: np.ndarray  # (N, T) outline points, half a pixel outward of the mask's boundary pixels
    ov: np.ndarray
    outline: np.ndarray  # (N, T) bool: a real outline point (not padding, not on the image's edge)
    beyond: np.ndarray  # (N, T, 2) depth just outside the outline (OUTSIDE_PX), 0 where invalid
    areas: np.ndarray  # (N,) mask area in pixels


def _eroded(mosaic: Mosaic) -> np.ndarray:
    """Every mask without its rim: depth at an object's outline mixes apple and background (flying pixels,
    stereo edge fattening), and a predicted mask's outline is its least certain part. Two pixels off, one off
    a window narrower than 24 pixels (a small apple would lose most of itself)."""
    eroded = cv2.erode(mosaic.image, _KERNELS[2], borderType=cv2.BORDER_CONSTANT, borderValue=0)
    small = mosaic.shape.min(1) < 24
    if small.any():
        keep = np.zeros(256, np.uint8)
        keep[np.flatnonzero(small) + 1] = np.flatnonzero(small) + 1
        thin = cv2.erode(mosaic.image, _KERNELS[1], borderType=cv2.BORDER_CONSTANT, borderValue=0)
        eroded = cv2.max(eroded, cv2.LUT(thin, keep))
    return eroded


def _spread(counts: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For groups of ``counts`` consecutive entries: (group, slot, index) of at most ``limit`` entries per
    group, evenly spread over it (not its first ones)."""
    take = np.minimum(counts, limit)
    group = np.repeat(np.arange(len(counts)), take)
    slot = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    n = counts[group]
    index = np.cumsum(counts)[group] - n + np.where(n > limit, (slot * n) // max(limit, 1), slot)
    return group, slot, index


def gather_points(instances, depth: np.ndarray, max_points: int = MAX_POINTS,
                  max_outline: int = MAX_OUTLINE) -> _Samples:
    """Each apple's valid depth points inside its eroded mask, and its outline with the depth just outside it.

    A large apple's depth points are taken on a regular pixel grid (every s-th row and column) so that about
    ``max_points`` remain: the fit's cost stays bounded and the points still cover the whole visible surface.
    """
    n = len(instances)
    out = _Samples(np.zeros((n, max_points)), np.zeros((n, max_points)), np.zeros((n, max_points)),
                   np.zeros((n, max_outline)), np.zeros((n, max_outline)), np.zeros((n, max_outline), bool),
                   np.zeros((n, max_outline, len(OUTSIDE_PX))), np.zeros(n, np.int64))
    for mosaic in mosaics(instances):  # all apples' masks in one image: one OpenCV call each, not one per apple
        out.areas[mosaic.index] = mosaic.area
        _surface_points(out, mosaic, depth, max_points)
        _outline_points(out, mosaic, max_outline)
    _outline_depth(out, depth)
    return out


def _surface_points(out: _Samples, mosaic: Mosaic, depth: np.ndarray, max_points: int) -> None:
    eroded = _eroded(mosaic)
    step = np.maximum(1, np.sqrt(mosaic.area / max_points).astype(np.int64))
    found = []
    # a strided view and one call per apple: the grid of each apple's own step (x, y on that grid, row by row)
    for (x, y), (h, w), s in zip(mosaic.at.tolist(), mosaic.shape.tolist(), step.tolist()):
        on = cv2.findNonZero(eroded[y:y + h:s, x:x + w:s])
        found.append(_NONE if on is None else on.reshape(-1, 2))
    per = np.array([len(f) for f in found])
    if not per.any():
        return
    k = np.repeat(np.arange(len(per)), per)
    grid = np.concatenate(found) * step[k][:, None] + mosaic.origin[k]
    u, v = grid[:, 0], grid[:, 1]
    z = depth[v, u]
    valid = z != 0
    per = np.bincount(k[valid], minlength=len(per))
    group, slot, index = _spread(per, max_points)
    rows = mosaic.index[group]
    out.u[rows, slot], out.v[rows, slot], out.z[rows, slot] = u[valid][index], v[valid][index], z[valid][index]


def _outline_points(out: _Samples, mosaic: Mosaic, max_outline: int) -> None:
    points, k = mosaic.boundary()  # each apple's contours together, each contour's points in order
    if not len(k):
        return
    group, slot, index = _spread(np.bincount(k, minlength=len(mosaic.index)), max_outline)
    rows = mosaic.index[group]
    out.ou[rows, slot], out.ov[rows, slot] = points[index, 0], points[index, 1]
    out.outline[rows, slot] = True


def _outline_depth(out: _Samples, depth: np.ndarray) -> None:
    """Outline points (boundary pixels in ``out.ou``, ``out.ov``) moved half a pixel outward (a boundary pixel's
    centre lies inside the silhouette), and the depth a few pixels further out (outward = away from the
    outline's mean), for all apples at once. Points on the frame's edge are not the apple's outline: the frame
    cut it there."""
    h, w = depth.shape[:2]
    px, py = out.ou, out.ov
    k = np.maximum(out.outline.sum(1, keepdims=True), 1)
    dx = px - (px * out.outline).sum(1, keepdims=True) / k
    dy = py - (py * out.outline).sum(1, keepdims=True) / k
    norm = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-9)
    dx, dy = dx / norm, dy / norm
    out.ou, out.ov = px + 0.5 * dx, py + 0.5 * dy
    out.outline &= (px > 0) & (py > 0) & (px < w - 1) & (py < h - 1)
    steps = np.asarray(OUTSIDE_PX)
    sx = np.clip(np.rint(px[..., None] + dx[..., None] * steps), 0, w - 1).astype(np.intp)
    sy = np.clip(np.rint(py[..., None] + dy[..., None] * steps), 0, h - 1).astype(np.intp)
    out.beyond = np.where(out.outline[..., None], depth[sy, sx], 0)


# --- the fit ------------------------------------------------------------------------------------------


def _row_median(values: np.ndarray, valid: np.ndarray, empty: float = np.nan) -> np.ndarray:
    """(Lower) median of each row over its valid entries (``empty`` for a row without any)."""
    if values.shape[1] == 0:
        return np.full(len(values), empty)
    ordered = np.where(valid, values, np.inf)
    ordered.sort(axis=1)
    k = np.count_nonzero(valid, axis=1)
    mid = ordered[np.arange(len(ordered)), np.maximum((k - 1) // 2, 0)]
    return np.where(k > 0, mid, empty)


def fit_spheres(points: np.ndarray, valid: np.ndarray, rays: np.ndarray | None = None,
                ray_valid: np.ndarray | None = None, radius_range: tuple[float, float] | None = None,
                iterations: int = ITERATIONS, outline_floor: np.ndarray | float = 0.0):
    """Robust sphere per apple from its surface points and, where known, its outline rays; all apples at once.

    points: (3, N, P) surface points with ``valid`` (N, P). rays: (3, N, T) unit rays through the apple's own
    outline (``ray_valid`` (N, T)), each tangent to the sphere: its distance from the centre is the radius.
    Depth alone pins the apple's range well but its size poorly (the noise grows with z^2 and the rim, where
    the size shows, is where stereo depth fails); the outline pins the angular size to a fraction of a pixel.

    Gauss-Newton on the geometric residuals (|p - c| - r for surface points, |c - (c.q) q| - r for rays),
    starting behind the mean surface point (a prior-sized apple). At ROBUST_STEPS each kind's scale is
    re-estimated per apple from its median absolute residual (outline not below ``outline_floor`` metres);
    from then on Tukey biweights over that scale reject leaves, stems, stray pixels and outline points that
    are not the apple's, and each kind counts by its inverse variance. Each step moves at most MAX_STEP_M,
    the radius stays in ``radius_range`` (metres). Returns centres (N, 3), radii (N,) and the fraction of
    each apple's surface points the last weights kept (a fit that explains few of them did not converge).
    """
    lo, hi = radius_range or (DIAMETER_RANGE_MM[0] / 2000, DIAMETER_RANGE_MM[1] / 2000)
    n, p = valid.shape
    if rays is None:
        rays, ray_valid = np.zeros((3, n, 0)), np.zeros((n, 0), bool)
    # float32 arithmetic (a micron at a metre, far below any depth sensor's noise) at half the memory traffic;
    # only the 4x4 normal equations are solved in float64
    points, rays = points.astype(np.float32, copy=False), rays.astype(np.float32, copy=False)
    every = np.concatenate([valid, ray_valid], 1)
    w = every.astype(np.float32)  # plain least squares until the first robust step
    centre, radius = _start(points, w[:, :p])
    jac = np.empty((4, n, every.shape[1]), np.float32)  # d residual / d (cx, cy, cz, r) for every point and ray
    jac[3] = -1.0
    every_pt = np.concatenate([points, np.zeros_like(rays)], 2)  # surface points, then each ray's foot
    robust = None
    for step in range(iterations):
        diff, dist, res = _residuals(every_pt, rays, centre, radius, p)
        if step in ROBUST_STEPS:
            robust = _Robust.estimate(res, w > 0, every, p, outline_floor)
        w = every.astype(np.float32) if robust is None else robust.weights(res)
        np.multiply(diff, -1.0 / np.maximum(dist, 1e-9), out=jac[:3])
        # an apple is rarely a sphere: its outline is the sphere's, or inside it (an oval, a flat shoulder), so
        # rays outside the sphere count OUTLINE_EXPECTILE, rays inside 1 - OUTLINE_EXPECTILE (an upper expectile)
        w[:, p:] *= np.where(res[:, p:] > 0, 2 * OUTLINE_EXPECTILE, 2 - 2 * OUTLINE_EXPECTILE)
        delta = _gauss_newton_step(jac, w, res)
        centre = (centre + delta[:, :3]).astype(np.float32)
        radius = np.clip(radius + delta[:, 3], lo, hi).astype(np.float32)
    inliers = (w[:, :p] > 0).sum(1) / np.maximum(valid.sum(1), 1)
    return centre.astype(np.float64), radius.astype(np.float64), inliers


def _residuals(every_pt: np.ndarray, rays: np.ndarray, centre: np.ndarray, radius: np.ndarray, p: int):
    """Each ray's point nearest the centre (written after the ``p`` surface points of ``every_pt``), then every
    point's offset from the centre (3, N, M), its distance (N, M) and its residual, distance minus radius."""
    c = centre.T[:, :, None]
    np.multiply(rays, (rays * c).sum(0), out=every_pt[:, :, p:])
    diff = every_pt - c
    dist = np.sqrt((diff * diff).sum(0))
    return diff, dist, dist - radius[:, None]


def _start(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A prior-sized apple (PRIOR_DIAMETER_MM) just behind the mean of each apple's surface points."""
    mean = (points * weights).sum(2).T / np.maximum(weights.sum(1), 1)[:, None]
    radius = np.full(len(mean), PRIOR_DIAMETER_MM / 2000, np.float32)
    return mean + mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-9) * radius[:, None], radius


@dataclass
class _Robust:
    """Each kind's (surface, outline) residual centre and scale per apple, and the Tukey weights over them."""

    mid: np.ndarray  # (N, M) where each point's kind centres its residuals
    scale: np.ndarray  # (N, M) Tukey's cut-off: 4.685 sigma of the point's kind
    counted: np.ndarray  # (N, M) inverse variance of the point's kind (0 for padding)

    @classmethod
    def estimate(cls, res: np.ndarray, kept: np.ndarray, every: np.ndarray, p: int, outline_floor) -> "_Robust":
        """From the residuals of the points the previous weights kept: surface points are the first ``p``."""
        mid_s = _row_median(res[:, :p], kept[:, :p], 0.0)
        mid_o = _row_median(res[:, p:], kept[:, p:], 0.0)
        # residuals about their median: a fit still pulled by a leaf has the apple's points off zero
        # together, while the leaf's stand apart; the spread about zero would hide that
        s_surf = np.fmax(1.4826 * _row_median(np.abs(res[:, :p] - mid_s[:, None]), kept[:, :p]), 5e-4)
        s_out = np.fmax(1.4826 * _row_median(np.abs(res[:, p:] - mid_o[:, None]), kept[:, p:]),
                        np.maximum(outline_floor, 1e-5))
        sigma, mid = np.empty(res.shape, np.float32), np.empty(res.shape, np.float32)
        sigma[:, :p], sigma[:, p:] = s_surf[:, None], s_out[:, None]
        mid[:, :p], mid[:, p:] = mid_s[:, None], mid_o[:, None]
        return cls(mid, 4.685 * sigma, every / (sigma * sigma))

    def weights(self, res: np.ndarray) -> np.ndarray:
        t = np.minimum(np.abs(res - self.mid) / self.scale, 1.0)
        self.mid *= 0.5  # the fit follows the kept points: their offset shrinks
        t = 1 - t * t
        return t * t * self.counted  # Tukey's biweight over each kind's inverse variance


_RIDGE = 1e-9  # relative to the normal matrix's trace; an apple without points keeps its start
_EYE4 = np.eye(4)


def _gauss_newton_step(jac: np.ndarray, w: np.ndarray, res: np.ndarray) -> np.ndarray:
    """(N, 4) weighted least-squares step in (cx, cy, cz, r), at most MAX_STEP_M in each."""
    jw = (jac * w).transpose(1, 0, 2)
    lhs = np.matmul(jw, jac.transpose(1, 2, 0)).astype(np.float64)
    # a ridge keeps it solvable when the kept points do not pin all four unknowns (a sliver, a few outline
    # points): those move least
    lhs += (_RIDGE * (1.0 + np.trace(lhs, axis1=1, axis2=2)))[:, None, None] * _EYE4
    delta = np.linalg.solve(lhs, -np.matmul(jw, res[..., None]).astype(np.float64))[..., 0]
    # at most MAX_STEP_M per step: a cloud that barely constrains a sphere (a sliver) must not fling it away
    return np.clip(delta, -MAX_STEP_M, MAX_STEP_M, out=delta)


def projected_disc_area(centre: np.ndarray, radius: np.ndarray, K: Intrinsics) -> np.ndarray:
    """Area in pixels of each sphere's outline in the image (an ellipse off the optical axis).

    The outline is the cone of half-angle asin(r / |c|) around the centre's ray cut by the image plane:
    in normalised coordinates x^T A x + 2 b^T x + c <= 0 with A = cos^2(a) I - u u^T (2x2 block), whose
    area is pi (b^T A^-1 b - c) / sqrt(det A). NaN where the cone reaches behind the camera.
    """
    dist = np.linalg.norm(centre, axis=1)
    u = centre / dist[:, None]
    cos2 = 1 - np.minimum(radius / dist, 1.0) ** 2
    a11, a22, a12 = cos2 - u[:, 0] ** 2, cos2 - u[:, 1] ** 2, -u[:, 0] * u[:, 1]
    b1, b2 = -u[:, 0] * u[:, 2], -u[:, 1] * u[:, 2]
    c = cos2 - u[:, 2] ** 2
    det = a11 * a22 - a12 * a12
    with np.errstate(invalid="ignore", divide="ignore"):
        quad = (a22 * b1 * b1 - 2 * a12 * b1 * b2 + a11 * b2 * b2) / det
        area = np.pi * (quad - c) / np.sqrt(det) * K.fx * K.fy
    return np.where((det > 0) & (a11 > 0), area, np.nan)


def measure(instances, depth: np.ndarray, K: Intrinsics, depth_unit_m: float = 0.001,
            min_points: int = MIN_POINTS, max_points: int = MAX_POINTS) -> PickingTargets:
    """Picking targets for ``instances`` (with masks) from ``depth`` aligned to the same image.

    depth: (H, W) array in ``depth_unit_m`` metres per unit (uint16 millimetres by default), 0 = invalid.
    """
    n = len(instances)
    out = PickingTargets.unknown(n)
    if n == 0 or instances.masks is None:
        return out
    if depth.shape[:2] != tuple(instances.image_size):
        raise ValueError(f"depth is {depth.shape[1]}x{depth.shape[0]}, the image {instances.image_size[1]}x"
                         f"{instances.image_size[0]}")
    g = gather_points(instances, depth, max_points)
    z = g.z * depth_unit_m
    valid = z > 0
    med_z = _row_median(z, valid)
    valid &= np.abs(z - med_z[:, None]) <= DEPTH_WINDOW_M  # gross outliers out before the fit starts
    out.depth_points = valid.sum(1)
    ok = out.depth_points >= min(min_points, max_points)
    if not ok.any():
        return out
    # the apple's own outline: where what lies just outside it is farther (or unseen), not a leaf or apple in front
    beyond = g.beyond * depth_unit_m
    hidden = ((beyond > 0) & (beyond < (med_z + IN_FRONT_M)[:, None, None])).any(2)
    own = (g.outline & ~hidden)[ok]
    qx, qy = (g.ou[ok] - K.cx) / K.fx, (g.ov[ok] - K.cy) / K.fy
    qn = np.sqrt(qx * qx + qy * qy + 1)
    rays = np.stack([qx / qn, qy / qn, 1 / qn])
    z, valid = z[ok], valid[ok]
    points = np.stack([(g.u[ok] - K.cx) * (z / K.fx), (g.v[ok] - K.cy) * (z / K.fy), z])
    floor = OUTLINE_FLOOR_PX * med_z[ok] / np.sqrt(K.fx * K.fy)  # in metres at the apple
    centre, radius, inliers = fit_spheres(points, valid, rays, own, outline_floor=floor)
    lo, hi = DIAMETER_RANGE_MM[0] / 2000, DIAMETER_RANGE_MM[1] / 2000
    good = np.isfinite(centre).all(1) & np.isfinite(radius) & (centre[:, 2] > radius) & (inliers >= MIN_INLIERS)
    good &= (radius > lo * 1.0001) & (radius < hi * 0.9999)  # held at a bound of the range: not measured
    rows = np.flatnonzero(ok)[good]
    centre, radius = centre[good], radius[good]
    approach = centre / np.linalg.norm(centre, axis=1, keepdims=True)
    out.center_m[rows] = centre
    out.diameter_mm[rows] = radius * 2000
    out.approach[rows] = approach
    out.pick_point_m[rows] = centre - approach * radius[:, None]
    out.visible_fraction[rows] = np.clip(g.areas[rows] / projected_disc_area(centre, radius, K), 0.0, 1.0)
    return out
