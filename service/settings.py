"""Service settings, read from ``REID_*`` environment variables (or passed in directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.gallery import IndexOptions, RerankParams
from service.runtime import RuntimeOptions


class Settings(BaseSettings):
    """Everything ``reid serve`` can be told; ``REID_MODEL_DIR`` etc. in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="REID_", extra="ignore", use_attribute_docstrings=True, frozen=True
    )

    model_dir: Path
    """Model folder holding model.onnx and manifest.json."""
    data_dir: Path
    """Directory of the galleries (created if missing)."""
    host: str = "127.0.0.1"
    """Address ``reid serve`` binds to."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port ``reid serve`` listens on."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Execution device for ONNX Runtime and FAISS: auto uses CUDA when available."""
    threads: int = Field(default=0, ge=0)
    """ONNX Runtime intra-op threads (0: one per core)."""
    model_variant: str | None = None
    """Manifest variant to serve instead of the default file (e.g. int8)."""
    max_batch: int = Field(default=32, ge=1)
    """Images per ONNX Runtime run."""
    max_request_bytes: int = Field(default=16 * 2**20, ge=1024)
    """Largest request body accepted (413 above)."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    """Largest decoded image (width x height) accepted; guards against decompression bombs."""
    max_images_per_request: int = Field(default=64, ge=1)
    """Most images in one embed or add-items request."""
    max_k: int = Field(default=1000, ge=1)
    """Largest ``k`` a search may ask for."""
    max_metadata_bytes: int = Field(default=16384, ge=2)
    """Largest JSON metadata per item."""
    index_kind: Literal["flat", "ivf", "hnsw"] = "flat"
    """Index of new and reopened galleries: flat (exact), ivf or hnsw."""
    ivf_nlist: int = Field(default=1024, ge=1)
    """IVF lists."""
    ivf_nprobe: int = Field(default=32, ge=1)
    """IVF lists probed per query."""
    hnsw_m: int = Field(default=32, ge=2)
    """HNSW graph degree."""
    hnsw_ef_search: int = Field(default=128, ge=1)
    """HNSW search breadth."""
    rerank_shortlist: int = Field(default=100, ge=2)
    """Candidates re-ranked when a search asks for re-ranking."""
    rerank_k1: int = Field(default=20, ge=1)
    """k-reciprocal re-ranking k1."""
    rerank_k2: int = Field(default=6, ge=1)
    """k-reciprocal re-ranking k2."""
    rerank_lambda: float = Field(default=0.3, ge=0.0, le=1.0)
    """Weight of the original distance in the re-ranked distance."""

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(
            threads=self.threads,
            device=self.device,
            variant=self.model_variant,
            max_batch=self.max_batch,
        )

    def index_options(self, gpus: int) -> IndexOptions:
        """Index options; flat indexes go to the GPU when ``gpus > 0`` and device allows."""
        return IndexOptions(
            kind=self.index_kind,
            use_gpu=gpus > 0 and self.device != "cpu",
            ivf_nlist=self.ivf_nlist,
            ivf_nprobe=self.ivf_nprobe,
            hnsw_m=self.hnsw_m,
            hnsw_ef_search=self.hnsw_ef_search,
        )

    def rerank_params(self) -> RerankParams:
        return RerankParams(
            shortlist=self.rerank_shortlist,
            k1=self.rerank_k1,
            k2=self.rerank_k2,
            lambda_value=self.rerank_lambda,
        )
