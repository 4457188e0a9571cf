"""The FastAPI application: ``create_app(settings)``.

The model and the galleries are loaded in the lifespan into ``app.state``; endpoints are
plain ``def`` functions (FastAPI runs them in its thread pool), so ONNX Runtime, FAISS and
image decoding never block the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily

from reidcore import __version__
from service.api import (
    docs_routes,
    gallery_routes,
    health_routes,
    job_routes,
    metrics_routes,
    model_routes,
    view_routes,
)
from service.api.auth import declare_security
from service.api.errors import install_error_handlers, overloaded_response
from service.api.schemas import with_limits
from service.asgi import AuthGate, BodyGuard, BodyLimits
from service.batching import InferenceEngine, MicroBatcher
from service.cpu import limit_numpy_blas
from service.gallery import GalleryBackend, GalleryManager, open_backend
from service.gallery.attribute_search import ColumnWarmup
from service.gallery.blobs import BlobStore, open_blobs
from service.images import set_decoding_pixels
from service.jobs import JobManager, JobState
from service.metrics import AdmissionControl, Metrics, MetricsMiddleware
from service.runtime import ModelRuntime
from service.settings import Settings
from service.web import routes as web_routes

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and open the galleries; close them on shutdown."""
    settings: Settings = app.state.settings
    set_decoding_pixels(settings.max_decoding_pixels)  # one decode pool for the process
    runtime = ModelRuntime.load(settings.model_dir, settings.runtime_options())
    backend = open_backend(settings.backend_config())
    shared_jobs = settings.gallery_backend == "milvus"  # job uploads go to the blob store
    blobs = open_blobs(settings.blob_config()) if settings.crops or shared_jobs else None
    crops = blobs if settings.crops else None
    galleries = GalleryManager(backend, runtime.manifest.model_id, runtime.dim, crops)
    gpus = backend.gpus()  # reported by /readyz
    galleries.open_all()
    metrics: Metrics = app.state.metrics
    runtime.observers.append(metrics.observe_model)
    engine = build_engine(runtime, settings)
    metrics.queue.set_function(lambda: engine.queued_images)
    jobs = build_jobs(settings, galleries, runtime, backend, blobs)
    jobs.start()
    warmup = ColumnWarmup(galleries, runtime.schema) if settings.attribute_warmup else None
    app.state.runtime, app.state.galleries, app.state.faiss_gpus = runtime, galleries, gpus
    app.state.engine, app.state.jobs = engine, jobs
    logger.info("ready: providers %s, %d galleries", runtime.providers, len(galleries.statuses()))
    blas = limit_numpy_blas()  # concurrent requests, not BLAS threads, share the cores
    try:
        yield
    finally:
        app.state.engine = app.state.jobs = None
        if warmup is not None:
            warmup.stop()
        jobs.close()
        engine.close()
        galleries.close()
        if blobs is not None:
            blobs.close()
        app.state.runtime = app.state.galleries = None
        if blas is not None:
            blas.restore_original_limits()


def build_jobs(
    settings: Settings,
    galleries: GalleryManager,
    runtime: ModelRuntime,
    backend: GalleryBackend,
    blobs: BlobStore | None,
) -> JobManager:
    """Bulk-indexing jobs: in the data directory, or shared by every replica (records in
    Milvus, uploads in the blob store, runs under leases) with the Milvus backend."""
    args = (
        settings.data_dir,
        galleries,
        runtime,
        settings.index_config(),
        settings.archive_limits(),
        settings.max_archive_bytes,
    )
    if settings.gallery_backend != "milvus" or blobs is None:
        return JobManager(*args)
    from service.gallery.milvus_store import MilvusBackend
    from service.jobs.leased import LeasedJobManager
    from service.jobs.milvus_jobs import MilvusJobStore

    assert isinstance(backend, MilvusBackend)
    store = MilvusJobStore(backend.client)
    return LeasedJobManager(*args, store, blobs, settings.lease_times())


def build_engine(runtime: ModelRuntime, settings: Settings) -> InferenceEngine:
    """The model behind the endpoints: micro-batched unless ``settings.micro_batching`` is off."""
    batcher = None
    if settings.micro_batching:
        batcher = MicroBatcher(
            runtime.run_batch,
            settings.max_batch,
            settings.batch_max_wait_ms / 1000.0,
            settings.max_queued_images,
        )
    return InferenceEngine(runtime.preprocess, runtime.run_batch, batcher)


def state_metrics(app: FastAPI) -> Iterator[GaugeMetricFamily]:
    """Gallery sizes and job progress, read when /metrics is scraped."""
    galleries: GalleryManager | None = app.state.galleries
    jobs: JobManager | None = app.state.jobs
    items = GaugeMetricFamily("reid_gallery_items", "Items per gallery", labels=["gallery"])
    for s in galleries.statuses() if galleries is not None else []:
        items.add_metric([s.name], s.items)
    yield items
    if jobs is None:
        return
    counts = dict.fromkeys((s.value for s in JobState), 0)
    for j in jobs.recent(1000):
        counts[j.state.value] += 1
    by_state = GaugeMetricFamily("reid_jobs", "Jobs by state (most recent 1000)", labels=["state"])
    for state, n in counts.items():
        by_state.add_metric([state], n)
    yield by_state
    progress = GaugeMetricFamily(
        "reid_job_items", "Progress of unfinished jobs", labels=["job", "gallery", "kind"]
    )
    for j in jobs.store.unfinished():
        for kind, v in (
            ("total", j.total or 0),
            ("added", j.added),
            ("duplicates", j.duplicates),
            ("failed", j.failed),
        ):
            progress.add_metric([j.id, j.gallery, kind], v)
    yield progress


def openapi_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's OpenAPI document (built once) with the limits of ``settings`` in it, and
    which operations need an API key under them."""
    if app.openapi_schema is None:
        maxima = {
            "k": settings.max_k,
            "qe_n": settings.query_tricks_max_n,
            "dba_n": settings.query_tricks_max_n,
        }
        doc = with_limits(FastAPI.openapi(app), maxima, settings.max_images_per_request)
        declare_security(doc, settings, app.state.routes)
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(settings: Settings) -> FastAPI:
    """The service over ``settings.model_dir`` and ``settings.data_dir``."""
    app = FastAPI(
        title="reid",
        version=__version__,
        summary="Person re-identification: attributes, embeddings, gallery search.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from docs_routes, assets served offline
        redoc_url=None,
    )
    metrics = Metrics()
    app.state.settings, app.state.metrics = settings, metrics
    app.state.runtime = app.state.galleries = app.state.engine = app.state.jobs = None
    app.state.faiss_gpus = 0
    metrics.add_state(lambda: state_metrics(app))
    install_error_handlers(app)
    # Outermost last: metrics, then keys (from the headers), then the body, then admission.
    app.add_middleware(
        AdmissionControl,
        limit=settings.max_inflight_requests,
        reject=lambda: overloaded_response(
            f"more than {settings.max_inflight_requests} requests in flight; retry later",
            settings.retry_after_s,
        ),
        on_reject=lambda: metrics.rejected.labels("inflight").inc(),
    )
    routers = [
        health_routes.router,
        metrics_routes.router,
        model_routes.router,
        gallery_routes.router,
        job_routes.router,
        view_routes.router,  # attribute search, trajectory (service/api/view_routes.py)
        web_routes.router,  # the try-it page: GET / and /ui/* (service/web)
        docs_routes.router,  # /docs, /redoc and their assets, no CDN
    ]
    routes = [route for router in routers for route in router.routes]  # full paths
    app.state.routes = routes  # FastAPI keeps included routers nested in app.routes
    app.openapi = lambda: openapi_document(app, settings)  # type: ignore[method-assign]
    app.add_middleware(
        BodyGuard,
        limits=BodyLimits.from_settings(settings),
        on_reject=lambda: metrics.rejected.labels("receiving").inc(),
    )
    app.add_middleware(AuthGate, settings=settings, routes=lambda: routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=lambda: routes)
    for router in routers:
        app.include_router(router)
    return app
