"""Stage: split datasets into train/val/test by source group and write data.yaml.

Near-duplicates (augmented copies, frames of one video, images from one seed group) share a
``group`` in the manifest and always land in the same split; the paper split images one by one,
so copies of one scene leaked into its test set.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pomona import atomic
from pomona.dataset import label_path, list_images, read_manifest, write_data_yaml
from pomona.errors import PomonaError

SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    data_yaml: Path
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = ", ".join(f"{s} {self.counts.get(s, 0)} images / {self.groups.get(s, 0)} groups" for s in SPLITS)
        return f"{parts} -> {self.data_yaml}"


def source_groups(dataset: Path) -> dict[Path, str]:
    """image path -> source group (from the manifest; the file stem where the manifest says nothing)."""
    by_file = {r.get("file"): r for r in read_manifest(dataset)}
    out = {}
    for img in list_images(dataset):
        rec = by_file.get(f"images/{img.name}", {})
        out[img] = f"{dataset.resolve()}::{rec.get('group') or img.stem}"
    return out


def assign_groups(groups: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """Shuffle groups with ``seed`` and cut them into splits (at least one group for a non-zero fraction)."""
    order = sorted(set(groups))
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    n_val = min(n, max(1, math.floor(val * n + 0.5))) if val > 0 else 0
    n_test = min(n - n_val, max(1, math.floor(test * n + 0.5))) if test > 0 else 0
    if n - n_val - n_test < 1:
        raise PomonaError(f"only {n} source groups: not enough for val={val} test={test} and a train split")
    out = {g: "val" for g in order[:n_val]}
    out.update({g: "test" for g in order[n_val:n_val + n_test]})
    out.update({g: "train" for g in order[n_val + n_test:]})
    return out


def split(datasets: list[Path], val: float = 0.1, test: float = 0.0, seed: int = 0, out: Path | None = None) -> SplitReport:
    datasets = [Path(d) for d in datasets]
    if not datasets:
        raise PomonaError("give at least one dataset folder")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise PomonaError(f"--val and --test must be fractions in [0, 1) with val + test < 1, got {val}, {test}")
    if len(datasets) > 1 and out is None:
        raise PomonaError("several datasets: pass --out FOLDER for the combined data.yaml")
    image_groups: dict[Path, str] = {}
    for ds in datasets:
        groups = source_groups(ds)
        if not any(label_path(img).exists() for img in groups):
            raise PomonaError(f"{ds} has no labels; run `pomona annotate {ds}` first")
        image_groups.update(groups)
    assignment = assign_groups(list(image_groups.values()), val, test, seed)

    lists: dict[Path, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for img, group in image_groups.items():
        ds = img.parent.parent
        lists[ds][assignment[group]].append(f"./images/{img.name}")
    yaml_splits: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for ds, per_split in lists.items():
        for s in SPLITS:
            txt = ds / f"{s}.txt"
            lines = sorted(per_split.get(s, []))
            if lines:
                atomic.write_text(txt, "\n".join(lines) + "\n")
                yaml_splits[s].append(str(txt.resolve()) if len(datasets) > 1 else txt.name)
                counts[s] += len(lines)
            elif txt.exists():
                txt.unlink()  # a stale list from an earlier split must not survive
    groups_per_split = defaultdict(int)
    for s in assignment.values():
        groups_per_split[s] += 1
    if "val" not in yaml_splits:  # Ultralytics needs a val entry; validating on train is said out loud
        yaml_splits["val"] = yaml_splits["train"]
    target = Path(out) if out else datasets[0]
    target.mkdir(parents=True, exist_ok=True)
    splits = {s: (v if len(v) > 1 else v[0]) for s, v in yaml_splits.items()}
    comment = (f"written by pomona split (seed {seed}, val {val}, test {test}); split by source group"
               + ("" if val > 0 else "\nval = train: no validation split was asked for"))
    yaml_path = write_data_yaml(target / "data.yaml", splits, comment=comment)
    return SplitReport(yaml_path, dict(counts), dict(groups_per_split))
