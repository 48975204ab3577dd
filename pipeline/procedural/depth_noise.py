"""What an active stereo depth camera (RealSense D4xx-like) makes of the clean depth of a render.

- Error grows with the square of the distance: stereo measures disparity d = f b / z with a roughly
  constant sub-pixel error, so sigma_z = z^2 * subpixel / (f b) (Intel's tuning white paper for the
  D415/D435). Defaults: a D435 at 848 x 480 (f = 424 px at 90 deg HFOV, baseline 50 mm) with a sub-pixel
  RMS of 0.2 px, which gives its data-sheet figure of about 2% RMS at 2 m (k = 0.0094 /m, 9.4 mm at 1 m).
  The error is spatially correlated over a few pixels, as block matching makes it.
- Holes at depth edges: background the right imager cannot see past a nearer edge (the band left of
  every foreground edge, as wide as the disparity jump), and the far side of every depth jump (mixed
  matching windows).
- Invalid pixels on dark surfaces (no texture left to match) and on saturated highlights (specular skin).
- Nothing nearer than the minimum range (the largest disparity searched) or beyond the maximum range.

``level`` scales the disparity error (1 = the D435-like default, 2 = twice the error); the holes and
failures are the same at every level above 0, so renders at several levels differ only in the error.
Level 0 is the clean depth, untouched. The parameters used go into the manifest (``as_dict``). The noise
draws from its own stream (``depth_rng``): the rendered image is the same with or without depth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from pomona.errors import PomonaError

PRESETS = {"clean": 0.0, "d435": 1.0}
DEFAULT = "d435"


@dataclass(frozen=True)
class DepthNoise:
    name: str = DEFAULT
    level: float = 1.0
    focal_px: float = 424.0  # the depth imager's: D435 at 848 px, 90 deg HFOV
    baseline_m: float = 0.050
    subpixel_px: float = 0.2  # disparity RMS error at level 1: ~2% RMS at 2 m
    corr_px: float = 1.5  # the error's spatial correlation (Gaussian sigma, colour-image pixels)
    min_range_m: float = 0.17  # D435 at 848 x 480: f b / 126 px of disparity search
    max_range_m: float = 4.0  # beyond the D435's useful range (its error there: 15 cm at level 1)
    edge_jump: float = 0.04  # relative depth jump within 3 x 3 pixels that breaks matching
    dark_luma: float = 0.06  # luma (0-1) below which matching starts failing; all fail at half of it
    bright_luma: float = 0.97  # luma above which highlights start failing; all fail at saturation

    @property
    def k_per_m(self) -> float:
        """sigma_z = k * z^2 (z in metres)."""
        return self.level * self.subpixel_px / (self.focal_px * self.baseline_m)

    def params(self) -> dict:
        """The fields, to rebuild it: ``DepthNoise(**noise.params())``."""
        return asdict(self)

    def as_dict(self) -> dict:
        """The fields and the derived k, as recorded in the manifest."""
        return dict(asdict(self), k_per_m=self.k_per_m)


def depth_noise(level: str | float | None) -> DepthNoise:
    """A preset name (clean, d435) or a non-negative number (the d435 error times that)."""
    if level is None:
        level = DEFAULT
    text = str(level).strip().lower()
    if text in PRESETS:
        return replace(DepthNoise(), name=text, level=PRESETS[text])
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < 0:
        raise PomonaError(f"--depth-noise must be a number >= 0 or one of {', '.join(PRESETS)}, got {level!r}")
    name = "clean" if value == 0 else DEFAULT if value == 1 else f"{DEFAULT}x{value:g}"
    return replace(DepthNoise(), name=name, level=value)


def depth_rng(prompt: str, seed: int) -> np.random.Generator:
    """The depth noise's own stream: the scene's generator is never touched, so the image stays the same."""
    import zlib

    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32((prompt or "").encode()), 0x64657074])


def sense(clean: np.ndarray, image: np.ndarray, fx: float, noise: DepthNoise, rng: np.random.Generator) -> np.ndarray:
    """Noisy depth (float32 metres, 0 = invalid) from clean depth (0 = none) and the aligned BGR image;
    ``fx``: the colour image's focal length in pixels (the depth is aligned to it)."""
    clean = np.asarray(clean, np.float32)
    if noise.level == 0:
        return clean.copy()
    valid = clean > 0
    valid &= ~shadowed(clean, fx * noise.baseline_m)
    valid &= ~depth_edges(clean, noise.edge_jump)
    valid &= ~unmatched(image, noise, rng)
    fb = noise.focal_px * noise.baseline_m
    disparity = np.where(clean > 0, fb / np.maximum(clean, 1e-6), 0) + noise.level * noise.subpixel_px * correlated_noise(rng, clean.shape, noise.corr_px)
    valid &= disparity > 0
    z = np.where(valid, fb / np.maximum(disparity, 1e-9), 0).astype(np.float32)
    z[(z < noise.min_range_m) | (z > noise.max_range_m)] = 0
    return z


def shadowed(depth: np.ndarray, fb_px_m: float) -> np.ndarray:
    """Pixels the second imager (to the right, ``fb_px_m`` = focal in pixels x baseline) cannot see: a nearer
    surface to their right shifts over them. Pixel x is hidden if some x' > x has D(x') - D(x) >= x' - x."""
    h, w = depth.shape
    disparity = np.where(depth > 0, np.float32(fb_px_m) / np.maximum(depth, np.float32(1e-6)), np.float32(0))
    a = disparity - np.arange(w, dtype=np.float32)[None, :]
    right_max = np.maximum.accumulate(a[:, ::-1], axis=1)[:, ::-1]  # max over x' >= x
    beyond = np.concatenate([right_max[:, 1:], np.full((h, 1), -np.inf, np.float32)], axis=1)  # max over x' > x
    return beyond >= a + 0.5


def depth_edges(depth: np.ndarray, jump: float) -> np.ndarray:
    """The far side of every depth edge: pixels with a neighbour (3 x 3) nearer by more than ``jump`` of its
    depth, where the matching window straddles both surfaces (sky counts as far)."""
    far = np.where(depth > 0, depth, 1e3).astype(np.float32)
    nearest = cv2.erode(far, np.ones((3, 3), np.uint8))
    return (far - nearest) > jump * nearest


def unmatched(image: np.ndarray, noise: DepthNoise, rng: np.random.Generator) -> np.ndarray:
    """Dark and saturated pixels where matching fails, in blobs (a smooth random threshold)."""
    luma = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    dark = np.clip((noise.dark_luma - luma) / (noise.dark_luma / 2), 0, 1)
    bright = np.clip((luma - noise.bright_luma) / max(1.0 - noise.bright_luma - 1 / 255, 1e-3), 0, 1)
    chance = np.maximum(dark, bright)
    out = np.zeros(luma.shape, bool)
    some = chance > 0
    if some.any():
        # Fails where chance > u, u = logistic(1.702 g) ~ uniform on [0, 1] for g ~ N(0, 1) (smooth: blobs),
        # i.e. where 1.702 g < logit(chance).
        c = np.minimum(chance[some], np.float32(1 - 1e-6))
        out[some] = 1.702 * correlated_noise(rng, luma.shape, 3.0)[some] < np.log(c / (1 - c))
    return out


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise, smooth over about ``sigma_px``: drawn on a grid ``sigma_px``
    pixels apart (the draws are most of the cost), smoothed there and scaled up."""
    h, w = shape
    if sigma_px < 1:
        return rng.standard_normal(shape, dtype=np.float32)
    step = max(1, int(round(sigma_px)))
    small = cv2.GaussianBlur(rng.standard_normal((h // step + 2, w // step + 2), dtype=np.float32), (0, 0), sigma_px / step)
    field = cv2.resize(small, ((w // step + 2) * step, (h // step + 2) * step), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return (field - field.mean()) / max(float(field.std()), 1e-6)

