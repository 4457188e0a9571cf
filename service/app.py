"""The FastAPI application: ``create_app(settings)``.

The model and the galleries are loaded in the lifespan into ``app.state``; endpoints are
plain ``def`` functions (FastAPI runs them in its thread pool), so ONNX Runtime, FAISS and
image decoding never block the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reidcore import __version__
from service.api import gallery_routes, health_routes, model_routes
from service.api.errors import error_response, install_error_handlers
from service.gallery import GalleryManager
from service.runtime import ModelRuntime
from service.settings import Settings
from service.web import routes as web_routes

logger = logging.getLogger(__name__)


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, "payload_too_large", self._message(int(declared)))
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413, self._message(received))
            return message

        await self.app(scope, counting_receive, send)

    def _message(self, size: int) -> str:
        return f"request body of {size} bytes or more is over the limit of {self.limit} bytes"


def faiss_gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu, or faiss-gpu on a GPU-less host)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and open the galleries; close them on shutdown."""
    settings: Settings = app.state.settings
    runtime = ModelRuntime.load(settings.model_dir, settings.runtime_options())
    gpus = faiss_gpu_count()
    galleries = GalleryManager(
        settings.data_dir, runtime.manifest.model_id, runtime.dim, settings.index_options(gpus)
    )
    galleries.open_all()
    app.state.runtime, app.state.galleries, app.state.faiss_gpus = runtime, galleries, gpus
    logger.info("ready: providers %s, %d galleries", runtime.providers, len(galleries.statuses()))
    try:
        yield
    finally:
        galleries.close()
        app.state.runtime = app.state.galleries = None


def create_app(settings: Settings) -> FastAPI:
    """The service over ``settings.model_dir`` and ``settings.data_dir``."""
    app = FastAPI(
        title="reid",
        version=__version__,
        summary="Person re-identification: attributes, embeddings, gallery search.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = app.state.galleries = None
    app.state.faiss_gpus = 0
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)
    app.include_router(health_routes.router)
    app.include_router(model_routes.router)
    app.include_router(gallery_routes.router)
    app.include_router(web_routes.router)  # the try-it page: GET / and /ui/* (service/web)
    return app
