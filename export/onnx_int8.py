"""FP32 ONNX -> INT8 ONNX for CPUs: ONNX Runtime static quantization (QDQ, per-channel weights).

Activation ranges are calibrated on synthetic images from a ``pomona generate`` folder only (the
same rule as TensorRT INT8), pre-processed exactly as the runtime does (letterbox + blob).
The box/score decode at the end of the detection head (DFL, anchors, sigmoid, concat) stays in
float: it mixes pixel coordinates (0..imgsz) and scores (0..1) in one tensor, and a single uint8
scale for both wipes out the scores. The convolutions, where the time goes, are all quantized.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pomona.edge.metadata import from_onnx_props
from pomona.errors import PomonaError

CALIB_IMAGES = 64  # enough for stable min/max ranges of a YOLO-n; each costs one FP32 inference


def decode_tail(model) -> list[str]:
    """Nodes between the last convolutions and the detection output (the rank-3 one), to keep in float.

    Walks back from the detection output through every node that is not a Conv; the walk stops at
    the convolutions, so the head's convs (and everything before them) are still quantized.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in model.graph.output}
    detection = [name for name, rank in ranks.items() if rank == 3]
    if len(model.graph.output) != 2 or len(detection) != 1:
        raise PomonaError("INT8 quantization expects a YOLO segmentation ONNX (a detection and a prototype output)")
    tail, stack, seen = [], [detection[0]], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        tail.append(node.name)
        stack.extend(node.input)
    return tail


class _SyntheticImages:
    """onnxruntime CalibrationDataReader over letterboxed synthetic frames (one per batch)."""

    def __init__(self, images: list[Path], input_name: str, input_hw: tuple[int, int]):
        self.images, self.input_name, self.input_hw = list(images), input_name, input_hw
        self._it = iter(self.images)
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.images), desc="int8 calibration", unit="img", leave=False)
        except ImportError:  # tqdm is optional at the edge
            self._bar = None

    def get_next(self) -> dict | None:
        from pomona.dataset import read_image
        from pomona.edge.processing import letterbox, to_blob

        path = next(self._it, None)
        if path is None:
            if self._bar is not None:
                self._bar.close()
            return None
        if self._bar is not None:
            self._bar.update()
        return {self.input_name: np.ascontiguousarray(to_blob(letterbox(read_image(path), self.input_hw)[0]))}

    def rewind(self) -> None:
        self._it = iter(self.images)


def quantize_int8(fp32_onnx: Path, out: Path, calib: Path, max_images: int = CALIB_IMAGES) -> Path:
    """Quantize ``fp32_onnx`` (a pomona FP32 export) into ``out``; pomona metadata says precision int8."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pomona.export.tensorrt_engine import calibration_images

    images = calibration_images(calib)[:max_images]
    sess = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    info = from_onnx_props(sess.get_modelmeta().custom_metadata_map, str(fp32_onnx))
    inp = sess.get_inputs()[0]
    del sess
    if info.precision != "fp32":
        raise PomonaError(f"INT8 quantization starts from an FP32 ONNX, {fp32_onnx.name} is {info.precision}")
    if info.dynamic:
        raise PomonaError("--int8 ONNX needs a static input size (drop --dynamic): ranges are calibrated at one size")
    with tempfile.TemporaryDirectory(prefix="pomona-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + constant folding first, as ORT recommends before static quantization
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        keep_float = decode_tail(onnx.load(str(prepared)))
        quantize_static(str(prepared), str(out), _SyntheticImages(images, inp.name, tuple(info.imgsz)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep_float)
    model = onnx.load(str(out))
    info.precision = "int8"
    info.extra = {**info.extra, "calibration": f"{len(images)} synthetic images from {Path(calib).name}",
                  "float_nodes": len(keep_float)}
    from pomona.export.onnx_export import save_with_metadata

    save_with_metadata(model, info, out)
    return out
