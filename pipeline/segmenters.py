"""SAM-family box segmenters behind one registry, like segment-anything's ``sam_model_registry``.

A segmenter encodes an image once (``set_image``) and then turns any number of boxes into masks in
one batched call (``predict``): the paper's notebook re-encoded the image for every box, which
costs the heavy ViT encoder once per apple instead of once per image.

Two families are supported, chosen by the weights' file name:

- Ultralytics SAM weights (``sam2.1_b.pt``, ``sam2_b.pt``, ``sam_b.pt``, ``mobile_sam.pt`` ...),
  through Ultralytics' SAM predictor (its ``set_image`` + ``bboxes=`` prompts);
- Meta's segment-anything checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_*.pth``,
  ``sam_vit_h_*.pth``), through ``segment_anything.SamPredictor`` (``set_image`` once, all boxes in
  one ``predict_torch`` with ``multimask_output=False``).

Custom architectures (tests build a tiny SAM) are added with :func:`register_segmenter`.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from pomona.errors import PomonaError
from pomona.machine import give_ultralytics_every_core
from pomona.pipeline.weights import ULTRALYTICS_ASSETS, describe_load_error, find_weights
from pomona.offline import cache_dir, missing_weights_message

DEFAULT_SEGMENTER = "sam2.1_b.pt"
META_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
BOX_CHUNK = 64  # boxes per decoder call: bounds the (N, H, W) mask memory on crowded images


class BoxSegmenter(Protocol):
    """Encode one image, then segment boxes on it."""

    def set_image(self, image: np.ndarray) -> None:
        """``image``: BGR uint8 (H, W, 3), as read by OpenCV. Runs the image encoder once."""

    def predict(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``boxes``: (N, 4) xyxy pixels of the current image. Returns masks (N, H, W) bool at image
        resolution (row i belongs to box i) and SAM's predicted IoU (N,) float32."""


# --- weights on disk -------------------------------------------------------------------------------


# --- the two families ------------------------------------------------------------------------------


class SegmentAnythingSegmenter:
    """Meta's ``SamPredictor``: one encoder pass per image, boxes decoded in batches."""

    def __init__(self, sam, device: str):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam.to(device).eval())
        self.image_size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="RGB")
        self.image_size = image.shape[:2]

    def predict(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        h, w = self.image_size
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        masks, ious = [], []
        with torch.inference_mode():
            for start in range(0, len(boxes), BOX_CHUNK):
                chunk = torch.as_tensor(boxes[start : start + BOX_CHUNK], device=self.predictor.device)
                chunk = self.predictor.transform.apply_boxes_torch(chunk, (h, w))
                m, iou, _ = self.predictor.predict_torch(None, None, boxes=chunk, multimask_output=False)
                masks.append(m[:, 0].cpu().numpy())
                ious.append(iou[:, 0].float().cpu().numpy())
        return np.concatenate(masks).astype(bool), np.concatenate(ious).astype(np.float32)


class UltralyticsSamSegmenter:
    """Ultralytics' SAM / SAM 2 predictor, used as documented: ``set_image`` then ``bboxes=``."""

    def __init__(self, weights: str, device: str):
        from ultralytics import SAM

        give_ultralytics_every_core()
        model = SAM(weights)
        overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model=weights, device=device,
                         save=False, verbose=False)
        predictor_class = model.task_map["segment"]["predictor"]
        self.predictor = predictor_class(overrides=overrides, _callbacks=model.callbacks)
        self.predictor.setup_model(model=model.model, verbose=False)
        # Ultralytics drops masks whose predicted IoU is under `conf`; keep every box's mask so
        # the detector's confidence and --min-score alone decide what is a label.
        self.predictor.args.conf = -math.inf
        self.image_size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)
        self.image_size = image.shape[:2]

    def predict(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.image_size
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        masks = np.zeros((len(boxes), h, w), bool)
        ious = np.zeros(len(boxes), np.float32)
        for start in range(0, len(boxes), BOX_CHUNK):
            result = self.predictor(bboxes=boxes[start : start + BOX_CHUNK])[0]
            if result.masks is None:
                continue
            # Ultralytics puts the prompt index in the class column: it maps masks back to boxes.
            rows = start + result.boxes.cls.cpu().numpy().astype(int)
            masks[rows] = result.masks.data.cpu().numpy().astype(bool)
            ious[rows] = result.boxes.conf.cpu().numpy()
        return masks, ious


# --- registry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmenterSpec:
    """``pattern``: file-name glob; ``build(weights, device)`` -> BoxSegmenter; ``url``: where to get it."""

    pattern: str
    build: Callable[[Path | str, str], BoxSegmenter]
    family: str
    url: str = ""


SEGMENTERS: dict[str, SegmenterSpec] = {}


def register_segmenter(key: str, pattern: str, build: Callable[[Path | str, str], BoxSegmenter], family: str,
                       url: str = "") -> None:
    """Make weights whose file name matches ``pattern`` load with ``build``."""
    SEGMENTERS[key] = SegmenterSpec(pattern, build, family, url)


def segment_anything_builder(make_sam: Callable[[], "torch.nn.Module"], what: str,
                             url: str = "") -> Callable[[Path | str, str], BoxSegmenter]:
    """A registry builder for a segment-anything ``Sam`` architecture: ``make_sam()`` builds it
    (randomly initialised), then the checkpoint's state dict is loaded into it."""

    def build(weights: Path | str, device: str) -> BoxSegmenter:
        import torch

        if not Path(weights).is_file():  # absent and POMONA_ONLINE=1: fetch the official file
            if not url:
                raise PomonaError(missing_weights_message(str(weights), what))
            weights = _download(url + Path(weights).name)
        try:  # read the file before building the (possibly huge) model: a bad file fails fast
            state = torch.load(weights, map_location="cpu", weights_only=True)
            sam = make_sam()
            sam.load_state_dict(state)
        except Exception as e:  # pickle, zip, key or shape mismatch: all mean "not this checkpoint"
            raise describe_load_error(Path(weights), what, e) from None
        return SegmentAnythingSegmenter(sam, device)

    return build


def _meta_sam(variant: str) -> Callable[[], "torch.nn.Module"]:
    def make():
        from segment_anything import sam_model_registry

        return sam_model_registry[variant](checkpoint=None)

    return make


def _ultralytics_build(weights: Path | str, device: str) -> BoxSegmenter:
    try:
        return UltralyticsSamSegmenter(str(weights), device)
    except Exception as e:
        raise describe_load_error(Path(weights), "Ultralytics SAM", e) from None


def _download(url: str) -> Path:
    import torch

    target = cache_dir() / "weights" / url.rsplit("/", 1)[-1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target))
    return target


for _variant in ("vit_b", "vit_l", "vit_h"):
    register_segmenter(f"sam_{_variant}", f"sam_{_variant}*.pth",
                       segment_anything_builder(_meta_sam(_variant), f"segment-anything {_variant}", META_SAM_URL),
                       "segment-anything", META_SAM_URL)
for _name in ("sam_b.pt", "sam_l.pt", "sam_h.pt", "mobile_sam.pt", "sam2_t.pt", "sam2_s.pt", "sam2_b.pt",
              "sam2_l.pt", "sam2.1_t.pt", "sam2.1_s.pt", "sam2.1_b.pt", "sam2.1_l.pt"):
    # Ultralytics picks the architecture by the file name's ending, so does this pattern.
    register_segmenter(_name, f"*{_name}", _ultralytics_build, "ultralytics", ULTRALYTICS_ASSETS)


def segmenter_spec(name: str | Path) -> SegmenterSpec:
    """The registry entry whose pattern matches the file name of ``name``."""
    filename = Path(name).name
    matches = [spec for spec in SEGMENTERS.values() if fnmatch.fnmatchcase(filename, spec.pattern)]
    if not matches:
        known = ", ".join(key for key in SEGMENTERS)
        raise PomonaError(f"unknown segmenter '{name}': the file name must match a known SAM model ({known})")
    return max(matches, key=lambda spec: len(spec.pattern))  # most specific pattern wins


def resolve_segmenter(name: str | Path = DEFAULT_SEGMENTER) -> tuple[SegmenterSpec, Path | str]:
    """Registry entry and weights file for ``name`` (a bare file name when it is to be downloaded);
    cheap, so callers check every file before any slow model load."""
    spec = segmenter_spec(name)
    weights = find_weights(name, "SAM", spec.url)
    return spec, weights if weights is not None else Path(name).name


def build_segmenter(name: str | Path = DEFAULT_SEGMENTER, device: str = "cpu") -> BoxSegmenter:
    """Resolve ``name`` to a weights file (no downloads unless POMONA_ONLINE=1) and build its predictor."""
    spec, weights = resolve_segmenter(name)
    return spec.build(weights, device)
