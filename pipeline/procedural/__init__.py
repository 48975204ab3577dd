"""Procedural orchard renderer: the embedded, offline image generator with exact masks.

``render(prompt, seed, size, disable)`` -> Scene(image BGR uint8, instances with modal masks,
params); ``render_driveby(out_dir, ...)`` writes a tracked drive-by clip with per-frame ground
truth. ``FAMILIES`` names the randomisation families ``disable`` can switch off. With ``pomona generate
--depth`` the same scenes also give aligned depth (a D435-like sensor model, ``depth_noise.py``) and each apple's
3D truth (``depth.py``); the colour images stay bit-identical.
"""

# Raised whenever renders change (a model card records which renderer its images came from). 12: leaf
# structure and milder defocus (12c8f6f), the renderer the sim2real recipe's 0.505 model was trained on.
# 13: deeper canopy shade (sunny dapple up to 0.75), a dimmer, greener fill on shaded apples, 30% green and
# yellow cultivars.
RENDERER_VERSION = 13

from .driveby import render_driveby  # noqa: E402
from .params import FAMILIES, parse_prompt  # noqa: E402
from .scene import Scene, render  # noqa: E402

__all__ = ["FAMILIES", "RENDERER_VERSION", "Scene", "parse_prompt", "render", "render_driveby"]
