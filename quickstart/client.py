"""A small HTTP client of the reid service's REST API, as the main job (``reid demo``) uses it.

Only what the demo needs: readiness, bulk indexing (jobs API with an archive, or batches of
``POST /v1/galleries/{g}/items``), embeddings, attributes and search. Every failure becomes a
:class:`ServiceCallError` naming the request and quoting the service's error message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

logger = logging.getLogger(__name__)

JOBS_PATH = "/v1/galleries/{gallery}/jobs"
"""The bulk-indexing route as it appears in the service's OpenAPI document."""
FINISHED_STATES = ("succeeded", "failed", "cancelled")
"""Job states after which a job changes no more."""


class ServiceCallError(RuntimeError):
    """A request to the service failed; the message names the request and the answer."""


def _error_message(response: httpx.Response) -> str:
    """The service's one error shape (``{"error": {"message"}}``), or the raw text."""
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def _image_part(path: Path) -> tuple[str, bytes, str]:
    kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return (path.name, path.read_bytes(), kind)


class ReidClient:
    """Calls one running service at ``base_url`` (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; JSON answer, or :class:`ServiceCallError` for any failure."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceCallError(f"{method} {self.base_url}{path}: {exc}") from exc
        if response.status_code >= 400:
            raise ServiceCallError(
                f"{method} {path} answered {response.status_code}: {_error_message(response)}"
            )
        return response.json() if response.content else None

    # ----------------------------------------------------------------- service
    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: model, providers and galleries."""
        return dict(self._call("GET", "/readyz"))

    def has_jobs_api(self) -> bool:
        """Whether the service offers bulk-indexing jobs (archive upload)."""
        paths = self._call("GET", "/openapi.json").get("paths", {})
        return JOBS_PATH in paths

    # ----------------------------------------------------------------- indexing
    def submit_archive(self, gallery: str, archive: Path) -> dict[str, Any]:
        """``POST /v1/galleries/{g}/jobs`` with a tar archive; the queued job."""
        with archive.open("rb") as fh:
            files = {"archive": (archive.name, fh, "application/x-tar")}
            return dict(self._call("POST", f"/v1/galleries/{gallery}/jobs", files=files))

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: state and counts."""
        return dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def wait_job(self, job_id: str, on_progress: Any = None, poll_s: float = 0.3) -> dict[str, Any]:
        """Poll a job until it finishes; ``on_progress(job)`` after each poll."""
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in FINISHED_STATES:
                return job
            time.sleep(poll_s)

    def add_items(
        self, gallery: str, paths: Sequence[Path], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``POST /v1/galleries/{g}/items``: one batch of images with their item fields."""
        files = [("images", _image_part(p)) for p in paths]
        data = {"items": json.dumps(list(items))}
        body = self._call("POST", f"/v1/galleries/{gallery}/items", files=files, data=data)
        return list(body["items"])

    def delete_gallery(self, gallery: str) -> None:
        """``DELETE /v1/galleries/{g}``."""
        self._call("DELETE", f"/v1/galleries/{gallery}")

    def gallery_stats(self, gallery: str) -> dict[str, Any]:
        """``GET /v1/galleries/{g}``: item count, cameras, model."""
        return dict(self._call("GET", f"/v1/galleries/{gallery}"))

    # ----------------------------------------------------------------- queries
    def embed(self, paths: Sequence[Path]) -> np.ndarray:
        """``POST /v1/embed``: float32 ``[len(paths), dim]`` in the order given."""
        files = [("images", _image_part(p)) for p in paths]
        body = self._call("POST", "/v1/embed", files=files)
        return np.asarray([e["embedding"] for e in body["embeddings"]], dtype=np.float32)

    def attributes(self, path: Path) -> dict[str, dict[str, Any]]:
        """``POST /v1/attributes``: attribute -> {"label", "probability"}."""
        body = self._call("POST", "/v1/attributes", files={"image": _image_part(path)})
        return dict(body["attributes"])

    def attribute_search(self, gallery: str, wanted: dict[str, str], k: int) -> dict[str, Any]:
        """``POST /v1/galleries/{g}/attribute-search``: items by joint probability."""
        body = {"attributes": wanted, "k": k}
        return dict(self._call("POST", f"/v1/galleries/{gallery}/attribute-search", json=body))

    def trajectory(self, gallery: str, path: Path, k: int, min_score: float) -> dict[str, Any]:
        """``POST /v1/galleries/{g}/trajectory``: lanes per camera and the path in time."""
        data = {"k": str(k), "min_score": str(min_score)}
        files = {"image": _image_part(path)}
        return dict(
            self._call("POST", f"/v1/galleries/{gallery}/trajectory", files=files, data=data)
        )

    def search(self, gallery: str, path: Path, k: int, rerank: bool) -> list[dict[str, Any]]:
        """``POST /v1/galleries/{g}/search``: the matches, best first."""
        data = {"k": str(k), "rerank": "true" if rerank else "false"}
        body = self._call(
            "POST", f"/v1/galleries/{gallery}/search", files={"image": _image_part(path)}, data=data
        )
        return list(body["matches"])
