"""Prometheus metrics of one app (its own registry, so several apps can live in a process).

- ``reid_http_requests_total{method,route,status}`` and ``reid_http_request_seconds{method,route}``:
  by route template (``/v1/galleries/{gallery}/search``), never the raw path.
- ``reid_http_inflight`` and ``reid_http_rejected_total{reason}`` (429s: ``inflight`` from
  admission control, ``receiving`` from a full pool of bodies being received (service.asgi),
  ``model_queue`` from the full model queue).
- ``reid_model_batch_size`` and ``reid_model_seconds``: every ONNX Runtime run, whoever asked
  (requests through the micro-batcher, or bulk indexing).
- ``reid_model_queue_images``: images waiting for the micro-batcher.
- ``reid_gallery_items{gallery}``, ``reid_jobs{state}`` and ``reid_job_items{job,gallery,kind}``
  (kind: total, added, duplicates, failed) for unfinished jobs, read at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNMATCHED = "<unmatched>"


class Metrics:
    """The collectors of one service instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "reid_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "reid_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("reid_http_inflight", "HTTP requests being handled", registry=r)
        self.rejected = Counter(
            "reid_http_rejected", "Requests refused with 429 (overload)", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "reid_model_batch_size", "Images per model run", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "reid_model_seconds", "Time of one model run", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue = Gauge("reid_model_queue_images", "Images waiting for the model", registry=r)

    def observe_model(self, images: int, seconds: float) -> None:
        """Hook for :attr:`service.runtime.ModelRuntime.observers`."""
        self.batch_size.observe(images)
        self.model_seconds.observe(seconds)

    def add_state(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        """Register gauges computed at scrape time (gallery sizes, job progress)."""
        self.registry.register(_StateCollector(collect))


class _StateCollector(Collector):
    def __init__(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self._collect()
        except Exception:  # a scrape must not fail because a gallery is closing
            logger.exception("metrics: state collection failed")


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The path template of the route that handles ``scope`` (bounded label values)."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        matched = child.get("route", route)  # included routers name the inner route here
        if match == Match.FULL:
            return str(getattr(matched, "path", UNMATCHED))
        if match == Match.PARTIAL and partial is None:  # e.g. right path, other method
            partial = str(getattr(matched, "path", UNMATCHED))
    return partial or UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], list[BaseRoute]]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes(), scope)
        status = 500
        t0 = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.inflight.dec()
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)


class AdmissionControl:
    """Refuses /v1 requests past ``limit`` in flight at once, with 429 and Retry-After.

    The check runs on the event loop before a worker thread is taken, so a refusal costs
    microseconds however loaded the service is. In the app it sits inside
    :class:`service.asgi.BodyGuard`: a request counts only once its body is in, so clients
    stalled inside their upload never hold a slot.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        reject: Callable[[], Any],
        on_reject: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.reject = reject
        self.on_reject = on_reject
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            self.on_reject()
            await self.reject()(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
