"""benchmarks.loadgen, the benchmark's HTTP client: every request answered and read whole,
statuses and Retry-After parsed, against the real service on loopback."""

from __future__ import annotations

from pathlib import Path

from benchmarks.loadgen import multipart_request, run_load
from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread
from tests.service.conftest import random_image


def test_loadgen_against_the_service(model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, data_dir=tmp_path, max_inflight_requests=1)
    with serve_in_thread(create_app(settings)) as url:
        embed = multipart_request(url, "/v1/embed", {"images": random_image(1)})
        results, wall = run_load(url, embed, clients=6, per_client=5)
        missing = multipart_request(url, "/v1/galleries/nope/search", {"image": random_image(2)})
        not_found, _ = run_load(url, missing, clients=1, per_client=2)
    assert len(results) == 30 and wall > 0
    assert {r.status for r in results} <= {200, 429}
    assert any(r.status == 200 for r in results)
    assert all(r.retry_after == "1" for r in results if r.status == 429)
    assert all(r.seconds > 0 for r in results)
    # keep-alive: a body misread would desynchronise the connection's next answer
    assert [r.status for r in not_found] == [404, 404]
