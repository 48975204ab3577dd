"""Camera and light effects applied to the composed frame: dappled sun, exposure, white balance,
vignetting, defocus / motion blur, chromatic shift, sensor noise, JPEG round trip.

Only the image changes here; the masks stay exact (they come from the id-buffer)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .canopy import smooth_noise


def dapple_map(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Patches of sun and shade cast by the canopy above: multiplicative map in (0, 1]."""
    if strength <= 0:
        return np.ones(shape, np.float32)
    noise = smooth_noise(rng, shape, float(rng.uniform(3, 9))) * 0.7 + smooth_noise(rng, shape, 20) * 0.3
    sun = np.clip((noise - 0.45) * 6 + 0.5, 0, 1)
    return (1 - strength) + strength * sun


def finish(rng: np.random.Generator, image: np.ndarray, sky: np.ndarray, prm: dict, stream: bool = False) -> np.ndarray:
    """uint8 BGR in, uint8 BGR out: the scene's light, then the camera's response, optics, sensor and JPEG.

    The steps draw from ``rng`` in this order (dapple, texture, sensor noise): a seed's image depends on it."""
    img = _scene_light(rng, image.astype(np.float32) / 255, sky, prm)
    img = _optics(_camera_response(img, prm), prm)
    out = np.clip(_sensor(rng, img, prm) * 255 + 0.5, 0, 255).astype(np.uint8)
    if prm["jpeg_quality"] and not stream:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(prm["jpeg_quality"])])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def _scene_light(rng: np.random.Generator, img: np.ndarray, sky: np.ndarray, prm: dict) -> np.ndarray:
    """Dappled light, auto exposure on the scene, surface mottling and grain (float BGR in [0, 1]-ish)."""
    h, w = img.shape[:2]
    if prm["dapple"] > 0:
        light = dapple_map(rng, (h, w), prm["dapple"])
        light = light + (1 - light) * sky
        img *= light[..., None]
    if prm.get("target_luma", 0) > 0:  # auto exposure on the scene, not on the sky
        small = img[::4, ::4]
        fg = sky[::4, ::4] < 0.5
        luma = float((small[fg] @ np.array([0.11, 0.59, 0.3], np.float32)).mean()) if fg.any() else 0.5
        img *= float(np.clip(prm["target_luma"] / max(luma, 1e-3), 0.6, 2.8))
    # Fine mottling breaks up the flat fills of leaves and bark (surface texture, uneven light).
    if prm.get("texture", 0) > 0:
        tex = smooth_noise(rng, (h, w), max(w, h) / 6) * 0.6 + smooth_noise(rng, (h, w), max(w, h) / 2.5) * 0.4
        img *= (1 + prm["texture"] * (tex - 0.5))[..., None]
    if prm["grain"] > 0:  # surface grain on everything but the sky, drawn from its own seed
        cells = np.random.default_rng(prm["grain_seed"]).standard_normal(
            (max(2, int(h / prm["grain_px"])), max(2, int(w / prm["grain_px"])))).astype(np.float32)
        grain = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)
        img *= (1 + prm["grain"] * grain * (1 - sky))[..., None]
    return img


def _camera_response(img: np.ndarray, prm: dict) -> np.ndarray:
    """Exposure and white balance, vignetting, veiling glare, colour rendition and tone curve; clipped to [0, 1]."""
    h, w = img.shape[:2]
    img *= prm["exposure"] * np.array(prm["wb_bgr"], np.float32)
    if prm["vignette"] > 0:
        yy, xx = np.ogrid[:h, :w]
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img *= (1 - prm["vignette"] * 0.5 * r2)[..., None].astype(np.float32)
    img = np.clip(img, 0, 1)
    if prm.get("haze", 0) > 0:  # veiling glare: a little of the sky's light over everything
        img = img * (1 - prm["haze"]) + prm["haze"] * np.array(prm["sky_bgr"], np.float32)
    if prm.get("saturation", 1.0) != 1.0:
        grey = (img @ np.array([0.11, 0.59, 0.3], np.float32))[..., None]
        img = np.clip(grey + (img - grey) * prm["saturation"], 0, 1)
    if prm["gamma"] != 1.0:
        img = img ** prm["gamma"]
    return img


def _optics(img: np.ndarray, prm: dict) -> np.ndarray:
    """Defocus and motion blur."""
    if prm["defocus_px"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), prm["defocus_px"])
    if prm["motion_px"] > 0:
        k = int(prm["motion_px"]) | 1
        kernel = np.zeros((k, k), np.float32)
        a = math.radians(prm["motion_angle_deg"])
        c = k // 2
        cv2.line(kernel, (int(c - math.cos(a) * c), int(c - math.sin(a) * c)), (int(c + math.cos(a) * c), int(c + math.sin(a) * c)), 1.0, 1)
        img = cv2.filter2D(img, -1, kernel / kernel.sum())
    return img


def _sensor(rng: np.random.Generator, img: np.ndarray, prm: dict) -> np.ndarray:
    """Shot noise (stronger at night, when the gain is up) and the camera's sharpening."""
    h, w = img.shape[:2]
    if prm["noise_sigma"] > 0:
        sigma = prm["noise_sigma"] * (2.5 if prm["light"] == "night_flash" else 1.0)
        noise = rng.standard_normal((h, w, 3), dtype=np.float32) * sigma * np.sqrt(img + 0.02)
        img = img + noise
    if prm["sharpen"] > 0:  # the camera's unsharp mask, after the optics and the sensor, before JPEG
        img = img + prm["sharpen"] * (img - cv2.GaussianBlur(img, (0, 0), prm["sharpen_px"]))
    return img
