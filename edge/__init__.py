"""Stage 3: the runtime on the robot (numpy, OpenCV, ONNX Runtime or TensorRT; no torch).

``from pomona.edge import Predictor`` is resolved lazily, so ``pomona.edge.commands`` (loaded by the
CLI for every command) stays import-light.
"""

from __future__ import annotations

__all__ = ["Predictor", "AppleTracker", "draw_instances", "ModelInfo"]


def __getattr__(name: str):
    if name == "Predictor":
        from pomona.edge.predictor import Predictor

        return Predictor
    if name == "AppleTracker":
        from pomona.edge.tracking import AppleTracker

        return AppleTracker
    if name == "draw_instances":
        from pomona.edge.draw import draw_instances

        return draw_instances
    if name == "ModelInfo":
        from pomona.edge.metadata import ModelInfo

        return ModelInfo
    raise AttributeError(f"module 'pomona.edge' has no attribute {name!r}")
