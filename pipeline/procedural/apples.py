"""One apple, shaded in a local patch: irregular round outline, blush with streaks, lenticels,
stem cavity, Lambert + specular shading from the scene light. Writes colour and the id-buffer."""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np


_BLOOM_BGR = np.array([0.66, 0.63, 0.62], np.float32)  # the pale, slightly bluish grey of wax bloom


def _smooth_noise_1d(rng: np.random.Generator, n: int, smooth: int) -> np.ndarray:
    values = rng.random(n + 2 * smooth).astype(np.float32)
    kernel = np.hanning(2 * smooth + 1).astype(np.float32)
    kernel /= kernel.sum()
    out = np.convolve(np.concatenate([values, values]), kernel, mode="same")[smooth : smooth + n]
    return (out - out.min()) / (np.ptp(out) + 1e-6)


def apple_spec(rng: np.random.Generator, prm: dict, cx: float, cy: float, radius: float, z: float) -> dict:
    """Draw the per-apple random attributes once (so a drive-by re-renders the same apple)."""
    jitter = prm["colour_jitter"]
    ground = np.clip(np.array(prm["ground_bgr"]) * np.exp(rng.normal(0, jitter, 3)), 0.02, 1.0)
    blush = np.clip(np.array(prm["blush_bgr"]) * np.exp(rng.normal(0, jitter, 3)), 0.02, 1.0)
    coverage = float(np.clip(prm["blush_coverage"] + rng.normal(0, 0.15 + jitter), 0.0, 1.0))
    return dict(
        cx=float(cx), cy=float(cy), r=float(radius), z=float(z),
        aspect=float(rng.uniform(0.84, 0.98)), rot=float(rng.normal(0, 0.25)),
        harm=[float(rng.normal(0, 0.025)), float(rng.uniform(0, 6.28)), float(rng.normal(0, 0.018)), float(rng.uniform(0, 6.28))],
        ground=ground.tolist(), blush=blush.tolist(), coverage=coverage,
        blush_side=float(rng.uniform(0, 2 * math.pi)), streak_strength=float(rng.uniform(0.2, 0.9)),
        streak_seed=int(rng.integers(1 << 30)), lenticel_density=float(rng.uniform(0.0, 1.0)),
        cavity=bool(rng.random() < 0.3), cavity_pos=float(rng.uniform(-0.85, -0.45)),
        calyx=bool(rng.random() < 0.1), spin=float(rng.uniform(0, 2 * math.pi)), gloss=float(rng.uniform(0.1, 0.9)),
        # Natural wax bloom scatters pale light off the skin: it mutes and lightens the colour, more on
        # some fruit than others (rubbed or rain-washed fruit shows less of it).
        bloom=0.15 if "cultivar_colours" in prm["disabled"] else float(rng.uniform(0.0, 0.4)),
    )


# What sunlight looks like after passing through and bouncing off leaves: green-yellow (BGR).
_FOLIAGE_BGR = np.array([0.78, 1.0, 0.8], np.float32)


def _ambient(apple: dict, light: dict) -> tuple[float, np.ndarray]:
    """The fill light on an apple. One in the canopy's shade (``sun_scale`` < 1) sees little open sky: its
    fill is dimmer and comes off the leaves, so it is greener (renderer 13: the dev photos' apples in deep
    shade were the ones the model missed most). Own stream per apple, so the scene's layout stays as it was."""
    if apple.get("sun_scale", 1.0) >= 1.0 or "lighting" in light.get("disabled", ()):
        return light["ambient"], np.ones(3, np.float32)
    cover = float(np.random.default_rng([apple["streak_seed"], 13]).uniform(0.0, 0.65))
    return light["ambient"] * (1 - 0.7 * cover), 1 + cover * (_FOLIAGE_BGR - 1)


class _Silhouette(NamedTuple):
    """An apple's patch of the canvas, [y0:y1, x0:x1], and its outline and surface over that patch."""

    x0: int
    x1: int
    y0: int
    y1: int
    alpha: np.ndarray  # coverage, anti-aliased over about one pixel of the outline
    inside: np.ndarray  # alpha >= 0.5: the pixels the id-buffer gives this apple
    U: np.ndarray  # surface position across the apple, in rim radii
    V: np.ndarray  # surface position down the apple (negative: stem end), in rim radii
    nz: np.ndarray  # the surface normal's component towards the camera


def draw_apple(canvas: np.ndarray, idbuf: np.ndarray, apple: dict, apple_id: int, light: dict, brightness: float) -> None:
    """Composite one apple into ``canvas`` (uint8 BGR) and paint ``apple_id`` into ``idbuf`` where it is opaque."""
    shape = _silhouette(apple, idbuf.shape)
    if shape is None:
        return
    albedo = _albedo(apple, shape)
    colour = _shade(albedo, apple, shape, light, brightness)
    colour = _specular(colour, apple, shape, light, brightness)
    colour = _cavity_and_calyx(colour, apple, shape, brightness)
    _composite(canvas, idbuf, apple_id, shape, colour)
    _stem(canvas, apple, light, brightness)


def _patch_bounds(apple: dict, height: int, width: int) -> tuple[int, int, int, int]:
    """The apple's square patch, clipped to the canvas: x0, x1, y0, y1 (depth.py uses the same half-size)."""
    half = apple["r"] * 1.12 + 2
    x0, x1 = int(max(0, math.floor(apple["cx"] - half))), int(min(width, math.ceil(apple["cx"] + half)))
    y0, y1 = int(max(0, math.floor(apple["cy"] - half))), int(min(height, math.ceil(apple["cy"] + half)))
    return x0, x1, y0, y1


def _rim(apple: dict, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
    """The outline's radius at each polar angle t: a circle bent by its 2nd and 3rd harmonics."""
    a2, p2, a3, p3 = apple["harm"]
    # cos(2t), cos(3t) from cos/sin without arctan2 (faster)
    cos2 = cos_t * cos_t - sin_t * sin_t
    sin2 = 2 * sin_t * cos_t
    cos3 = cos_t * cos2 - sin_t * sin2
    sin3 = sin_t * cos2 + cos_t * sin2
    rim = 1 + a2 * (cos2 * math.cos(p2) - sin2 * math.sin(p2)) + a3 * (cos3 * math.cos(p3) - sin3 * math.sin(p3))
    # The flat shoulder at the top (stem end) makes apples a little less round than a sphere.
    return rim - 0.05 * np.clip(-sin_t, 0, 1) ** 4


def _silhouette(apple: dict, shape: tuple[int, int]) -> _Silhouette | None:
    """The apple's outline and surface over its patch; None where it covers no pixel of the canvas."""
    h, w = shape
    r = apple["r"]
    x0, x1, y0, y1 = _patch_bounds(apple, h, w)
    if x1 <= x0 or y1 <= y0:
        return None
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - apple["cy"])[:, None]
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - apple["cx"])[None, :]
    c, s = math.cos(apple["rot"]), math.sin(apple["rot"])
    u = (xs * c + ys * s) / r
    v = (-xs * s + ys * c) / (r * apple["aspect"])
    rho = np.sqrt(u * u + v * v) + 1e-6
    rim = _rim(apple, u / rho, v / rho)
    d = rho / rim
    alpha = np.clip((1 - d) * r + 0.5, 0, 1)
    inside = alpha >= 0.5
    if not inside.any():
        return None
    nz = np.sqrt(np.clip(1 - d * d, 0, 1))
    return _Silhouette(x0, x1, y0, y1, alpha, inside, u / rim, v / rim, nz)


def _albedo(apple: dict, shape: _Silhouette) -> np.ndarray:
    """Skin colour: ground colour, blush with streaks along meridians, lenticels, wax bloom.

    One stream from ``streak_seed`` feeds the blush and then the lenticels, in that order."""
    rng = np.random.default_rng(apple["streak_seed"])
    albedo, ground = _blush(apple, shape, rng)
    if apple["lenticel_density"] > 0.3 and apple["r"] > 10:
        albedo = _lenticels(albedo, ground, apple, shape, rng)
    return albedo * (1 - apple["bloom"]) + apple["bloom"] * _BLOOM_BGR


def _blush(apple: dict, shape: _Silhouette, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ground colour under the cultivar's streaked blush; returns the albedo and the ground colour."""
    U, V = shape.U, shape.V
    phi = np.arcsin(np.clip(U / np.sqrt(np.clip(1 - V * V, 1e-3, 1)), -1, 1)) + apple["spin"]
    streaks = 0.6 * _smooth_noise_1d(rng, 256, int(rng.integers(2, 5))) + 0.4 * _smooth_noise_1d(rng, 256, 9)
    index = ((phi / (2 * math.pi)) % 1.0 * 255).astype(np.int32)
    streak = streaks[index]
    side = np.cos(phi - apple["blush_side"]) * 0.5 + 0.5  # one cheek more blushed than the other
    patch_size = (shape.x1 - shape.x0, shape.y1 - shape.y0)
    low = cv2.resize(rng.random((4, 4)).astype(np.float32), patch_size, interpolation=cv2.INTER_CUBIC)
    cov = apple["coverage"]
    blush_field = cov * 1.6 - 0.5 + 0.55 * side + 0.35 * (low - 0.5) + apple["streak_strength"] * 0.6 * (streak - 0.5)
    blush_field = blush_field - 0.4 * np.clip(np.abs(V) - 0.6, 0, 1)  # ends stay paler
    m = np.clip(blush_field * 1.5, 0, 1)
    m = (m * m * (3 - 2 * m))[..., None]
    ground, blush = np.array(apple["ground"], np.float32), np.array(apple["blush"], np.float32)
    streak_dark = (1 - 0.18 * apple["streak_strength"] * (streak[..., None] - 0.5))
    return ground * (1 - m) + blush * m * streak_dark, ground


def _lenticels(albedo: np.ndarray, ground: np.ndarray, apple: dict, shape: _Silhouette, rng: np.random.Generator) -> np.ndarray:
    """Pale dots (the skin's breathing pores) scattered over the apple, lighter than its ground colour."""
    r, x0, y0 = apple["r"], shape.x0, shape.y0
    count = int(apple["lenticel_density"] * r * r * 0.025)
    dots = np.zeros((shape.y1 - y0, shape.x1 - x0), np.float32)
    px = rng.uniform(apple["cx"] - r, apple["cx"] + r, count) - x0
    py = rng.uniform(apple["cy"] - r, apple["cy"] + r, count) - y0
    rad = max(1, int(round(r / 70)))
    for a, b in zip(px.astype(int), py.astype(int)):
        cv2.circle(dots, (int(a), int(b)), rad, 1.0, -1)
    dots = cv2.GaussianBlur(dots, (0, 0), 0.6)[..., None] * 0.3
    return albedo * (1 - dots) + np.minimum(ground * 1.25 + 0.08, 1.0) * dots


def _shade(albedo: np.ndarray, apple: dict, shape: _Silhouette, light: dict, brightness: float) -> np.ndarray:
    """Lambert shading from the scene light plus the (tinted) fill light, and the rim light when backlit."""
    U, V, nz = shape.U, shape.V, shape.nz
    lx, ly, lz = light["light_dir"]
    diffuse = np.clip(U * lx + V * ly + nz * lz, 0, 1)
    if light["light"] in ("sunny", "backlit", "dusk"):
        diffuse = np.clip(diffuse * 1.3 - 0.05, 0, 1)  # harder terminator in direct sun
    ao = 0.5 + 0.5 * np.sqrt(nz)
    top_shadow = 1 - 0.25 * np.clip(-V, 0, 1) ** 2 * (light["light"] in ("overcast", "rain"))
    ambient, ambient_bgr = _ambient(apple, light)
    tint = np.array(light["light_bgr"], np.float32)
    colour = albedo * brightness * ((ambient * ao * top_shadow)[..., None] * ambient_bgr * tint
                                    + (light["sun"] * diffuse)[..., None] * tint)
    if light["light"] == "backlit":  # rim light from the sun behind the apple
        rim_light = np.clip(1 - nz, 0, 1) ** 3 * 0.6 * light["sun"]
        colour = colour + (rim_light[..., None] * np.array([0.7, 0.9, 1.0], np.float32))
    return colour


def _specular(colour: np.ndarray, apple: dict, shape: _Silhouette, light: dict, brightness: float) -> np.ndarray:
    """Specular highlight: glossy skin reflects the light source (and the sky in diffuse light)."""
    lx, ly, lz = light["light_dir"]
    hx, hy, hz = lx, ly, lz + 1.0
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    ndoth = np.clip((shape.U * hx + shape.V * hy + shape.nz * hz) / hn, 0, 1)
    shininess = 14 if light["light"] in ("sunny", "night_flash", "backlit") else 5
    spec = apple["gloss"] * (0.3 * light["sun"] if shininess == 14 else 0.1) * ndoth ** shininess
    return colour + spec[..., None] * brightness


def _cavity_and_calyx(colour: np.ndarray, apple: dict, shape: _Silhouette, brightness: float) -> np.ndarray:
    """Darken the stem cavity and the calyx (the dried flower end) where the apple shows them."""
    U, V, r = shape.U, shape.V, apple["r"]
    if apple["cavity"] and r > 6:
        cav_d = np.sqrt((U / 0.22) ** 2 + ((V - apple["cavity_pos"]) / 0.1) ** 2)
        cav = np.clip(1.2 - cav_d, 0, 1)[..., None]
        colour = colour * (1 - 0.45 * cav) + np.array([0.05, 0.12, 0.12], np.float32) * cav * 0.3
    if apple["calyx"] and r > 8:
        cal_d = np.sqrt(U * U + (V - 0.1) ** 2) / 0.12
        cal = np.clip(1.1 - cal_d, 0, 1)[..., None]
        colour = colour * (1 - 0.5 * cal) + np.array([0.1, 0.25, 0.3], np.float32) * cal * 0.5 * brightness
    return colour


def _composite(canvas: np.ndarray, idbuf: np.ndarray, apple_id: int, shape: _Silhouette, colour: np.ndarray) -> None:
    """Blend the apple over the canvas by its coverage; the id-buffer takes the pixels it mostly covers."""
    x0, x1, y0, y1 = shape.x0, shape.x1, shape.y0, shape.y1
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    a = shape.alpha[..., None]
    canvas[y0:y1, x0:x1] = np.clip(region * (1 - a) + np.clip(colour, 0, 1.2) * 255 * a, 0, 255).astype(np.uint8)
    idbuf[y0:y1, x0:x1][shape.inside] = apple_id


def _stem(canvas: np.ndarray, apple: dict, light: dict, brightness: float) -> None:
    """The stem sticks out of the cavity, over the apple outline (so drawn after compositing, colour only)."""
    r = apple["r"]
    if not (apple["cavity"] and r > 10):
        return
    sx = apple["cx"] + math.sin(apple["rot"]) * 0.0
    sy = apple["cy"] + apple["cavity_pos"] * r * apple["aspect"]
    tip = (sx + r * 0.12 * math.cos(apple["spin"]), sy - r * 0.45)
    col = tuple(float(x) * 255 * brightness * (light["ambient"] + 0.5 * light["sun"]) for x in (0.12, 0.22, 0.3))
    thick = max(1, int(r / 22))
    cv2.line(canvas, (int(sx), int(sy)), (int(tip[0]), int(tip[1])), col, thick, cv2.LINE_AA)
