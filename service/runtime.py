"""The model runtime: an ONNX Runtime session over a model folder.

Images go through :mod:`reidcore.preprocess` (the one preprocessing path, parameterised by
the manifest), are batched, run once per batch, and come back as float32 L2-normalised
embeddings plus per-attribute class probabilities in schema order.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import preprocess_batch
from service.cpu import available_cpus
from service.manifest import Manifest, load_manifest, model_path

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class RuntimeOptions:
    """How the ONNX Runtime session is built."""

    threads: int = 0
    """Intra-op threads; 0 means one per CPU core."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu or cuda."""
    variant: str | None = None
    """Manifest variant to load (e.g. int8) instead of the default file."""
    max_batch: int = 32
    """Images per session run; larger requests are split."""


@dataclass
class Inference:
    """The model's answer for a batch of images."""

    embeddings: np.ndarray
    """[N, dim] float32, L2-normalised."""
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    """Attribute name -> [N, num_classes] float32 probabilities, in schema order."""
    local: np.ndarray | None = None
    """[N, H, c] float32 AlignedReID stripe features, when the model has a ``local`` output."""


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers to request, best first, for ``device`` given what is installed."""
    match device:
        case "cpu":
            return [CPU_PROVIDER]
        case "cuda":
            if CUDA_PROVIDER not in available:
                raise ValueError(f"device=cuda but ONNX Runtime offers only {list(available)}")
            return [CUDA_PROVIDER, CPU_PROVIDER]
        case "auto":
            return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
        case _:
            raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = np.asarray(x, dtype=np.float32)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


class ModelRuntime:
    """An ONNX Runtime session plus the manifest that describes it."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        session: Any,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.session = session
        self.options = options or RuntimeOptions()
        self.preprocess = manifest.input.preprocess_config()
        self.schema: AttributeSchema = manifest.attribute_schema
        self._attr_outputs = manifest.attribute_outputs
        self._output_names = [manifest.embedding.output] + [o.name for o in self._attr_outputs]
        local = manifest.local_output
        self._local_output = None if local is None else local.name
        if local is not None:
            self._output_names.append(local.name)
        self.max_batch = self.options.max_batch
        self.observers: list[Callable[[int, float], None]] = []
        """Called after every session run with (images, seconds): metrics hook."""
        self._for_workers: dict[int, ModelRuntime] = {}
        self._for_workers_lock = threading.Lock()

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], options: RuntimeOptions | None = None
    ) -> ModelRuntime:
        """Verify the model folder and open a session on the best available provider."""
        import onnxruntime as ort

        options = options or RuntimeOptions()
        folder = Path(folder)
        manifest = load_manifest(folder, verify=False)
        path = model_path(folder, manifest, options.variant)  # checks the sha256
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.threads or available_cpus()
        so.inter_op_num_threads = 1
        # Spinning intra-op threads steal the CPU from FAISS/numpy in the same process.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(options.device, ort.get_available_providers())
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        runtime = cls(folder, manifest, session, options)
        logger.info(
            "model %s %s loaded from %s on %s (requested %s)",
            manifest.name,
            manifest.version,
            path,
            runtime.providers,
            providers,
        )
        return runtime

    def for_workers(self, workers: int) -> ModelRuntime:
        """The runtime for ``workers`` threads calling :meth:`run_batch` at once.

        On the CPU the answer is a second session (made once, then reused) whose intra-op
        pool is this one's divided among the workers, so that together they use the same
        cores: several intra-op pools on the same cores would stall at every operator,
        waiting for a thread that lost its core to another pool. Concurrent one-thread
        runs also beat one run over every core for small models (each image is little
        work to split), which is what bulk indexing exploits. On CUDA, or for one worker,
        it is this runtime itself. The second session holds its own copy of the weights;
        it shares this runtime's observers.
        """
        total = self.options.threads or available_cpus()
        threads = max(1, total // workers)
        if workers <= 1 or threads == total or CUDA_PROVIDER in self.providers:
            return self
        with self._for_workers_lock:
            runtime = self._for_workers.get(threads)
            if runtime is None:
                options = dataclasses.replace(self.options, threads=threads, device="cpu")
                runtime = ModelRuntime.load(self.folder, options)
                runtime.observers = self.observers
                self._for_workers[threads] = runtime
        return runtime

    @property
    def providers(self) -> list[str]:
        """The providers the session really got (not merely those requested)."""
        return list(self.session.get_providers())

    @property
    def dim(self) -> int:
        return self.manifest.embedding.dim

    def run_batch(self, batch: np.ndarray) -> Inference:
        """Preprocessed float32 [N, 3, H, W] -> :class:`Inference`, split as the model allows."""
        step = self.max_batch if self.manifest.input.dynamic_batch else 1
        parts = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
        if not parts:
            empty = np.zeros((0, self.dim), dtype=np.float32)
            return Inference(
                empty, {a.name: np.zeros((0, a.num_classes), np.float32) for a in self.schema}
            )
        emb = np.concatenate([p.embeddings for p in parts])
        attrs = {
            name: np.concatenate([p.attributes[name] for p in parts])
            for name in parts[0].attributes
        }
        local = [p.local for p in parts if p.local is not None]
        return Inference(emb, attrs, np.concatenate(local) if local else None)

    def infer(self, images: Sequence[Image.Image]) -> Inference:
        """Decoded images -> embeddings and attribute probabilities (one preprocessing path)."""
        return self.run_batch(preprocess_batch(images, self.preprocess))

    def _run(self, batch: np.ndarray) -> Inference:
        t0 = time.perf_counter()
        outs = self.session.run(self._output_names, {self.manifest.input.name: batch})
        seconds = time.perf_counter() - t0
        for observe in self.observers:
            observe(len(batch), seconds)
        emb = np.asarray(outs[0], dtype=np.float32).reshape(len(batch), -1)  # [N, dim]
        if emb.shape[1] != self.dim:
            raise RuntimeError(
                f"model returned embeddings of dim {emb.shape[1]}, manifest says {self.dim}"
            )
        emb = l2_normalize(emb)  # cheap, and guards against exporters that skip it
        attrs: dict[str, np.ndarray] = {}
        for spec, out in zip(
            self._attr_outputs, outs[1 : 1 + len(self._attr_outputs)], strict=True
        ):
            probs = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)  # [N, C]
            attrs[str(spec.attribute)] = probs if spec.probabilities else softmax(probs)
        local = None
        if self._local_output is not None:  # the last output: [N, H, c]
            local = np.asarray(outs[-1], dtype=np.float32)
        return Inference(emb, attrs, local)
