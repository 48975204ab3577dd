"""How renders and real orchard photos differ, in aggregate image statistics.

    python benchmarks/sim2real/image_stats.py [--renders 80] [--real DATA_YAML]

Per image, at the recipe's training size: luma percentiles, colour saturation and high-frequency energy
(mean |Laplacian| of the grey image: fine detail, edges, texture, sharpening). Per apple, inside its mask:
hue, saturation, brightness, its brightest 5% and the spread of its lightness (shading and highlights).
Each cell is the p10 / median / p90 over images or apples. Renders come from seeds no recipe trains on.
Only aggregates of the dev photos are read: they guide the renderer's ranges, never one image.
Writes image_stats.md and image_stats.json beside this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
RENDER_SEED = 900_000  # far from every seed the recipes render
IMAGE_STATS = ("luma median", "luma p5", "luma p95", "saturation median", "high-frequency energy")
APPLE_STATS = ("hue (deg)", "saturation", "brightness", "brightest 5%", "lightness spread")


def image_stats(image: np.ndarray, side: int) -> list[float]:
    import cv2

    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    sat = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 1].astype(np.float32) / 255
    lap = float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())
    return [float(np.median(grey)), float(np.percentile(grey, 5)), float(np.percentile(grey, 95)), float(np.median(sat)), lap]


def apple_stats(image: np.ndarray, masks: np.ndarray, min_px: int = 100) -> list[list[float]]:
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    lightness = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32) * (100 / 255)
    hue = np.where(hsv[..., 0] > 90, hsv[..., 0] - 180, hsv[..., 0]) * 2  # red wraps around 0: centre it
    out = []
    for m in masks:
        if m.sum() < min_px:
            continue
        v = hsv[..., 2][m] / 255
        out.append([float(np.median(hue[m])), float(np.median(hsv[..., 1][m] / 255)), float(np.median(v)),
                    float(np.percentile(v, 95)), float(lightness[m].std())])
    return out


def collect_real(data_yaml: Path, side: int) -> tuple[list, list]:
    from pomona.dataset import iter_labelled, read_data_yaml

    spec = read_data_yaml(data_yaml)
    images = spec.images("val")
    per_image, per_apple = [], []
    for _, image, labels in tqdm(iter_labelled(images), total=len(images), desc="real photos"):
        per_image.append(image_stats(image, side))
        if labels.masks is not None:
            per_apple += apple_stats(image, labels.masks)
    return per_image, per_apple


def collect_renders(n: int, side: int) -> tuple[list, list]:
    from pomona.pipeline.procedural import render

    per_image, per_apple = [], []
    for seed in tqdm(range(RENDER_SEED, RENDER_SEED + n), desc="renders"):
        scene = render("", seed, (640, 640))
        per_image.append(image_stats(scene.image, side))
        if len(scene.instances):
            per_apple += apple_stats(scene.image, scene.instances.masks)
    return per_image, per_apple


def spread(rows: list, names: tuple[str, ...]) -> dict:
    a = np.asarray(rows, np.float64).reshape(-1, len(names))
    return {name: [round(float(x), 3) for x in np.percentile(a[:, i], [10, 50, 90])] for i, name in enumerate(names)}


def table(title: str, count: str, real: dict, renders: dict, n_real: int, n_renders: int) -> list[str]:
    lines = [f"| {title} | real dev photos ({n_real} {count}) | renders ({n_renders} {count}) |", "|---|---|---|"]
    fmt = lambda c: " / ".join(f"{x:.3g}" for x in c)  # noqa: E731
    return lines + [f"| {k} | {fmt(real[k])} | {fmt(renders[k])} |" for k in real]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", type=int, default=80, help="how many renders to measure")
    ap.add_argument("--real", type=Path, default=None, help="real data.yaml (default: ../shared/data/fuji-apple-dev)")
    args = ap.parse_args()

    from pomona.errors import PomonaError
    from pomona.pipeline.recipe import default_real, load_recipe

    real = args.real or default_real()
    if real is None:
        raise SystemExit("error: no real photos found: pass --real DATA_YAML")
    side = int(load_recipe("sim2real")["train"]["imgsz"])
    try:
        real_img, real_apples = collect_real(real, side)
    except PomonaError as e:
        raise SystemExit(f"error: {e}") from None
    ren_img, ren_apples = collect_renders(args.renders, side)
    summary = {
        "size": side, "render_seeds": [RENDER_SEED, RENDER_SEED + args.renders],
        "images": {"real": spread(real_img, IMAGE_STATS), "renders": spread(ren_img, IMAGE_STATS)},
        "apples": {"real": spread(real_apples, APPLE_STATS), "renders": spread(ren_apples, APPLE_STATS)},
        "counts": {"real_images": len(real_img), "real_apples": len(real_apples),
                   "renders": len(ren_img), "rendered_apples": len(ren_apples)},
    }
    c = summary["counts"]
    lines = ["# Renders vs real orchard photos: aggregate image statistics", "",
             f"`python benchmarks/sim2real/image_stats.py --renders {args.renders}`. Each cell: p10 / median / p90. "
             f"Images measured at {side} px (the recipe's training size); apples at full resolution, those of at least 100 px. "
             "Renders span every light the renderer draws (overcast, rain, dusk, flash at night, ...); the dev photos are "
             "sunny days in one orchard, so the renders' ranges should contain the photos', not match them.", "",
             *table("per image", "images", summary["images"]["real"], summary["images"]["renders"], c["real_images"], c["renders"]), "",
             *table("per apple", "apples", summary["apples"]["real"], summary["apples"]["renders"], c["real_apples"], c["rendered_apples"]), ""]
    from pomona.atomic import write_json, write_text

    write_json(HERE / "image_stats.json", summary)
    write_text(HERE / "image_stats.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
