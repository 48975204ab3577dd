"""PyTorch -> ONNX with Ultralytics' exporter, FP16 verified by dtype, pomona metadata embedded."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from pomona.edge.metadata import METADATA_KEY, ModelInfo, current_version, info_from_ultralytics_props
from pomona.errors import PomonaError, first_line
from pomona.pipeline.weights import load_yolo

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto data types


def initializer_dtypes(path: Path) -> Counter:
    """How many weight tensors of each ONNX data type the file holds (the ground truth for FP16)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(int(t.data_type) for t in model.graph.initializer)


def is_fp16(path: Path) -> bool:
    """True when the float weights are stored as float16 (a few float32 constants may remain)."""
    counts = initializer_dtypes(path)
    return counts[FLOAT16] > counts[FLOAT]


def convert_to_fp16(path: Path) -> None:
    """FP32 -> FP16 weights in place, inputs/outputs kept float32 (so the runtime needs no change)."""
    import onnx
    from onnxruntime.transformers import float16

    model = onnx.load(str(path))
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(path))


def export_onnx(weights: Path, out: Path, half: bool = False, dynamic: bool = False, imgsz: int | None = None,
                verbose: bool = False) -> tuple[Path, ModelInfo]:
    """Export ``weights`` to ``out`` (ONNX), verify precision, embed pomona metadata; returns (path, info)."""
    model = load_yolo(weights, "segmentation", task="segment")  # one-line errors: missing, not a checkpoint, detect
    train_args = getattr(model.model, "args", {}) or {}
    if imgsz is None:
        imgsz = int(train_args.get("imgsz", 640)) if isinstance(train_args, dict) else 640
    # Ultralytics writes next to the weights; export from a scratch copy so a read-only model folder works
    # and a half-written file never lands beside the user's weights.
    with tempfile.TemporaryDirectory(prefix="pomona-export-") as tmp:
        src = Path(tmp) / (out.stem + ".pt")
        shutil.copyfile(weights, src)
        tmp_model = load_yolo(src, "segmentation", task="segment")
        precision = {"quantize": 16} if half else {}  # Ultralytics >= 8.4 spells FP16 `quantize=16` (was half=True)
        try:
            with _quiet_ultralytics(verbose):
                produced = tmp_model.export(format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=True, batch=1,
                                            device="cpu", **precision)
        except Exception as e:
            raise PomonaError(f"ONNX export of {weights} failed: {first_line(e)}") from None
        produced = Path(produced)
        if half and not is_fp16(produced):
            # Older Ultralytics only halves on a GPU; convert the weights ourselves and check again.
            convert_to_fp16(produced)
        if half and not is_fp16(produced):
            raise PomonaError(f"FP16 export of {weights} produced float32 weights; conversion failed")
        info = _embed_metadata(produced, weights, half, dynamic)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), str(out))
    return out, info


@contextlib.contextmanager
def _quiet_ultralytics(verbose: bool):
    """Ultralytics logs its export chatter to stdout; keep stdout for our result (e.g. --json)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if not verbose:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def _embed_metadata(path: Path, weights: Path, half: bool, dynamic: bool) -> ModelInfo:
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    base = info_from_ultralytics_props(props)
    if "names" not in base or "imgsz" not in base:
        raise PomonaError(f"the exported ONNX for {weights} lacks Ultralytics' names/imgsz metadata")
    info = ModelInfo(
        names={int(k): str(v) for k, v in base["names"].items()},
        imgsz=tuple(int(v) for v in base["imgsz"]),
        stride=int(base.get("stride", 32)),
        task=base.get("task", "segment"),
        precision="fp16" if half else "fp32",
        dynamic=dynamic,
        batch=int(base.get("batch", 1)),
        pomona_version=current_version(),
        extra={"source": weights.name, "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "format": "onnx"},
    )
    save_with_metadata(model, info, path)
    return info


def save_with_metadata(model, info, path: Path) -> None:
    """Save an ONNX model with ``info`` as its (single) pomona metadata entry."""
    import onnx

    for p in list(model.metadata_props):
        if p.key == METADATA_KEY:
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.save(model, str(path))
