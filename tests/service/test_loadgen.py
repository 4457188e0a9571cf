"""benchmarks.loadgen, the benchmark's HTTP client: every request answered and read whole,
statuses and Retry-After parsed, against the real service on loopback."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from benchmarks.loadgen import multipart_request, round_robin, run_load, run_targets
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


def test_round_robin_alternates_each_client_from_its_own_start() -> None:
    assert [round_robin(0, k, 2) for k in range(4)] == [0, 1, 0, 1]
    assert [round_robin(1, k, 2) for k in range(4)] == [1, 0, 1, 0]
    assert [round_robin(c, 0, 3) for c in range(4)] == [0, 1, 2, 0]
    assert {round_robin(c, k, 1) for c in range(3) for k in range(3)} == {0}


def test_two_replicas_share_the_requests_and_each_answers_whole(
    model_dir: Path, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                serve_in_thread(create_app(Settings(model_dir=model_dir, data_dir=tmp_path / d)))
            )
            for d in ("a", "b")
        ]
        targets = [
            (u, multipart_request(u, "/v1/embed", {"images": random_image(1)})) for u in urls
        ]
        results, _ = run_targets(targets, clients=3, per_client=4)
        timed, _ = run_targets(targets, clients=1, seconds=0.2)
    assert len(results) == 12 and {r.status for r in results} == {200}
    assert sorted(r.target for r in results) == [0] * 6 + [1] * 6
    assert timed and {r.status for r in timed} == {200}
    assert [r.target for r in timed] == [k % 2 for k in range(len(timed))]
    with pytest.raises(ValueError, match="per_client or seconds"):
        run_targets(targets, clients=1)
