"""Stage 3: the runtime on the robot (numpy, OpenCV, ONNX Runtime or TensorRT; no torch)."""
