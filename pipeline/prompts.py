"""Text prompts shared by every generator backend (procedural renderer and diffusers).

One prompt per line in a prompt file; blank lines and ``#`` comments are ignored. The built-in
set follows the paper's style (cultivar, count, distance, occlusion, weather, time of day) and
widens it; image ``i`` uses prompt ``i % len(prompts)``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from pomona.errors import PomonaError

_CULTIVARS = ["red Fuji apples with streaked blush", "bicolour Gala apples", "green Granny Smith apples",
              "yellow Golden Delicious apples", "red and yellow Honeycrisp apples", "pale pink Fuji apples"]
_SCENES = [
    "on a tree in a commercial orchard, sunny midday, 1 m away, partly hidden by leaves",
    "in a dense canopy, overcast, 2 m away, many apples in clusters",
    "on a branch, backlit by the low sun, close-up 0.5 m away",
    "on trellised trees in a row, bright daylight, 3 m away, far apples",
    "on a tree at dusk, warm light, 1.5 m away, heavily occluded by leaves and branches",
    "on a tree at night lit by a camera flash, 1 m away",
    "hanging among leaves, light rain, overcast, 1 m away, apples cut by the image border",
]

BUILTIN_PROMPTS: list[str] = [f"{c} {s}" for s, c in itertools.product(_SCENES, _CULTIVARS)]


def load_prompts(path: str | Path | None) -> list[str]:
    """Prompts from a file, or the built-in set when ``path`` is None."""
    if path is None:
        return list(BUILTIN_PROMPTS)
    path = Path(path)
    if not path.is_file():
        raise PomonaError(f"prompt file not found: {path}")
    prompts = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not prompts:
        raise PomonaError(f"prompt file has no prompts: {path}")
    return prompts


def prompt_for(index: int, prompts: list[str]) -> str:
    return prompts[index % len(prompts)]
