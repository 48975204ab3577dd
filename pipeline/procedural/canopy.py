"""Leaves, branches, posts and the far background of an orchard row.

Leaves are pointed, slightly asymmetric polygons folded along a midrib: each half gets its own
brightness from the light direction, so a wall of them reads as sharp-edged foliage. Geometry and
colours are computed for all leaves at once (numpy); drawing is one cv2 call per leaf half. Once the
frame is drawn, ``shade_leaves`` shades the visible part of every leaf by its cupping and tilt and draws its
lateral veins, in one vectorised pass.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_K = 7  # outline points per leaf side
_T = np.linspace(-1.0, 1.0, _K + 2)[1:-1].astype(np.float32)

# Leaf albedos, BGR in [0, 1]: dark green, mid green, yellow green, blue-grey underside.
_LEAF_PALETTE = np.array([[0.14, 0.46, 0.28], [0.24, 0.62, 0.44], [0.22, 0.72, 0.64], [0.46, 0.66, 0.56]], np.float32)
_BARK_PALETTE = np.array([[0.33, 0.37, 0.41], [0.24, 0.28, 0.33], [0.48, 0.51, 0.54], [0.34, 0.40, 0.42]], np.float32)


def leaf_batch(rng: np.random.Generator, xs, ys, lengths, angles, z, *, yellow: float = 0.15) -> dict:
    """Random shapes and materials for N leaves at given centres / lengths (px) / angles."""
    n = len(xs)
    width_ratio = rng.uniform(0.45, 0.7, n) * rng.uniform(0.55, 1.0, n)  # tilt foreshortens the width
    length_scale = rng.uniform(0.65, 1.0, n)
    weights = rng.dirichlet([2.5, 3.0, 1.0 + 6 * yellow, 0.6], n).astype(np.float32)
    albedo = weights @ _LEAF_PALETTE * np.exp(rng.normal(0, 0.1, (n, 3))).astype(np.float32)
    # Leaf normal: mostly facing the camera, tilted at random.
    tilt = np.arccos(rng.uniform(0.15, 1.0, n))
    az = rng.uniform(0, 2 * math.pi, n)
    normal = np.stack([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)], 1)
    return dict(
        x=np.asarray(xs, np.float32), y=np.asarray(ys, np.float32), length=np.asarray(lengths, np.float32) * length_scale,
        angle=np.asarray(angles, np.float32), width_ratio=width_ratio.astype(np.float32),
        curve=rng.normal(0, 0.12, n).astype(np.float32), asym=rng.normal(0, 0.12, n).astype(np.float32),
        fold=rng.uniform(0.05, 0.4, n).astype(np.float32), albedo=albedo, normal=normal.astype(np.float32),
        z=np.asarray(z, np.float32), shaded=rng.random(n).astype(np.float32), desat=rng.uniform(0.0, 0.35, n).astype(np.float32), gloss=rng.uniform(0, 1, n).astype(np.float32),
    )


def _midrib_offset(curve, half_width, t):
    """Sideways offset of the curved midrib at t in [-1, 1] along the leaf (0 at base and tip)."""
    return curve * half_width * (1 - t * t) * 2


def leaf_polygons(leaves: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two half-leaf polygons (N, 2*_K+2, 2) and the midrib endpoints (N, 2, 2), int32 pixels."""
    n = len(leaves["x"])
    L = leaves["length"][:, None] / 2
    W = L * leaves["width_ratio"][:, None]
    t = _T[None, :]
    # Broadest a little below the middle, pointed tip, narrower base.
    half_width = W * (1 - t * t) ** 0.8 * (1 - 0.25 * t + leaves["asym"][:, None])
    along = t * L
    mid = _midrib_offset(leaves["curve"][:, None], W, t)
    base = np.stack([-L[:, 0], np.zeros(n, np.float32)], 1)[:, None]
    tip = np.stack([L[:, 0], np.zeros(n, np.float32)], 1)[:, None]
    side_a = np.stack([along, mid + half_width], -1)
    side_b = np.stack([along, mid - half_width * (1 - 0.15 * leaves["asym"][:, None])], -1)
    rib = np.stack([along, mid], -1)[:, ::-1]
    half_a = np.concatenate([base, side_a, tip, rib], 1)
    half_b = np.concatenate([base, side_b, tip, rib], 1)
    c, s = np.cos(leaves["angle"])[:, None], np.sin(leaves["angle"])[:, None]
    centre = np.stack([leaves["x"], leaves["y"]], 1)[:, None]

    def place(p):
        return np.stack([p[..., 0] * c - p[..., 1] * s, p[..., 0] * s + p[..., 1] * c], -1) + centre

    rib_ends = place(np.concatenate([base, tip], 1))
    return place(half_a).round().astype(np.int32), place(half_b).round().astype(np.int32), rib_ends.round().astype(np.int32)


def leaf_colours(leaves: dict, light: dict, depth_frac: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    """(N, 3, 3) uint8-range colours: half A, half B, midrib."""
    L = np.array(light["light_dir"], np.float32)
    n = leaves["normal"]
    ndotl = n @ L
    # Leaves deep inside the canopy are shaded by the ones in front of them.
    in_sun = (leaves["shaded"] > 0.15 + 0.65 * depth_frac).astype(np.float32)
    ao = 1 - 0.45 * depth_frac
    tint = np.array(light["light_bgr"], np.float32)
    out = np.empty((len(n), 3, 3), np.float32)
    for k, sign in enumerate((1.0, -1.0)):
        d = np.clip(ndotl + sign * leaves["fold"], 0, 1)
        trans = np.clip(-(ndotl + sign * leaves["fold"]), 0, 1) * 0.55  # light through the leaf (backlight)
        direct = light["sun"] * in_sun * (d + trans * (light["light"] == "backlit"))
        lit = leaves["albedo"] * (light["ambient"] * ao + direct)[:, None] * tint
        spec = (light["sun"] * in_sun * leaves["gloss"] * 0.35 * np.clip(d * 1.3 - 0.4, 0, 1) ** 3)[:, None]
        # Waxy leaves facing up mirror the bright sky: the pale grey-green sheen of real foliage.
        sheen = (leaves["gloss"] ** 3 * np.clip(-n[:, 1] * 1.5 + 0.2 * sign, 0, 1) * 0.3 * (light["ambient"] + 0.3 * light["sun"]))[:, None]
        out[:, k] = lit + spec * np.array([0.9, 1.0, 0.95], np.float32) + sheen * np.array(light.get("sky_bgr", [0.9, 0.9, 0.9]), np.float32)
    grey = out[:, :2].mean(2, keepdims=True)
    out[:, :2] = out[:, :2] * (1 - leaves["desat"][:, None, None]) + grey * leaves["desat"][:, None, None]
    out[:, 2] = out[:, :2].mean(1) * 1.25 + 0.03
    out *= brightness[:, None, None]
    return np.clip(out * 255, 0, 255)


def draw_leaf(canvas: np.ndarray, idbuf: np.ndarray, half_a, half_b, rib, colours, draw_rib: bool, code: int = 0) -> None:
    """``code`` goes into the id-buffer: 0 (an occluder), or ``leaf_code(i)`` so ``shade_leaves`` can find leaf i."""
    cv2.fillPoly(canvas, [half_a], colours[0].tolist(), cv2.LINE_AA)
    cv2.fillPoly(canvas, [half_b], colours[1].tolist(), cv2.LINE_AA)
    cv2.fillPoly(idbuf, [half_a, half_b], code)
    if draw_rib:
        cv2.line(canvas, tuple(rib[0]), tuple(rib[1]), colours[2].tolist(), 1, cv2.LINE_AA)


def leaf_code(i):
    """Id-buffer value of leaf i while a frame is drawn (-1 is the sky, 0 an occluder, > 0 an apple).
    Its own inverse: ``leaf_code(leaf_code(i)) == i``, so it also reads a leaf's index back (arrays too)."""
    return -2 - i


def leaf_structure(rng: np.random.Generator, n: int) -> dict:
    """Per leaf, the light and dark inside it: real leaves are cupped or curled (lighter or darker towards
    the edge), tilt along their length, and carry 6-12 pairs of lateral veins sweeping towards the tip,
    lighter than the blade on most leaves. Flat-filled halves gave the renders half the fine detail of
    orchard photos."""
    return dict(cup=np.clip(rng.normal(0, 0.25, n), -0.5, 0.5).astype(np.float32),
                along=rng.normal(0, 0.1, n).astype(np.float32),
                vein_pairs=rng.integers(6, 13, n).astype(np.float32),
                vein_slope=rng.uniform(0.8, 1.8, n).astype(np.float32),
                vein_amp=(rng.uniform(0.04, 0.22, n) * np.where(rng.random(n) < 0.75, 1, -1)).astype(np.float32))


def shade_leaves(canvas: np.ndarray, idbuf: np.ndarray, leaves: dict, structure: dict, in_focus: np.ndarray,
                 zbuf: np.ndarray | None = None) -> None:
    """Shade every pixel where leaf i is still visible (id-buffer ``leaf_code(i)``) by its place on that
    leaf, then give those pixels back to the occluder code 0. One vectorised pass over the frame; the
    structure is multiplicative, so it commutes with the shadows already cast on the leaves.
    ``in_focus``: per leaf, 1 or 0; leaves behind the depth of field were blurred and stay as they are.
    ``zbuf`` (optional depth buffer) gets each visible leaf pixel's depth."""
    ys, xs = np.nonzero(idbuf <= leaf_code(0))
    if not len(ys):
        return
    i = leaf_code(idbuf[ys, xs])
    if zbuf is not None:
        zbuf[ys, xs] = leaves["z"][i]
    dx = xs.astype(np.float32) - leaves["x"][i]
    dy = ys.astype(np.float32) - leaves["y"][i]
    c, s = np.cos(leaves["angle"][i]), np.sin(leaves["angle"][i])
    length = leaves["length"][i]
    half_len = length / 2
    u = np.clip((dx * c + dy * s) / half_len, -1, 1)
    width = half_len * leaves["width_ratio"][i]
    half_width = width * (1 - u * u) ** 0.8 + 0.5
    across = np.abs(-dx * s + dy * c - _midrib_offset(leaves["curve"][i], width, u))
    v = np.minimum(across / half_width, 1)
    factor = 1 + structure["cup"][i] * (v - 0.45) + structure["along"][i] * u
    # Lateral veins: lines where (distance along the midrib - slope * distance across) is a whole
    # number of vein spacings, 1% of the leaf's length wide (at least 0.6 px), faded out where the
    # spacing is too fine to resolve.
    spacing = length / structure["vein_pairs"][i]
    phase = (u * half_len - structure["vein_slope"][i] * across) / spacing
    dist_px = np.abs(phase - np.round(phase)) * spacing
    visible = np.clip((spacing - 2.5) / 3, 0, 1) * (v > 0.06) * (v < 0.92)
    factor += structure["vein_amp"][i] * np.exp(-(dist_px / np.maximum(0.6, 0.01 * length)) ** 2) * visible
    factor = 1 + (factor - 1) * in_focus[i]
    canvas[ys, xs] = np.clip(canvas[ys, xs] * factor[:, None], 0, 255).astype(np.uint8)
    idbuf[ys, xs] = 0


def cast_shadow(canvas: np.ndarray, idbuf: np.ndarray, polygons: tuple, offset: tuple[int, int], keep: float) -> None:
    """Darken what is already drawn under ``polygons`` shifted by ``offset`` (px) to ``keep`` of its light;
    the sky takes no shadow. Drawn just before the leaf itself, so only what lies behind it is shaded."""
    h, w = idbuf.shape
    shifted = [p + np.asarray(offset, np.int32) for p in polygons]
    pts = np.concatenate(shifted)
    x0, y0 = np.maximum(pts.min(0), 0)
    x1, y1 = np.minimum(pts.max(0) + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(local, [p - (x0, y0) for p in shifted], 1)
    shade = (local > 0) & (idbuf[y0:y1, x0:x1] != -1)
    region = canvas[y0:y1, x0:x1]
    region[shade] = (region[shade] * keep).astype(np.uint8)


def random_walk_branch(rng: np.random.Generator, start, direction: float, length_px: float, width_px: float,
                       step_px: float, wiggle: float = 0.18) -> np.ndarray:
    """(M, 3) points x, y, width of a tapered, gently bending branch."""
    steps = max(2, int(length_px / max(step_px, 2)))
    turns = np.cumsum(rng.normal(0, wiggle, steps))
    angles = direction + turns
    # Gravity: long limbs droop a little.
    dx = np.cos(angles) * step_px
    dy = np.sin(angles) * step_px + np.linspace(0, step_px * 0.15, steps)
    xs = start[0] + np.concatenate([[0], np.cumsum(dx)])
    ys = start[1] + np.concatenate([[0], np.cumsum(dy)])
    widths = width_px * np.linspace(1.0, 0.35, steps + 1)
    return np.stack([xs, ys, widths], 1).astype(np.float32)


def _ribbon(pts: np.ndarray, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Outline polygon of a tapered polyline (x, y, width) rows; ``offset`` shifts it sideways in widths."""
    xy = pts[:, :2]
    tangent = np.gradient(xy, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-6
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    half = pts[:, 2:3] / 2
    centre = xy + normal * half * offset * 2
    left, right = centre + normal * half * scale, centre - normal * half * scale
    return np.concatenate([left, right[::-1]]).round().astype(np.int32)


def draw_branch(canvas: np.ndarray, idbuf: np.ndarray, pts: np.ndarray, bark: np.ndarray, light: dict, brightness: float,
                zbuf: np.ndarray | None = None, z: float = 0.0) -> None:
    """A tapered branch as one filled ribbon, with a lit stripe on the side facing the light (depth z into ``zbuf``)."""
    lx, ly = light["light_dir"][0], light["light_dir"][1]
    tint = np.array(light["light_bgr"]) * brightness * 255
    dark = np.clip(bark * (light["ambient"] + 0.25 * light["sun"]) * tint, 0, 255).tolist()
    lit = np.clip(bark * (light["ambient"] + 0.95 * light["sun"]) * tint, 0, 255).tolist()
    outline = _ribbon(pts)
    cv2.fillPoly(canvas, [outline], dark, cv2.LINE_AA)
    cv2.fillPoly(idbuf, [outline], 0)
    if zbuf is not None:
        cv2.fillPoly(zbuf, [outline], float(z))
    if pts[:, 2].max() >= 3:
        d = pts[-1, :2] - pts[0, :2]
        normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
        side = 0.18 if normal[0] * lx + normal[1] * ly > 0 else -0.18
        cv2.fillPoly(canvas, [_ribbon(pts, offset=side, scale=0.45)], lit, cv2.LINE_AA)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Value noise in [0, 1] with about ``cells`` features across the larger side."""
    h, w = shape
    gh, gw = max(2, int(cells * h / max(h, w)) + 2), max(2, int(cells * w / max(h, w)) + 2)
    grid = rng.random((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def background(rng: np.random.Generator, prm: dict, light: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sky, ground and the blurred neighbouring rows.
    Returns (uint8 BGR, soft sky mask float32 in [0, 1], ground mask or None when no ground shows).

    The steps draw from ``rng`` in this order: sky (clouds, net), sky gaps, far canopy (trunks, leaves), ground."""
    w, h = size
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = _sky(rng, prm, light, size, yy)
    gaps, thr = _sky_gaps(rng, prm["sky_fraction"], size, yy)
    image, sky_mask = _far_canopy(rng, prm, light, sky, gaps, thr, size)
    ground_mask = None
    if prm["ground_fraction"] > 0:
        ground, ground_mask = _ground(rng, prm["ground_fraction"], light, size)
        image = np.where(ground_mask[..., None], ground, image)
        sky_mask[ground_mask] = 0
    return np.clip(image * 255, 0, 255).astype(np.uint8), sky_mask, ground_mask


def _sky(rng: np.random.Generator, prm: dict, light: dict, size: tuple[int, int], yy: np.ndarray) -> np.ndarray:
    """The sky, float32 BGR in [0, 1]: the light's sky colour brightening downwards, clouds, backlit glare,
    and the hail net when there is one."""
    w, h = size
    sky_col = np.array(light["sky_bgr"], np.float32)
    sky = np.broadcast_to(sky_col * (0.92 + 0.12 * yy), (h, w, 3)).copy()
    if light["light"] in ("sunny", "overcast", "rain", "dusk") and prm.get("net") is not True:
        clouds = smooth_noise(rng, (h, w), 5)[..., None]
        sky = sky * (1 - 0.35 * clouds) + 0.97 * 0.35 * clouds * (light["light"] != "night_flash")
    if light["light"] == "backlit":
        sky = np.minimum(sky * 1.15 + 0.1, 1.0)
    if prm.get("net"):
        sky = _hail_net(rng, sky, size)
    return sky


def _hail_net(rng: np.random.Generator, sky: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Hail net: a fine pale mesh over the sky."""
    w, h = size
    step = int(rng.integers(4, 12))
    net = np.zeros((h, w), np.uint8)
    ang = rng.uniform(-0.3, 0.3)
    for k in range(-h, w + h, step):
        cv2.line(net, (k, 0), (int(k + h * math.tan(ang)), h), 255, 1)
    for k in range(0, h + w, step):
        cv2.line(net, (0, k), (w, int(k - w * math.tan(ang + 0.1))), 255, 1)
    net_f = cv2.GaussianBlur(net, (0, 0), 0.7).astype(np.float32)[..., None] / 255
    return sky * (1 - 0.25 * net_f) + 0.8 * 0.25 * net_f


def _sky_gaps(rng: np.random.Generator, sky_frac: float, size: tuple[int, int], yy: np.ndarray) -> tuple[np.ndarray, float]:
    """Where the sky shows through the far rows: high in the image more than low.
    Returns the gap field and its threshold (gaps above it are open sky; inf when no sky shows)."""
    w, h = size
    gaps = smooth_noise(rng, (h, w), 4) * 0.6 + smooth_noise(rng, (h, w), 12) * 0.4
    gaps = gaps + (0.5 - yy[..., 0]) * 0.6
    thr = float(np.quantile(gaps[::4, ::4], 1 - sky_frac)) if sky_frac > 0 else np.inf
    return gaps, thr


def _far_canopy(rng: np.random.Generator, prm: dict, light: dict, sky: np.ndarray, gaps: np.ndarray, thr: float,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The far rows over the sky, float32 BGR in [0, 1], and the soft sky mask (what stays open sky)."""
    # Far canopy: many small dull leaves rendered at low resolution, then blurred (depth of field).
    # Near the sky the canopy is only leaves, so its outline is leafy, not a smooth blob.
    w, h = size
    scale = 3
    lw, lh = max(8, w // scale), max(8, h // scale)
    gaps_low = cv2.resize(gaps, (lw, lh), interpolation=cv2.INTER_AREA)
    far = cv2.resize(np.clip(sky * 255, 0, 255).astype(np.uint8), (lw, lh), interpolation=cv2.INTER_AREA)
    flash = light["light"] == "night_flash"
    base_col = np.array([0.14, 0.36, 0.22], np.float32) * (light["ambient"] + 0.3 * light["sun"]) * 255 * (0.15 if flash else 1)
    interior = gaps_low < thr - 0.06
    far[interior] = np.clip(base_col * 0.7, 0, 255).astype(np.uint8)
    skyflag = (~interior).astype(np.int32)  # leaves paint 0 over it: what stays 1 is open sky
    _far_trunks(rng, far, skyflag, light)
    _far_leaves(rng, far, skyflag, gaps_low, thr, light)
    far = cv2.resize(far, (w, h), interpolation=cv2.INTER_LINEAR)
    far = cv2.GaussianBlur(far, (0, 0), prm["background_blur_px"]).astype(np.float32) / 255
    sky_mask = cv2.resize(skyflag.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return far, sky_mask


def _far_trunks(rng: np.random.Generator, far: np.ndarray, skyflag: np.ndarray, light: dict) -> None:
    """Up to three trunks of the next row, drawn into the low-resolution ``far`` and cut out of ``skyflag``."""
    lh, lw = far.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        x = rng.uniform(0, lw)
        p0, p1 = (int(x), lh), (int(x + rng.normal(0, lh * 0.1)), int(rng.uniform(0, lh * 0.5)))
        cv2.line(far, p0, p1, (np.clip(_BARK_PALETTE[0] * 255 * (light["ambient"] + 0.3 * light["sun"]), 0, 255)).tolist(), int(rng.integers(1, 4)))
        cv2.line(skyflag, p0, p1, 0, 3)


def _far_leaves(rng: np.random.Generator, far: np.ndarray, skyflag: np.ndarray, gaps_low: np.ndarray, thr: float,
                light: dict) -> None:
    """Up to 700-1400 small dull leaves where the canopy is (and just past its edge into the sky gaps), drawn into
    the low-resolution ``far`` and ``skyflag``."""
    lh, lw = far.shape[:2]
    flash = light["light"] == "night_flash"
    n = int(rng.integers(700, 1400))
    xs, ys = rng.uniform(0, lw, n * 2), rng.uniform(0, lh, n * 2)
    ok = gaps_low[ys.astype(int).clip(0, lh - 1), xs.astype(int).clip(0, lw - 1)] < thr + 0.04
    xs, ys = xs[ok][:n], ys[ok][:n]
    n = len(xs)
    lengths = np.exp(rng.uniform(np.log(6), np.log(22), n)) * (lw / 213)
    leaves = leaf_batch(rng, xs, ys, lengths, rng.uniform(0, math.pi * 2, n), np.ones(n), yellow=0.1)
    leaves["albedo"] *= 0.8
    a, b, rib = leaf_polygons(leaves)
    cols = leaf_colours(leaves, light, np.full(n, 0.6, np.float32), np.full(n, 0.12 if flash else 0.85, np.float32))
    for i in range(n):
        draw_leaf(far, skyflag, a[i], b[i], rib[i], cols[i], False)


def _ground(rng: np.random.Generator, ground_fraction: float, light: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The orchard floor along the bottom ``ground_fraction`` of the frame, with a wavy top edge.
    Returns its float32 BGR colour (whole frame) and its boolean mask."""
    w, h = size
    top = int(h * (1 - ground_fraction))
    edge = (top + (smooth_noise(rng, (1, w), 6)[0] - 0.5) * h * 0.08).astype(np.int32)
    soil = np.array(rng.choice([[0.45, 0.55, 0.62], [0.35, 0.45, 0.52], [0.25, 0.45, 0.35]]), np.float32)
    tex = smooth_noise(rng, (h, w), 40)[..., None] * 0.35 + 0.8
    ground = soil * tex * (light["ambient"] + 0.7 * light["sun"]) * np.array(light["light_bgr"], np.float32)
    ground_mask = np.arange(h)[:, None] > edge[None, :]
    if light["light"] == "night_flash":
        ground *= 0.1
    return ground, ground_mask
