"""Stage 2: PyTorch -> ONNX (FP32/FP16/INT8) -> TensorRT, each export parity-checked against its source model."""
