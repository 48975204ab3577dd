"""Scene parameters: what the prompt asks for, filled in by a wide random distribution.

A prompt only steers the distribution (cultivar, light, distance, density, occlusion, border
cut); everything it does not mention is drawn at random so the rendered set stays diverse.
Every value drawn here is a plain Python number/string so the dict goes into manifest.jsonl as is.
"""

from __future__ import annotations

import math
import re

import numpy as np

FAMILIES = ("occluders", "blur", "lighting", "cultivar_colours", "clutter")

CULTIVARS = ("fuji", "gala", "granny_smith", "golden", "honeycrisp", "red_delicious")
# Green and yellow cultivars (granny smith, golden) at 30%: other orchards grow them, and a red cue alone
# must not make an apple (renderer 13; was 24%).
_CULTIVAR_WEIGHTS = (0.30, 0.14, 0.16, 0.14, 0.14, 0.12)
LIGHTS = ("sunny", "overcast", "backlit", "dusk", "night_flash", "rain")
_LIGHT_WEIGHTS = (0.42, 0.2, 0.12, 0.09, 0.07, 0.1)

# Apple colours, BGR in [0, 1]: (ground colour, blush colour, typical blush coverage).
CULTIVAR_COLOURS = {
    "fuji": ((0.42, 0.76, 0.84), (0.32, 0.32, 0.80), 0.45),
    "gala": ((0.25, 0.62, 0.85), (0.12, 0.20, 0.78), 0.75),
    "granny_smith": ((0.25, 0.68, 0.50), (0.22, 0.55, 0.55), 0.05),
    "golden": ((0.30, 0.78, 0.86), (0.22, 0.55, 0.85), 0.1),
    "honeycrisp": ((0.22, 0.62, 0.82), (0.14, 0.14, 0.70), 0.6),
    "red_delicious": ((0.20, 0.35, 0.70), (0.12, 0.08, 0.50), 0.92),
}


def parse_prompt(prompt: str) -> dict:
    """Keywords the renderer understands; absent keys mean 'random'."""
    p = (prompt or "").lower()
    out: dict = {}
    for words in (_cultivar_words, _light_words, _distance_words, _layout_words):
        out.update(words(p))
    return out


def _cultivar_words(p: str) -> dict:
    out: dict = {}
    if "honeycrisp" in p:
        out["cultivar"] = "honeycrisp"
    elif "fuji" in p:
        out["cultivar"] = "fuji"
    elif "gala" in p:
        out["cultivar"] = "gala"
    elif "granny" in p or "green" in p and "apple" in p and "red" not in p:
        out["cultivar"] = "granny_smith"
    elif "golden" in p or "yellow" in p:
        out["cultivar"] = "golden"
    elif "red delicious" in p or re.search(r"\bred\b", p):
        out["cultivar"] = "red_delicious"
    if "pale" in p:
        out["blush_scale"] = 0.6
    return out


def _light_words(p: str) -> dict:
    if "night" in p or "flash" in p:
        return {"light": "night_flash"}
    if "dusk" in p or "sunset" in p or "evening" in p or "dawn" in p:
        return {"light": "dusk"}
    if "backlit" in p or "backlight" in p or "against the sun" in p:
        return {"light": "backlit"}
    if "rain" in p or "wet" in p:
        return {"light": "rain"}
    if "overcast" in p or "cloudy" in p or "diffuse" in p:
        return {"light": "overcast"}
    if "sunny" in p or "sunlit" in p or "daylight" in p or "midday" in p or "sun" in p:
        return {"light": "sunny"}
    return {}


def _distance_words(p: str) -> dict:
    """A distance in m or cm, or words for near and far."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*(m|metres|meters|cm)\b", p)
    if m:
        value = float(m.group(1)) / (100.0 if m.group(2) == "cm" else 1.0)
        return {"distance_m": float(min(max(value, 0.15), 8.0))}
    if "close-up" in p or "close up" in p or "closeup" in p or "macro" in p:
        return {"distance_m": 0.35}
    if re.search(r"\bfar\b|distant|wide view", p):
        return {"distance_m": 3.0}
    return {}


def _layout_words(p: str) -> dict:
    """How many apples, how hidden, and whether the frame cuts them."""
    out: dict = {}
    if "cluster" in p or "many" in p or "dense" in p or "lots" in p:
        out["density"] = "many"
    elif "few" in p or "single" in p or "one apple" in p or "sparse" in p:
        out["density"] = "few"
    if "heavily" in p or "mostly hidden" in p or "heavy occlusion" in p:
        out["occlusion"] = "heavy"
    elif "partly" in p or "partially" in p or "partial" in p or "hidden" in p or "occluded" in p:
        out["occlusion"] = "partial"
    elif "unoccluded" in p or "clear view" in p or "fully visible" in p:
        out["occlusion"] = "low"
    if "border" in p or "cut by" in p or "edge of the image" in p:
        out["border_cut"] = True
    return out


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(prompt: str, rng: np.random.Generator, size: tuple[int, int], disable: frozenset[str],
                  fov_range: tuple[float, float] = (12.0, 66.0)) -> dict:
    """Draw every scene parameter; the prompt fixes some, ``disable`` freezes whole families.

    The steps run in a fixed order and each adds its keys to the dict in turn: the draws from ``rng`` and
    the key order (the dict goes into manifest.jsonl as is) are what a seed's scene and manifest line are."""
    asked = parse_prompt(prompt)
    w, h = size
    prm: dict = {"prompt": prompt, "size": [int(w), int(h)], "disabled": sorted(disable), "asked": asked}
    prm.update(_cultivar_colours(asked, rng, disable))
    prm.update(_lighting(asked, rng, disable))
    prm.update(_camera_geometry(asked, rng, w, disable, fov_range))
    density, occlusion = _density_and_occlusion(asked, rng, disable)
    # Parameters added after the first renderer draw from child streams of their own, so a seed's older
    # draws stay as they were. Spawned always and in one order: switching one family off must not
    # re-draw another family's parameters (the ablation compares scene for scene).
    distractor_rng, detail_rng, shadow_rng = rng.spawn(3)
    prm.update(_content(asked, rng, density, occlusion))
    prm.update(_clutter(rng, distractor_rng, disable, prm["sky_fraction"]))
    prm.update(_camera_effects(rng, detail_rng, disable))
    if "lighting" in disable:
        prm.update(shadow_strength=0.0, shadow_gap_m=0.0)
    else:
        prm.update(_canopy_shadows(shadow_rng, prm))
    return prm


def _cultivar_colours(asked: dict, rng: np.random.Generator, disable: frozenset[str]) -> dict:
    """The cultivar and its apple colours (ground, blush, blush coverage, per-apple jitter)."""
    if "cultivar_colours" in disable:
        cultivar = "fuji"
    else:
        cultivar = asked.get("cultivar") or str(rng.choice(CULTIVARS, p=_CULTIVAR_WEIGHTS))
    ground, blush, coverage = CULTIVAR_COLOURS[cultivar]
    if "cultivar_colours" not in disable:
        ground = tuple(float(np.clip(c * rng.uniform(0.85, 1.15), 0.02, 1)) for c in ground)
        blush = tuple(float(np.clip(c * rng.uniform(0.8, 1.2), 0.02, 1)) for c in blush)
        coverage = float(np.clip(coverage * asked.get("blush_scale", 1.0) + rng.normal(0, 0.12), 0.0, 1.0))
    return dict(cultivar=cultivar, ground_bgr=list(ground), blush_bgr=list(blush), blush_coverage=float(coverage),
                colour_jitter=0.0 if "cultivar_colours" in disable else float(rng.uniform(0.04, 0.12)))


def _lighting(asked: dict, rng: np.random.Generator, disable: frozenset[str]) -> dict:
    """The light's name, then its direction, strengths, tint and camera response (``_sample_light``)."""
    if "lighting" in disable:
        light = "sunny"
    else:
        light = asked.get("light") or str(rng.choice(LIGHTS, p=_LIGHT_WEIGHTS))
    prm = {"light": light}
    prm.update(_sample_light(light, rng, frozen="lighting" in disable))
    return prm


def _camera_geometry(asked: dict, rng: np.random.Generator, w: int, disable: frozenset[str],
                     fov_range: tuple[float, float]) -> dict:
    """Field of view, focal length in pixels, distance to the row and an apple's size there."""
    # Fields of view down to 12 deg stand in for telephoto lenses and for tiles cropped from
    # high-resolution photos (how most orchard datasets are made): apples then fill 10-40% of the
    # frame, which a 24-66 deg camera alone almost never shows at harvest-robot distances.
    fov = 50.0 if "blur" in disable and "lighting" in disable else _loguniform(rng, *fov_range)
    focal = (w / 2) / math.tan(math.radians(fov) / 2)
    if "distance_m" in asked:
        distance = float(asked["distance_m"] * math.exp(rng.normal(0, 0.12)))
    else:
        distance = _loguniform(rng, 0.25, 3.0)
    return dict(fov_deg=fov, focal_px=float(focal), distance_m=distance,
                apple_px_at_distance=float(focal * 0.078 / distance))


def _density_and_occlusion(asked: dict, rng: np.random.Generator, disable: frozenset[str]) -> tuple[str, str]:
    """How many apples and how hidden they are ("none" when the occluders are off)."""
    # At harvest most views hold many apples; dense scenes also give the detector more examples per image.
    density = asked.get("density") or str(rng.choice(["few", "normal", "many"], p=[0.2, 0.45, 0.35]))
    occlusion = asked.get("occlusion") or str(rng.choice(["low", "partial", "heavy"], p=[0.25, 0.5, 0.25]))
    if "occluders" in disable:
        occlusion = "none"
    return density, occlusion


def _content(asked: dict, rng: np.random.Generator, density: str, occlusion: str) -> dict:
    """What the frame holds: leaves in front, leaf density, border cut, sky, ground and trunk.
    Every draw here is made whatever the prompt asked (``rng.random()`` for border_cut and no_apples
    included), so the draws after it stay where they were."""
    return dict(density=density, occlusion=occlusion,
                front_leaf_fraction={"none": 0.0, "low": 0.12, "partial": 0.3, "heavy": 0.5}[occlusion],
                leaf_density=float(rng.uniform(0.6, 1.4)) * (1.25 if occlusion == "heavy" else 1.0),
                border_cut=bool(asked.get("border_cut", rng.random() < 0.5)),
                no_apples=bool(rng.random() < 0.06 and "density" not in asked),
                sky_fraction=float(rng.choice([0.0, rng.uniform(0.05, 0.5)], p=[0.45, 0.55])),
                ground_fraction=float(rng.choice([0.0, rng.uniform(0.1, 0.5)], p=[0.8, 0.2])),
                trunk=bool(rng.random() < 0.35))


def _clutter(rng: np.random.Generator, distractor_rng: np.random.Generator, disable: frozenset[str],
             sky_fraction: float) -> dict:
    """Posts, wires, hail net, hose, poles and the distractors; with clutter off, none of them, little
    sky and no ground (this overrides the sky and ground fractions ``_content`` drew)."""
    if "clutter" in disable:
        return dict(posts=0, wires=0, net=False, hose=False, poles=0, sky_fraction=min(sky_fraction, 0.15),
                    ground_fraction=0.0, banded_posts=0, band_chance=0.0, tapes=0, dry_leaf_fraction=0.0)
    prm = dict(posts=int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1])), wires=int(rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1])),
               net=bool(rng.random() < 0.35), hose=bool(rng.random() < 0.15),
               poles=int(rng.random() < 0.12))
    prm.update(_distractors(distractor_rng))
    return prm


def _camera_effects(rng: np.random.Generator, detail_rng: np.random.Generator, disable: frozenset[str]) -> dict:
    """Defocus, motion blur, background blur, sharpening and grain (all off with blur disabled)."""
    if "blur" in disable:
        return dict(defocus_px=0.0, motion_px=0.0, motion_angle_deg=0.0, background_blur_px=1.0,
                    sharpen=0.0, sharpen_px=1.0, grain=0.0, grain_px=1.0, grain_seed=0)
    prm = dict(defocus_px=float(rng.choice([0.0, rng.uniform(0.4, 1.5)], p=[0.75, 0.25])),
               motion_px=float(rng.choice([0.0, rng.uniform(2, 9)], p=[0.8, 0.2])),
               motion_angle_deg=float(rng.uniform(0, 180)),
               background_blur_px=float(rng.uniform(1.0, 6.0)))
    prm.update(_fine_detail(detail_rng))
    return prm


def _canopy_shadows(rng: np.random.Generator, light: dict) -> dict:
    """Leaves in direct sun cast shadows on the leaves and fruit behind them: the dark crevices and the
    leaf-shaped shade on apples that photos of sunlit canopies are full of, and flat-filled renders lacked.
    ``shadow_gap_m``: how far behind a leaf its shadow lands (sets the offset); ``shadow_strength``: the
    share of the light the shadow takes away. Own stream, like the distractors."""
    sunlit = light["light"] in ("sunny", "dusk") and light["light_dir"][2] > 0.1
    strength = light["sun"] / (light["sun"] + light["ambient"]) * rng.uniform(0.4, 0.85)
    return dict(shadow_strength=float(strength if sunlit and rng.random() < 0.85 else 0.0),
                shadow_gap_m=float(rng.uniform(0.01, 0.06)))


def _fine_detail(rng: np.random.Generator) -> dict:
    """Fine detail the flat fills of the renderer lack: the camera's own sharpening (every phone and
    DSLR picture style applies an unsharp mask) and a fine surface grain (leaf tissue, bark, skin).
    Renders had a quarter of the high-frequency energy of orchard photos (mean |Laplacian| at 416 px:
    median 0.025 vs 0.109 on the dev photos, aggregate); without it, a smooth, clean surface can tell a
    rendered apple from everything else in a way no photo does.

    Drawn from a stream of their own, like the distractors: a seed's scene is otherwise unchanged."""
    return dict(sharpen=float(rng.choice([0.0, rng.uniform(0.5, 2.5)], p=[0.15, 0.85])),
                sharpen_px=float(rng.uniform(0.7, 1.6)),
                grain=float(rng.choice([0.0, rng.uniform(0.03, 0.12)], p=[0.25, 0.75])),
                grain_px=float(rng.uniform(1.0, 2.5)),
                grain_seed=int(rng.integers(1 << 31)))


def _distractors(rng: np.random.Generator) -> dict:
    """Apple-coloured things that are not apples: painted or taped posts, flagging tape on branches,
    dry and autumn-coloured leaves. Colour alone must not make an apple.

    Drawn from a stream of their own (a child of the scene's generator), so a seed's scene is the same
    as without them, with these added: their effect can be measured scene for scene."""
    return dict(banded_posts=int(rng.choice([0, 1, 2], p=[0.8, 0.15, 0.05])),  # extra posts that always carry bands
                band_chance=float(rng.uniform(0.2, 0.6)),  # the chance that any other post carries bands
                tapes=int(rng.choice([0, 1, 2, 3], p=[0.7, 0.15, 0.1, 0.05])),
                dry_leaf_fraction=float(rng.choice([0.0, rng.uniform(0.01, 0.06)], p=[0.5, 0.5])))


def _sample_light(light: str, rng: np.random.Generator, frozen: bool) -> dict:
    """Light direction (camera frame: x right, y down, z towards the camera), strengths, tint, camera.

    Draws from ``rng`` in a fixed order (azimuth, the light's ranges, its direction, the camera): a seed's
    scene depends on it."""
    if frozen:
        return dict(light_dir=[0.35, -0.55, 0.76], sun=0.75, ambient=0.45, light_bgr=[1.0, 1.0, 1.0],
                    dapple=0.0, exposure=1.0, wb_bgr=[1.0, 1.0, 1.0], gamma=1.0, noise_sigma=0.0,
                    jpeg_quality=0, vignette=0.0, sky_bgr=[0.95, 0.85, 0.72], flash_falloff=False, target_luma=0.42, texture=0.15,
                    saturation=1.0, haze=0.0)
    az = rng.uniform(0, 2 * math.pi)
    lz, sun, amb, tint, dapple, sky = _light_strengths(light, rng)
    return dict(light_dir=_light_direction(light, float(lz), az, rng), sun=float(sun), ambient=float(amb),
                light_bgr=[float(t) for t in tint], dapple=float(dapple), **_camera_rendition(rng),
                sky_bgr=[float(c) for c in sky], flash_falloff=light == "night_flash",
                **_camera_finish(light, rng))


def _light_strengths(light: str, rng: np.random.Generator) -> tuple:
    """(elevation lz, sun, ambient, tint BGR, dapple, sky BGR) drawn from the ranges of this kind of light."""
    if light == "sunny":
        # Ambient up to 0.6: sunlit canopies bounce a lot of light into their shadows. Dapple up to 0.75:
        # the canopy's inner shade, where apples and the leaves around them are both dark (renderer 13).
        lz, sun, amb, tint, dapple = rng.uniform(0.15, 0.9), rng.uniform(0.75, 1.05), rng.uniform(0.25, 0.6), [0.95, 1.0, 1.03], rng.uniform(0.15, 0.75)
        sky = [rng.uniform(0.85, 1.0), rng.uniform(0.75, 0.92), rng.uniform(0.55, 0.8)]
    elif light == "overcast":
        lz, sun, amb, tint, dapple = rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.8), [1.04, 1.0, 0.97], rng.uniform(0.0, 0.1)
        g = rng.uniform(0.75, 0.95)
        sky = [g + 0.03, g, g - 0.02]
    elif light == "backlit":
        lz, sun, amb, tint, dapple = rng.uniform(-0.9, -0.3), rng.uniform(0.8, 1.1), rng.uniform(0.18, 0.35), [0.9, 1.0, 1.08], rng.uniform(0.2, 0.5)
        sky = [0.98, 0.98, 0.96]
    elif light == "dusk":
        lz, sun, amb, tint, dapple = rng.uniform(-0.2, 0.6), rng.uniform(0.4, 0.7), rng.uniform(0.2, 0.35), [0.7, 0.88, 1.12], rng.uniform(0.1, 0.4)
        sky = [rng.uniform(0.5, 0.75), rng.uniform(0.55, 0.75), rng.uniform(0.75, 0.95)]
    elif light == "night_flash":
        lz, sun, amb, tint, dapple = 1.0, rng.uniform(0.9, 1.3), rng.uniform(0.03, 0.08), [1.0, 1.0, 1.0], 0.0
        sky = [0.05, 0.03, 0.02]
    else:  # rain
        lz, sun, amb, tint, dapple = rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.2), rng.uniform(0.5, 0.7), [1.05, 1.0, 0.95], 0.0
        g = rng.uniform(0.6, 0.8)
        sky = [g + 0.03, g, g - 0.03]
    return lz, sun, amb, tint, dapple, sky


def _light_direction(light: str, lz: float, az: float, rng: np.random.Generator) -> list[float]:
    """Unit vector towards the light: the flash sits at the camera; the sun comes from above more often than below."""
    planar = math.sqrt(max(1e-6, 1 - lz * lz))
    if light == "night_flash":
        direction = [float(rng.normal(0, 0.1)), float(rng.normal(0, 0.1)), 1.0]
    else:
        ly = -abs(math.sin(az)) if rng.random() < 0.85 else abs(math.sin(az))
        direction = [planar * math.cos(az), planar * ly, lz]
    n = math.sqrt(sum(c * c for c in direction))
    return [float(c / n) for c in direction]


def _camera_rendition(rng: np.random.Generator) -> dict:
    """Exposure, white balance, tone curve, sensor noise, JPEG quality and vignetting."""
    return dict(exposure=float(np.exp(rng.normal(0, 0.18))),
                wb_bgr=[float(np.exp(rng.normal(0, 0.06))), 1.0, float(np.exp(rng.normal(0, 0.06)))],
                gamma=float(rng.uniform(0.85, 1.15)), noise_sigma=float(rng.uniform(0.0, 0.03)),
                jpeg_quality=int(rng.choice([0, int(rng.integers(45, 96))], p=[0.3, 0.7])),
                vignette=float(rng.uniform(0.0, 0.35)))


def _camera_finish(light: str, rng: np.random.Generator) -> dict:
    """Surface texture, colour rendition, veiling glare and the auto exposure's target."""
    return dict(
        texture=float(rng.uniform(0.05, 0.3)),
        # Camera colour rendition: real photos of foliage are far less saturated than flat CG
        # colours, and picture styles differ; veiling glare lifts the shadows on bright days.
        saturation=float(rng.uniform(0.45, 1.05)),
        haze=float(rng.choice([0.0, rng.uniform(0.03, 0.2)], p=[0.6, 0.4])) if light != "night_flash" else 0.0,
        # Up to high-key: auto exposure on bright days often puts the canopy near mid-grey or above.
        target_luma=float({"sunny": rng.uniform(0.36, 0.64), "overcast": rng.uniform(0.36, 0.6), "rain": rng.uniform(0.3, 0.45),
                           "backlit": rng.uniform(0.22, 0.4), "dusk": rng.uniform(0.2, 0.35), "night_flash": 0.0}[light]))
