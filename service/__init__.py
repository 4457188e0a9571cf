"""The retrieval service (FastAPI + ONNX Runtime + FAISS). Never imports torch or training."""
