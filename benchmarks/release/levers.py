"""Levers that need no training: weight soups of the release candidates, and the input size at evaluation.

    python benchmarks/release/levers.py [--runs runs/levers]

Each lever is one fixed recipe decided before looking at the real photos, scored once on them (and on held-out
renders where that says something), never chosen per image:
- soups (Wortsman et al. 2022): the uniform weight average of the shipped v2 and the release chunks trained
  from it (pipeline/average.py averages checkpoints); fine-tunes of one base that land in one basin average
  into a model that is often more robust than any of them;
- input size: the shipped model evaluated at 512 px instead of the 416 it was trained at (the dev photos are
  1024 px tiles whose small apples shrink below a dozen pixels at 416).

Evaluations are cached per lever in RUNS/<lever>/metrics.json, so a rerun only fills in what is missing.
Writes levers.md beside this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REAL = ROOT.parent / "shared" / "data" / "fuji-apple-dev" / "data.yaml"
V2 = ROOT / "runs" / "v2" / "pomona-apple-n.pt"  # v2 as it shipped (v3 replaced it in the package), restored by:
RESTORE_V2 = "git show 8353244:pomona/models/pomona-apple-n/pomona-apple-n.pt > runs/v2/pomona-apple-n.pt"
CHUNK_R12 = ROOT / "runs" / "release" / "pomona-apple-n-v2" / "chunk-1" / "weights" / "best.pt"
CHUNK_R13 = ROOT / "runs" / "release" / "pomona-apple-n-v2-r13" / "chunk-1" / "weights" / "best.pt"
# held-out renders: renderer 13, seeds 4000-4799, which v2 never saw (its card: seeds 1000-2599, 3000-3799)
HELD_OUT = ROOT / "runs" / "release" / "pomona-apple-n-v2-r13" / "chunk-1" / "data" / "data.yaml"

SOUPS = {  # name -> (what, checkpoints)
    "soup of v2 and both chunks": [V2, CHUNK_R12, CHUNK_R13],
    "soup of v2 and the renderer-13 chunk": [V2, CHUNK_R13],
    "soup of the two chunks": [CHUNK_R12, CHUNK_R13],
}


def scored(runs: Path, key: str, weights: Path, data: Path, imgsz: int) -> dict:
    from pomona.pipeline.evaluate import evaluate_model

    cached = runs / key / "metrics.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    return evaluate_model(weights, data, imgsz=imgsz, out=runs / key, grid_images=0)


def soup(runs: Path, name: str, parts: list[Path]) -> Path:
    from pomona.pipeline.average import average_checkpoints

    out = runs / (name.replace(" ", "-") + ".pt")
    return out if out.is_file() else average_checkpoints(parts, out)




def row(label: str, real: dict, synthetic: dict | None, base: dict) -> str:
    m, b = real["mask"], real["box"]
    syn = f"{synthetic['mask']['map50']:.3f}" if synthetic else "-"
    delta = m["map50"] - base["mask"]["map50"]
    return (f"| {label} | {m['map50']:.3f} | {delta:+.3f} | {b['map50']:.3f} | {m['precision']:.3f} / {m['recall']:.3f} "
            f"| {syn} |")


def main() -> None:
    from pomona.pipeline.recipe import load_recipe

    noise = float(load_recipe("release")["noise"])  # the release gate's measured noise
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "levers")
    runs = ap.parse_args().runs
    for needed in (V2, CHUNK_R12, CHUNK_R13, HELD_OUT):
        if not needed.is_file():
            raise SystemExit(f"error: {needed.relative_to(ROOT)} not found: this study needs v2 and its release chunks "
                             f"(v2: `{RESTORE_V2}`)")
    runs.mkdir(parents=True, exist_ok=True)
    base = scored(runs, "v2-real-416", V2, REAL, 416)
    results = [("v2 as shipped (416 px)", base, scored(runs, "v2-held-out-416", V2, HELD_OUT, 416))]
    for name, parts in SOUPS.items():
        weights = soup(runs, name, parts)
        results.append((f"{name} (416 px)", scored(runs, f"{name.replace(' ', '-')}-real", weights, REAL, 416), None))
    results.append(("v2 evaluated at 512 px", scored(runs, "v2-real-512", V2, REAL, 512),
                    scored(runs, "v2-held-out-512", V2, HELD_OUT, 512)))
    rows = [row(label, real, syn, base) for label, real, syn in results]
    winners = [label for label, real, _ in results[1:] if real["mask"]["map50"] - base["mask"]["map50"] > noise]
    lines = [
        "# Levers without training: weight soups and input size",
        "",
        "`python benchmarks/release/levers.py`: each lever is a fixed recipe, scored once on the 144 real dev photos "
        "(never selected per image) and, where it says something, on held-out renders (the val split, 80 images, "
        "of the renderer-13 chunk: seeds 4000-4799, which v2 never saw). The chunks are the two release candidates of "
        "`results.md` (v2 + 800 renders, 6 epochs; renderer 12 and renderer 13).",
        "",
        "| model | real mask mAP50 | vs v2 | real box mAP50 | real mask P / R | held-out renders mask mAP50 |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Levers ahead of v2 on the real photos by more than the gate's noise ({noise}): "
        f"{', '.join(winners) if winners else 'none'}.",
    ]
    (HERE / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
