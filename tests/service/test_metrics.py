"""/metrics: Prometheus text with requests by route template, model batches, galleries, jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import random_image
from tests.service.jobs.archives import crops, make_tar
from tests.service.test_jobs_api import submit, wait


def samples(client: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    m: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def test_metrics_content(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data", micro_batching=False)
    files = [("images", (f"{i}.png", random_image(i))) for i in range(3)]
    meta = [{"camera": "a", "timestamp": i} for i in range(3)]
    assert (
        c.post("/v1/galleries/g1/items", files=files, data={"items": json.dumps(meta)}).status_code
        == 200
    )
    for name, status in (("g1", 200), ("g1", 200), ("nope", 404)):
        r = c.post(f"/v1/galleries/{name}/search", files={"image": ("q.png", random_image(0))})
        assert r.status_code == status
    job = wait(c, submit(c, make_tar(crops(5)), gallery="g2")["id"])
    m = samples(c)
    search = "/v1/galleries/{gallery}/search"
    assert value(m, "reid_http_requests_total", method="POST", route=search, status="200") == 2
    assert value(m, "reid_http_requests_total", method="POST", route=search, status="404") == 1
    assert value(m, "reid_http_request_seconds_count", method="POST", route=search) == 3
    assert not any("g1" in dict(k[1]).get("route", "") for k in m)  # templates, not raw paths
    assert value(m, "reid_gallery_items", gallery="g1") == 3
    assert value(m, "reid_gallery_items", gallery="g2") == job["added"] == 5
    # model runs: 1 add (3 images) + 2 searches (1 each) + the job (5 images in one batch)
    assert value(m, "reid_model_batch_size_count") == 4
    assert value(m, "reid_model_batch_size_sum") == 3 + 1 + 1 + 5
    assert value(m, "reid_model_seconds_count") == 4
    assert value(m, "reid_jobs", state="succeeded") == 1
    assert value(m, "reid_model_queue_images") == 0
    unknown = c.get("/no/such/path")
    assert unknown.status_code == 404
    m = samples(c)
    assert (
        value(m, "reid_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    )
