"""Stage 2: PyTorch -> ONNX -> TensorRT with a parity check against PyTorch."""
