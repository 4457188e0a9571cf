"""The trajectory view: hand-computed lanes, path and gaps, and the endpoint against search."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.gallery.trajectory import build_trajectory, format_offset, time_kind
from service.gallery.types import Item, Match
from tests.service.conftest import random_image


def _match(i: int, camera: str, ts: float, score: float, **meta: Any) -> Match:
    return Match(Item(i, camera, ts, None, dict(meta), {}), score, 0.0)


def test_lanes_path_and_gaps_by_hand() -> None:
    matches = [
        _match(1, "c2", 1000.0, 0.9),
        _match(2, "c1", 940.0, 0.8),
        _match(3, "c2", 1100.0, 0.7),
        _match(4, "c1", math.nan, 0.95),  # unknown time: apart
        _match(5, "c3", 990.0, 0.3),  # under the threshold: left out
        _match(6, "c3", 12.5, 0.6, time_kind="offset"),
    ]
    t = build_trajectory(matches, 0.5)
    assert [m.item.id for m in t.unknown_time] == [4]
    # offsets first (their own kind), then datetimes in time order
    assert [(s.match.item.id, s.kind, s.gap_s) for s in t.path] == [
        (6, "offset", None),
        (2, "datetime", None),
        (1, "datetime", 60.0),
        (3, "datetime", 100.0),
    ]
    assert [(lane.camera, [s.match.item.id for s in lane.sightings]) for lane in t.lanes] == [
        ("c3", [6]),
        ("c1", [2]),
        ("c2", [1, 3]),
    ]
    assert [s.gap_s for s in t.lanes[2].sightings] == [None, 100.0]


def test_time_kinds_and_offset_text() -> None:
    assert time_kind(597.2, {"time_kind": "offset"}) == "offset"
    assert time_kind(597.2, {"frame": 14930}) == "offset"  # dataset names before time_kind
    assert time_kind(1.7e9, {}) == "datetime"
    assert time_kind(1.7e9, {"time_kind": "datetime", "frame": 3}) == "datetime"
    assert time_kind(math.nan, {"time_kind": "offset"}) is None
    assert format_offset(597.24) == "+0:09:57.2"
    assert format_offset(3725.0) == "+1:02:05.0"


T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
N_ITEMS = 16


def _meta(i: int) -> dict[str, Any]:
    if i % 5 == 0:
        return {"camera": f"cam{i % 3}", "timestamp": None}
    if i % 4 == 0:  # a dataset frame time: seconds from the recording start
        return {"camera": f"cam{i % 3}", "timestamp": 10.0 * i, "metadata": {"time_kind": "offset"}}
    return {"camera": f"cam{i % 3}", "timestamp": (T0 + dt.timedelta(minutes=i)).isoformat()}


@pytest.fixture
def client(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    c = make_client(tmp_path / "data")
    files = [("images", (f"{i}.png", random_image(i), "image/png")) for i in range(N_ITEMS)]
    r = c.post(
        "/v1/galleries/g/items",
        files=files,
        data={"items": json.dumps([_meta(i) for i in range(N_ITEMS)])},
    )
    assert r.status_code == 200, r.text
    return c


def test_trajectory_endpoint_is_the_search_above_the_threshold(client: Any) -> None:
    image = ("q.png", random_image(3), "image/png")
    search = client.post("/v1/galleries/g/search", files={"image": image}, data={"k": N_ITEMS})
    scores = sorted(m["score"] for m in search.json()["matches"])
    threshold = scores[len(scores) // 2]
    r = client.post(
        "/v1/galleries/g/trajectory",
        files={"image": image},
        data={"k": N_ITEMS, "min_score": threshold},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    above = [m for m in search.json()["matches"] if m["score"] >= threshold]
    in_lanes = [s for lane in body["lanes"] for s in lane["sightings"]]
    shown = {s["item"]["id"] for s in in_lanes} | {m["item"]["id"] for m in body["unknown_time"]}
    assert shown == {m["item"]["id"] for m in above}
    assert {m["item"]["id"] for m in body["unknown_time"]} == {
        m["item"]["id"] for m in above if m["item"]["timestamp"] is None
    }
    for lane in body["lanes"]:
        assert all(s["item"]["camera"] == lane["camera"] for s in lane["sightings"])
    path = body["path"]
    assert len(path) == len(in_lanes)
    keys = [(p["time"]["kind"] != "offset", p["time"]["seconds"]) for p in path]
    assert keys == sorted(keys)
    for prev, step in zip(path, path[1:], strict=False):
        if prev["time"]["kind"] == step["time"]["kind"]:
            assert step["gap_s"] == pytest.approx(step["time"]["seconds"] - prev["time"]["seconds"])
        else:
            assert step["gap_s"] is None
        assert step["camera_changed"] == (prev["camera"] != step["camera"])
    by_id = {m["item"]["id"]: m for m in above}
    for s in in_lanes:
        item = by_id[s["item"]["id"]]["item"]
        assert s["time"]["kind"] == item["time_kind"]
        if s["time"]["kind"] == "offset":
            assert s["time"]["text"] == format_offset(s["time"]["seconds"])
        else:
            assert dt.datetime.fromisoformat(s["time"]["text"]) == dt.datetime.fromisoformat(
                item["timestamp"]
            )


def test_trajectory_threshold_defaults_to_the_setting(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path / "data", trajectory_min_score=0.99)
    files = [("images", ("a.png", random_image(1), "image/png"))]
    c.post("/v1/galleries/g/items", files=files, data={"items": json.dumps([_meta(1)])})
    r = c.post(
        "/v1/galleries/g/trajectory", files={"image": ("q.png", random_image(1), "image/png")}
    )
    assert r.status_code == 200, r.text
    assert r.json()["min_score"] == 0.99
    assert len(r.json()["path"]) == 1  # the image itself scores 1
    r = c.post(
        "/v1/galleries/g/trajectory", files={"image": ("q.png", random_image(2), "image/png")}
    )
    assert r.json()["path"] == []


def test_trajectory_bad_input_is_4xx(client: Any) -> None:
    image = ("q.png", random_image(3), "image/png")
    assert client.post("/v1/galleries/nope/trajectory", files={"image": image}).status_code == 404
    r = client.post("/v1/galleries/g/trajectory", files={"image": image}, data={"min_score": 3})
    assert r.status_code == 422
    r = client.post("/v1/galleries/g/trajectory", files={"image": image}, data={"k": 10**6})
    assert r.status_code == 400 and "k=1000000" in r.json()["error"]["message"]


def test_bulk_jobs_mark_dataset_frame_times_as_offsets() -> None:
    from service.jobs.rules import NamingRules, resolve

    info = resolve("0002_c1s1_000451_03.jpg", b"", 1.7e9, {}, NamingRules())
    assert not isinstance(info, str)
    assert info.metadata["time_kind"] == "offset" and info.timestamp == 451 / 25
    info = resolve("0002_c1s1_000451_03.jpg", b"", 1.7e9, {}, NamingRules(time="mtime"))
    assert not isinstance(info, str)
    assert "time_kind" not in info.metadata and info.timestamp == 1.7e9
