"""Search by description and the ``attributes`` filter of image search, through the HTTP API,
against brute-force references computed from what the gallery stores (every engine)."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reidcore.attributes import Attribute, AttributeSchema
from service.gallery import attribute_search as attr_mod
from service.gallery.attribute_search import Layout, class_probabilities
from tests.service.conftest import random_image
from tests.service.gallery.helpers import ENGINES
from tests.service.tiny_model import write_tiny_model_folder

# APR's shape: plain binary attributes, a 4-class age and binary colours grouped as upcolor.
APR_LIKE = AttributeSchema(
    (
        Attribute("gender", ("male", "female")),
        Attribute("age", ("young", "teenager", "adult", "old")),
        Attribute("backpack", ("no", "yes")),
        Attribute("upblack", ("no", "yes"), group="upcolor"),
        Attribute("upred", ("no", "yes"), group="upcolor"),
        Attribute("upblue", ("no", "yes"), group="upcolor"),
    ),
    source="tests",
)
N_ITEMS = 30
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
WANTED = [
    {"gender": "female"},
    {"age": "adult", "backpack": "yes"},
    {"upcolor": "red", "gender": "male"},
    {"upcolor": "blue", "age": "young", "backpack": "no"},
]


@pytest.fixture(scope="module")
def apr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "apr" / "1"
    return write_tiny_model_folder(folder, dim=64, schema=APR_LIKE, name="apr")


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _meta(i: int) -> dict[str, Any]:
    stamp = None if i % 7 == 0 else (T0 + dt.timedelta(minutes=i)).isoformat()
    return {"camera": f"cam{i % 3}", "timestamp": stamp, "external_id": f"p{i}"}


@pytest.fixture
def client(make_client: Callable[..., Any], tmp_path: Path, apr_model: Path) -> Any:
    c = make_client(tmp_path / "data", model=apr_model)
    files = [("images", (f"{i}.png", random_image(i), "image/png")) for i in range(N_ITEMS)]
    r = c.post(
        "/v1/galleries/g/items",
        files=files,
        data={"items": json.dumps([_meta(i) for i in range(N_ITEMS)])},
    )
    assert r.status_code == 200, r.text
    return c


def stored_items(client: Any) -> dict[int, Any]:
    """Every item as the engine stores it (with its class probabilities)."""
    store = client.app.state.galleries.get("g").store
    return dict(store.fetch(store.item_ids().tolist()))


def reference_probability(item: Any, wanted: dict[str, str]) -> float:
    """Joint probability from the stored JSON, computed independently of the columns."""
    p = 1.0
    for name, value in wanted.items():
        if name == "upcolor":
            name, value = f"up{value}", "yes"
        classes = next(a.classes for a in APR_LIKE if a.name == name)
        probs = item.attributes[name]["probabilities"]
        p *= float(np.float32(probs[classes.index(value)]))
    return p


def reference_predicted(item: Any, wanted: dict[str, str]) -> bool:
    for name, value in wanted.items():
        if name == "upcolor":
            colours = ["black", "red", "blue"]
            yes = [item.attributes[f"up{c}"]["probabilities"][1] for c in colours]
            if colours[int(np.argmax(np.array(yes, dtype=np.float32)))] != value:
                return False
        elif item.attributes[name]["label"] != value:
            return False
    return True


FILTERS: list[tuple[dict[str, Any], Callable[[Any], bool]]] = [
    ({}, lambda it: True),
    ({"cameras": ["cam1", "cam2"]}, lambda it: it.camera in ("cam1", "cam2")),
    ({"exclude_cameras": ["cam0"]}, lambda it: it.camera != "cam0"),
    (
        {"time_from": (T0 + dt.timedelta(minutes=5)).isoformat()},
        lambda it: (
            not math.isnan(it.timestamp)
            and it.timestamp >= (T0 + dt.timedelta(minutes=5)).timestamp()
        ),
    ),
]


@pytest.mark.parametrize("wanted", WANTED)
@pytest.mark.parametrize("filt", range(len(FILTERS)))
def test_attribute_search_matches_brute_force(
    client: Any, wanted: dict[str, str], filt: int
) -> None:
    form, allowed = FILTERS[filt]
    items = stored_items(client)
    probs = {i: reference_probability(it, wanted) for i, it in items.items() if allowed(it)}
    min_p = float(np.median(list(probs.values())))  # keeps about half
    expected = sorted((i for i, p in probs.items() if p >= min_p), key=lambda i: (-probs[i], i))
    r = client.post(
        "/v1/galleries/g/attribute-search",
        json={"attributes": wanted, "k": 5, "min_probability": min_p, **form},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] == len(expected)
    assert [m["item"]["id"] for m in body["matches"]] == expected[:5]
    assert [m["probability"] for m in body["matches"]] == [probs[i] for i in expected[:5]]
    assert body["attributes"] == wanted


def test_stored_probabilities_are_the_models(client: Any) -> None:
    by_external = {it.external_id: it for it in stored_items(client).values()}
    r = client.post("/v1/attributes", files={"image": ("q.png", random_image(4), "image/png")})
    for name, pred in r.json()["attributes"].items():
        stored = by_external["p4"].attributes[name]
        assert stored["label"] == pred["label"]
        classes = next(a.classes for a in APR_LIKE if a.name == name)
        assert stored["probabilities"][classes.index(pred["label"])] == pytest.approx(
            pred["probability"], abs=1e-6
        )
        assert sum(stored["probabilities"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("body", "named", "status"),
    [
        ({"attributes": {"colour": "red"}}, "'colour'", 422),
        ({"attributes": {"gender": "robot"}}, "'robot'", 422),
        ({"attributes": {"upcolor": "purple"}}, "'purple'", 422),
        ({"attributes": {}}, "attributes", 422),
        ({"attributes": {"gender": "male"}, "min_probability": 2}, "min_probability", 422),
        ({"attributes": {"gender": "male"}, "surprise": 1}, "surprise", 422),
        # Limits of the settings and values checked together are 400, as in image search.
        ({"attributes": {"gender": "male"}, "k": 100_000}, "k=100000", 400),
        (
            {
                "attributes": {"gender": "male"},
                "time_from": "2024-05-02T00:00:00Z",
                "time_to": "2024-05-01T00:00:00Z",
            },
            "time_from",
            400,
        ),
    ],
)
def test_bad_attribute_searches_are_4xx_naming_the_value(
    client: Any, body: dict[str, Any], named: str, status: int
) -> None:
    r = client.post("/v1/galleries/g/attribute-search", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert named in err["message"] + json.dumps(err.get("details"))
    assert client.get("/v1/galleries/g").json()["items"] == N_ITEMS  # nothing lost


def test_attribute_search_of_missing_gallery_is_404(client: Any) -> None:
    r = client.post("/v1/galleries/nope/attribute-search", json={"attributes": {"gender": "male"}})
    assert r.status_code == 404


def test_attribute_schema_lists_attributes_and_groups(client: Any) -> None:
    body = client.get("/v1/attribute-schema").json()
    assert body["attributes"]["age"] == ["young", "teenager", "adult", "old"]
    assert body["groups"] == {"upcolor": ["black", "red", "blue"]}


def test_columns_follow_deletions_and_additions(client: Any) -> None:
    wanted = {"gender": "female"}

    def ids() -> list[int]:
        r = client.post("/v1/galleries/g/attribute-search", json={"attributes": wanted, "k": 100})
        return [m["item"]["id"] for m in r.json()["matches"]]

    before = ids()
    assert client.delete(f"/v1/galleries/g/items/{before[0]}").status_code == 204
    files = [("images", ("n.png", random_image(1000), "image/png"))]
    r = client.post(
        "/v1/galleries/g/items", files=files, data={"items": json.dumps([{"camera": "cam9"}])}
    )
    new_id = r.json()["items"][0]["id"]
    items = stored_items(client)
    expected = sorted(
        (i for i in items), key=lambda i: (-reference_probability(items[i], wanted), i)
    )
    assert ids() == expected and before[0] not in expected and new_id in expected


# ------------------------------------------------------------------ attributes filter


@pytest.mark.parametrize("wanted", WANTED)
@pytest.mark.parametrize("brute_max", [0, 10_000])  # deepening engine searches / direct scores
def test_image_search_attributes_filter_matches_brute_force(
    client: Any, wanted: dict[str, str], brute_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attr_mod, "BRUTE_FORCE_MAX", brute_max)
    items = stored_items(client)
    image = ("q.png", random_image(3), "image/png")
    full = client.post("/v1/galleries/g/search", files={"image": image}, data={"k": N_ITEMS + 5})
    keep = [
        m for m in full.json()["matches"] if reference_predicted(items[m["item"]["id"]], wanted)
    ]
    r = client.post(
        "/v1/galleries/g/search",
        files={"image": image},
        data={"k": 4, "attributes": json.dumps(wanted)},
    )
    assert r.status_code == 200, r.text
    got = r.json()["matches"]
    assert [m["item"]["id"] for m in got] == [m["item"]["id"] for m in keep[:4]]
    assert [m["score"] for m in got] == pytest.approx([m["score"] for m in keep[:4]], abs=1e-5)


def test_image_search_attributes_filter_with_rerank_keeps_only_matching(client: Any) -> None:
    items = stored_items(client)
    wanted = {"gender": "male"}
    r = client.post(
        "/v1/galleries/g/search",
        files={"image": ("q.png", random_image(3), "image/png")},
        data={"k": 5, "rerank": "true", "attributes": json.dumps(wanted)},
    )
    assert r.status_code == 200, r.text
    got = [m["item"]["id"] for m in r.json()["matches"]]
    assert got and all(reference_predicted(items[i], wanted) for i in got)


@pytest.mark.parametrize("bad", ['{"gender": "robot"}', "not json", '["gender"]', "{}"])
def test_image_search_bad_attributes_filter_is_422(client: Any, bad: str) -> None:
    r = client.post(
        "/v1/galleries/g/search",
        files={"image": ("q.png", random_image(3), "image/png")},
        data={"attributes": bad},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"]


# ------------------------------------------------------------------ units


def test_group_values_and_old_items_without_class_probabilities() -> None:
    layout = Layout.of(APR_LIKE)
    assert layout.groups() == {"upcolor": [("black", 3), ("red", 4), ("blue", 5)]}
    w = layout.resolve({"upcolor": "blue"})[0]
    assert w.prob_column == layout.offsets[5] + 1 and w.label == 2
    age = APR_LIKE["age"]
    assert class_probabilities(age, {"label": "adult", "probability": 0.7}) == pytest.approx(
        [0.1, 0.1, 0.7, 0.1]
    )
    gender = APR_LIKE["gender"]
    assert class_probabilities(gender, {"label": "male", "probability": 0.8}) == pytest.approx(
        [0.8, 0.2]
    )
    assert all(math.isnan(p) for p in class_probabilities(gender, None))


# ------------------------------------------------------------------ warm-up at start


def _columns_size(client: Any) -> int:
    store = client.app.state.galleries.get("g").store
    cache = attr_mod.column_cache(store, client.app.state.runtime.schema)
    return len(cache._cols.ids)


@pytest.mark.parametrize("warmup", [True, False])
def test_columns_are_read_at_start_when_asked(
    client: Any, make_client: Callable[..., Any], tmp_path: Path, apr_model: Path, warmup: bool
) -> None:
    client.__exit__(None, None, None)  # the data dir's gallery, opened by a fresh service
    again = make_client(tmp_path / "data", model=apr_model, attribute_warmup=warmup)
    if warmup:
        deadline = time.monotonic() + 60  # far above what the few items need
        while _columns_size(again) < N_ITEMS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _columns_size(again) == N_ITEMS
    else:
        assert _columns_size(again) == 0  # read by the first search instead
        r = again.post("/v1/galleries/g/attribute-search", json={"attributes": {"age": "old"}})
        assert r.status_code == 200 and _columns_size(again) == N_ITEMS


def test_a_stopped_build_keeps_what_it_read_and_the_next_finishes(client: Any) -> None:
    store = client.app.state.galleries.get("g").store
    cache = attr_mod.ColumnCache(Layout.of(APR_LIKE))
    stop = threading.Event()
    stop.set()
    assert len(cache.current(store, stop).ids) == 0
    assert cache.current(store).ids.tolist() == store.item_ids().tolist()


def test_ids_after_lists_the_newer_ids(client: Any) -> None:
    store = client.app.state.galleries.get("g").store
    ids = store.item_ids()
    for after in (-1, int(ids[0]), int(ids[len(ids) // 2]), int(ids[-1])):
        assert store.ids_after(after).tolist() == ids[ids > after].tolist()
