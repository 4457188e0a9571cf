"""Numpy-only code shared by training, export and the service.

Nothing here imports torch, FAISS or ONNX Runtime: the service image imports this
package without PyTorch, and training imports it for evaluation.
"""

__version__ = "0.1.0"
