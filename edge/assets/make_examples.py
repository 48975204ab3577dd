"""Regenerate the demo's example inputs with pomona's procedural renderer (offline, deterministic).

    .venv/bin/python edge/assets/make_examples.py

Writes three 640x640 orchard stills (JPEG) and a 4 s 640x360 drive-by clip (VP8 WebM: OpenCV's bundled
FFmpeg encodes it and every browser plays it, unlike the renderer's mp4v) next to this file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2

from pomona import atomic
from pomona.pipeline.procedural import render, render_driveby

HERE = Path(__file__).resolve().parent
STILLS = [  # (file name, prompt, seed): three cultivars and lights, 10-20 visible apples each
    ("orchard_fuji_sunny.jpg", "many red fuji apples on a tree, 1.5 m away, sunny, clear view", 5),
    ("orchard_gala_overcast.jpg", "many gala apples in an orchard row, overcast, clear view", 4),
    ("orchard_granny_smith.jpg", "many green granny smith apples, 1 m away, clear view", 5),
]
CLIP = ("driveby.webm", "many fuji apples along an orchard row, 1.5 m away, sunny, clear view", 3, 60)  # 4 s at 15 FPS


def make_stills(out: Path = HERE) -> list[Path]:
    paths = []
    for name, prompt, seed in STILLS:
        scene = render(prompt, seed, size=(640, 640))
        paths.append(atomic.write_image(out / name, scene.image, quality=85))
    return paths


def make_clip(out: Path = HERE) -> Path:
    name, prompt, seed, frames = CLIP
    with tempfile.TemporaryDirectory(prefix="pomona-driveby-") as tmp:
        summary = render_driveby(Path(tmp), frames=frames, seed=seed, size=(640, 360), prompt=prompt)
        cap = cv2.VideoCapture(str(Path(tmp) / "driveby.mp4"))
        target = out / name
        with atomic.atomic_path(target) as part:
            # atomic_path keeps the suffix (.tmp.webm), so FFmpeg picks the WebM container.
            writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"VP80"), summary["fps"], (640, 360))
            if not writer.isOpened():
                raise RuntimeError("OpenCV cannot write VP8 WebM here")
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                writer.write(frame)
            writer.release()
            cap.release()
    return target


def main() -> None:
    for path in [*make_stills(), make_clip()]:
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    sys.exit(main())
