"""Export: checkpoint -> ONNX model folder (model.onnx + manifest.json), verified for parity."""
