"""Service settings, read from ``REID_*`` environment variables (or passed in directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.gallery import BackendConfig, IndexOptions, MilvusOptions, RerankParams
from service.gallery.blobs import BlobConfig
from service.gallery.crops import CropConfig
from service.jobs import ArchiveLimits, IndexConfig
from service.jobs.leased import LeaseTimes
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
    """Images per ONNX Runtime run; also the largest micro-batch gathered from concurrent requests."""
    micro_batching: bool = True
    """Gather the images of concurrent requests into one model run (false: one run per request)."""
    batch_max_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    """Longest a request waits for others to fill its micro-batch, in milliseconds."""
    max_queued_images: int = Field(default=256, ge=1)
    """Images waiting for the model past which requests are refused with 429 (micro-batching on)."""
    max_inflight_requests: int = Field(default=64, ge=1)
    """Concurrent /v1 requests past which new ones are refused at once with 429 and Retry-After."""
    retry_after_s: int = Field(default=1, ge=0)
    """Retry-After (seconds) sent with 429 answers."""
    body_read_timeout_s: float = Field(default=20.0, gt=0.0, le=3600.0)
    """Longest wait for the next part of a request body, and the grace before the minimum rate
    counts (408 and the connection closed past it): stalled clients are dropped."""
    body_min_rate: float = Field(default=8192.0, gt=0.0)
    """Bytes per second a request body must average after that grace (408 below it)."""
    max_receiving_requests: int = Field(default=128, ge=1)
    """Request bodies being received at once, counted apart for keyed and keyless requests,
    past which new ones get 429; requests count as in flight only once their body is in."""
    auth_mode: Literal["none", "write", "all"] = "none"
    """API keys: none (open), write (keys for endpoints that change galleries or jobs) or all (keys
    for every /v1 endpoint). /healthz and /readyz are always open."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Accepted API keys, comma-separated (sent as ``Authorization: Bearer KEY`` or ``X-API-Key``)."""
    metrics_public: bool = True
    """Serve /metrics without a key (it holds counts, latencies and gallery names, never items);
    false: /metrics needs a key whenever auth_mode is not none."""
    max_archive_bytes: int = Field(default=2 * 2**30, ge=1024)
    """Largest archive upload for a bulk-indexing job (other requests: max_request_bytes)."""
    archive_max_members: int = Field(default=200_000, ge=1)
    """Most files in one bulk-indexing archive or folder."""
    archive_max_member_bytes: int = Field(default=16 * 2**20, ge=1)
    """Largest file inside an archive; bigger ones are reported as failed, never read whole."""
    archive_max_total_bytes: int = Field(default=8 * 2**30, ge=1)
    """Largest total (uncompressed) size of an archive's files: zip-bomb guard."""
    archive_max_manifests: int = Field(default=64, ge=0)
    """Most manifest.csv/manifest.json files in one bulk-indexing archive or folder."""
    archive_max_manifest_bytes: int = Field(default=16 * 2**20, ge=0)
    """Largest total size of an archive's manifests (each is parsed as soon as it is read)."""
    index_batch_size: int = Field(default=32, ge=1)
    """Images per model run in bulk indexing (jobs and reid index)."""
    index_workers: int = Field(default=0, ge=0)
    """Bulk-indexing threads, each decoding a batch and running the model on it (0: one per core)."""
    index_fps: float = Field(default=25.0, gt=0.0)
    """Frame rate turning Market-1501/Duke frame numbers in file names into timestamps (seconds)."""
    max_request_bytes: int = Field(default=16 * 2**20, ge=1024)
    """Largest request body accepted (413 above)."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    """Largest decoded image (width x height) accepted; guards against decompression bombs."""
    max_request_pixels: int = Field(default=2**27, ge=1)
    """Largest sum of the images' pixels (width x height, from their headers) in one request:
    over it the request is refused with 413 before anything is decoded."""
    max_decoding_pixels: int = Field(default=2 * 4096 * 4096, ge=1)
    """Most pixels (width x height, from the headers) being decoded at once in the whole
    process: concurrent requests of huge images wait for each other instead of adding up in
    memory (an image larger than this is decoded alone)."""
    max_images_per_request: int = Field(default=64, ge=1)
    """Most images in one embed or add-items request."""
    max_k: int = Field(default=1000, ge=1)
    """Largest ``k`` a search may ask for."""
    max_metadata_bytes: int = Field(default=16384, ge=2)
    """Largest JSON metadata per item."""
    trajectory_min_score: float = Field(default=0.5, ge=-1.0, le=1.0)
    """Cosine score a match needs to appear in a trajectory view when the request gives no
    ``min_score``."""
    attribute_warmup: bool = True
    """Read every open gallery's stored attribute predictions into memory in the background
    at start (else the first attribute search or ``attributes`` filter of a gallery does it
    while it waits: tens of seconds at 100k items on 2 cores)."""
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
    rerank_mode: Literal["exact", "shortlist"] = "exact"
    """exact: the full algorithm's distances on query + whole gallery (neighbour lists built on
    a gallery's first re-ranked search, then kept current); shortlist: the algorithm on query +
    shortlist alone (no extra memory, lower fidelity). Filtered searches use shortlist."""
    rerank_k1: int = Field(default=20, ge=1)
    """k-reciprocal re-ranking k1."""
    rerank_k2: int = Field(default=6, ge=1)
    """k-reciprocal re-ranking k2."""
    rerank_lambda: float = Field(default=0.3, ge=0.0, le=1.0)
    """Weight of the original distance in the re-ranked distance."""
    local_distance_shortlist: int = Field(default=100, ge=1)
    """Candidates (top by global score) re-scored by a ``local_distance`` search."""
    local_distance_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    """Weight of AlignedReID's local distance in ``global + weight * local`` (1: the paper's
    sum, Sec. 3.1, as ``reid evaluate --local-distance``)."""
    query_tricks_shortlist: int = Field(default=200, ge=1)
    """Candidates re-scored when a search asks for qe_n, dba_n or camera_norm."""
    query_tricks_max_n: int = Field(default=10, ge=1)
    """Largest qe_n / dba_n a search may ask for."""
    gallery_backend: Literal["local", "milvus"] = "local"
    """Where galleries live: local (SQLite files + in-memory index in data_dir, one machine) or
    milvus (a Milvus server or cluster shared by several replicas; Milvus Lite for one process)."""
    milvus_uri: str = ""
    """Milvus address (http://host:19530), or a file path for Milvus Lite in-process; empty:
    Milvus Lite at <data_dir>/milvus.db."""
    milvus_token: SecretStr = SecretStr("")
    """Milvus credentials: user:password or an API key (empty: none)."""
    milvus_db: str = ""
    """Milvus database of the galleries (empty: the server's default database)."""
    milvus_index_type: Literal["FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ"] = "FLAT"
    """Index of new Milvus gallery collections (FLAT exact; HNSW or IVF on a cluster)."""
    milvus_index_params: dict[str, Any] = Field(default_factory=dict)
    """Index build parameters as JSON, e.g. {"M": 32, "efConstruction": 200}."""
    milvus_search_params: dict[str, Any] = Field(default_factory=dict)
    """Index search parameters as JSON, e.g. {"ef": 128} or {"nprobe": 32}."""
    milvus_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = "Strong"
    """Consistency of Milvus reads: Strong makes an item acknowledged by any replica visible to
    the next search on every replica; Session only within one replica."""

    crops: bool = True
    """Keep a crop (JPEG thumbnail) with every new gallery item, served at
    /v1/galleries/{g}/items/{id}/image and re-embedded by a re-index after a model upgrade."""
    crop_width: int = Field(default=0, ge=0, le=4096)
    """Thumbnail width to cover (the smallest downscale at least this wide and crop_height
    high, aspect kept, never upscaled); 0: the model's input width, so that a re-index
    embeds what the original would give."""
    crop_height: int = Field(default=0, ge=0, le=4096)
    """Thumbnail height to cover; 0: the model's input height."""
    crop_jpeg_quality: int = Field(default=90, ge=1, le=95)
    """JPEG quality of the thumbnails."""
    crop_keep_original: bool = False
    """Also keep each item's uploaded bytes as they came (GET .../image?original=true; a
    re-index then embeds the original)."""
    crop_cache_max_age_s: int = Field(default=86400, ge=0)
    """Cache-Control max-age of served crops (a crop's bytes never change; its ETag is
    checked with If-None-Match)."""
    blob_backend: Literal["file", "s3"] = "file"
    """Where crops live: file (<data_dir>/blobs, one machine) or s3 (an S3-compatible object
    store such as MinIO, when several replicas share galleries)."""
    s3_endpoint_url: str = ""
    """S3 endpoint, e.g. http://minio:9000 (empty: AWS S3)."""
    s3_bucket: str = "reid-crops"
    """Bucket of the crops (created when missing)."""
    s3_prefix: str = ""
    """Key prefix of the crops inside the bucket (empty: none)."""
    s3_region: str = "us-east-1"
    """S3 region."""
    s3_access_key_id: str = ""
    """S3 access key id (empty: boto3's usual credential chain)."""
    s3_secret_access_key: SecretStr = SecretStr("")
    """S3 secret access key."""
    blob_dir: str = ""
    """Folder of the file blob store (crops; with the Milvus backend also job uploads); empty:
    <data_dir>/blobs. Replicas on one machine sharing galleries point at one folder."""
    job_lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    """Milvus backend: how long a replica holds a running job without renewing its lease
    (renewed 4 times per lease); a killed replica's job is resumed by another this long after."""
    job_poll_s: float = Field(default=5.0, gt=0.0, le=600.0)
    """Milvus backend: how often an idle replica looks for queued jobs and expired leases."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @model_validator(mode="after")
    def _keys_when_needed(self) -> Settings:
        if self.auth_mode != "none" and not self.api_keys:
            raise ValueError(f"auth_mode={self.auth_mode!r} needs at least one key in api_keys")
        return self

    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_members=self.archive_max_members,
            max_member_bytes=self.archive_max_member_bytes,
            max_total_bytes=self.archive_max_total_bytes,
            max_manifests=self.archive_max_manifests,
            max_manifest_bytes=self.archive_max_manifest_bytes,
            max_metadata_bytes=self.max_metadata_bytes,
        )

    def index_config(self) -> IndexConfig:
        return IndexConfig(
            batch_size=self.index_batch_size,
            workers=self.index_workers,
            max_image_pixels=self.max_image_pixels,
            fps=self.index_fps,
            crop=self.crop_config(),
        )

    def crop_config(self) -> CropConfig | None:
        """How crops are made; None when crops are not kept."""
        if not self.crops:
            return None
        return CropConfig(
            width=self.crop_width,
            height=self.crop_height,
            quality=self.crop_jpeg_quality,
            keep_original=self.crop_keep_original,
        )

    def blob_config(self) -> BlobConfig:
        """Where crops are kept."""
        return BlobConfig(
            kind=self.blob_backend,
            root=Path(self.blob_dir) if self.blob_dir else self.data_dir / "blobs",
            endpoint_url=self.s3_endpoint_url,
            bucket=self.s3_bucket,
            prefix=self.s3_prefix,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key.get_secret_value(),
        )

    def lease_times(self) -> LeaseTimes:
        """How replicas share bulk-indexing jobs (Milvus backend)."""
        return LeaseTimes(lease_s=self.job_lease_s, poll_s=self.job_poll_s)

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(
            threads=self.threads,
            device=self.device,
            variant=self.model_variant,
            max_batch=self.max_batch,
        )

    def index_options(self) -> IndexOptions:
        """The local engine's index; flat indexes go to a GPU when FAISS has one and device allows."""
        return IndexOptions(
            kind=self.index_kind,
            use_gpu=self.device != "cpu",
            ivf_nlist=self.ivf_nlist,
            ivf_nprobe=self.ivf_nprobe,
            hnsw_m=self.hnsw_m,
            hnsw_ef_search=self.hnsw_ef_search,
        )

    def backend_config(self) -> BackendConfig:
        """The gallery storage engine these settings name."""
        return BackendConfig(
            kind=self.gallery_backend,
            data_dir=self.data_dir,
            index=self.index_options(),
            milvus=MilvusOptions(
                uri=self.milvus_uri,
                token=self.milvus_token.get_secret_value(),
                db_name=self.milvus_db,
                index_type=self.milvus_index_type,
                index_params=dict(self.milvus_index_params),
                search_params=dict(self.milvus_search_params),
                consistency=self.milvus_consistency,
            ),
        )

    def rerank_params(self) -> RerankParams:
        return RerankParams(
            shortlist=self.rerank_shortlist,
            mode=self.rerank_mode,
            k1=self.rerank_k1,
            k2=self.rerank_k2,
            lambda_value=self.rerank_lambda,
        )
