"""Procedural orchard renderer: the embedded, offline image generator with exact masks.

``render(prompt, seed, size, disable)`` -> Scene(image BGR uint8, instances with modal masks,
params); ``render_driveby(out_dir, ...)`` writes a tracked drive-by clip with per-frame ground
truth. ``FAMILIES`` names the randomisation families ``disable`` can switch off.
"""

from .driveby import render_driveby
from .params import FAMILIES, parse_prompt
from .scene import Scene, render

__all__ = ["FAMILIES", "Scene", "parse_prompt", "render", "render_driveby"]
