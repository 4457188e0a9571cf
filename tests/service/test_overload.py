"""Overload: past the bounds the service answers 429 with Retry-After instead of queueing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread
from tests.service.conftest import random_image

IMAGE = random_image(3)


def _flood(url: str, clients: int, per_client: int) -> list[httpx.Response]:
    """``clients`` threads, each sending ``per_client`` embed requests back to back."""

    def loop(_: int) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=30) as client:
            return [
                client.post("/v1/embed", files=[("images", ("q.png", IMAGE))])
                for _ in range(per_client)
            ]

    with ThreadPoolExecutor(clients) as pool:
        return [r for rs in pool.map(loop, range(clients)) for r in rs]


@pytest.mark.parametrize(
    ("bound", "overrides"),
    [
        ("inflight", {"max_inflight_requests": 2}),
        ("model_queue", {"max_queued_images": 1, "max_batch": 1, "batch_max_wait_ms": 0.0}),
    ],
)
def test_flood_gets_429_with_retry_after(
    model_dir: Path, tmp_path: Path, bound: str, overrides: dict[str, object]
) -> None:
    settings = Settings(model_dir=model_dir, data_dir=tmp_path, retry_after_s=2, **overrides)  # type: ignore[arg-type]
    app = create_app(settings)
    with serve_in_thread(app) as url:
        app.state.runtime.observers.append(lambda n, s: time.sleep(0.05))  # a slow model
        responses = _flood(url, clients=12, per_client=3)
        metrics = httpx.get(f"{url}/metrics").text
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected, "a flood past the bound must be refused"
    assert statuses.count(200) >= 1
    for r in rejected:
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "overloaded"
    assert f'reid_http_rejected_total{{reason="{bound}"}} {float(len(rejected))}' in metrics


def test_health_is_not_subject_to_admission(model_dir: Path, tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=model_dir, data_dir=tmp_path, max_inflight_requests=1))
    with serve_in_thread(app) as url:
        app.state.runtime.observers.append(lambda n, s: time.sleep(0.2))
        with ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(_flood, url, 1, 1) for _ in range(2)]
            time.sleep(0.05)
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
            codes = sorted(r.status_code for f in slow for r in f.result())
    assert codes == [200, 429]
