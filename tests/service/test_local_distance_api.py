"""``local_distance`` image search (AlignedReID's global + aligned local distance) through the
HTTP API, against a brute-force reference computed from the tiny model's numpy outputs."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reidcore.evaluation import pairwise_euclidean
from reidcore.preprocess import preprocess_batch
from reidcore.rerank import k_reciprocal_rerank
from service.gallery.types import NewItem
from service.manifest import load_manifest
from tests.service.conftest import random_image
from tests.service.gallery.helpers import ENGINES
from tests.service.tiny_model import reference_local, reference_outputs, write_tiny_model_folder

N_ITEMS = 24
DIM = 32


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "aligned" / "1"
    return write_tiny_model_folder(folder, dim=DIM, name="aligned", local=True)


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _add(client: Any, seeds: range) -> None:
    files = [("images", (f"{i}.png", random_image(i), "image/png")) for i in seeds]
    meta = [{"camera": f"cam{i % 3}", "external_id": f"p{i}"} for i in seeds]
    r = client.post("/v1/galleries/g/items", files=files, data={"items": json.dumps(meta)})
    assert r.status_code == 200, r.text


@pytest.fixture
def make(make_client: Callable[..., Any], tmp_path: Path, local_model: Path) -> Callable[..., Any]:
    def build(**overrides: object) -> Any:
        overrides.setdefault("local_distance_shortlist", N_ITEMS)  # the whole gallery
        c = make_client(tmp_path / "data", model=local_model, **overrides)
        _add(c, range(N_ITEMS))
        return c

    return build


def model_outputs(model: Path, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, local features) of these images, by the tiny model's numpy reference."""
    cfg = load_manifest(model).input.preprocess_config()
    images = [Image.open(io.BytesIO(random_image(i))).convert("RGB") for i in seeds]
    batch = preprocess_batch(images, cfg)
    return reference_outputs(batch, DIM, load_manifest(model).attribute_schema, 0)[0], (
        reference_local(batch)
    )


def aligned_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The paper's local distance of two [H, c] stripe sets, written out cell by cell."""
    h = len(a)
    d = [[np.tanh(np.linalg.norm(a[i] - b[j]) / 2) for j in range(h)] for i in range(h)]
    s = [[0.0] * h for _ in range(h)]
    for i in range(h):
        for j in range(h):
            best = min([s[i - 1][j]] * (i > 0) + [s[i][j - 1]] * (j > 0) or [0.0])
            s[i][j] = best + d[i][j]
    return s[h - 1][h - 1]


def brute_force(model: Path, weight: float, query: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(gallery seeds, distances) by ``||q - g|| + weight * local`` over the whole gallery."""
    emb, local = model_outputs(model, [query, *range(N_ITEMS)])
    glob = np.linalg.norm(emb[1:] - emb[0], axis=1)
    loc = np.array([aligned_distance(local[0], local[1 + i]) for i in range(N_ITEMS)])
    return glob + weight * loc, np.array(
        [[aligned_distance(x, y) for y in local[1:]] for x in local[1:]]
    )


def search(client: Any, query: int = 100, **data: object) -> Any:
    image = ("q.png", random_image(query), "image/png")
    return client.post("/v1/galleries/g/search", files={"image": image}, data=data)


def seeds_of(matches: list[dict[str, Any]]) -> list[int]:
    return [int(m["item"]["external_id"][1:]) for m in matches]


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_local_distance_search_matches_brute_force(
    make: Callable[..., Any], local_model: Path, weight: float
) -> None:
    client = make(local_distance_weight=weight)
    r = search(client, k=8, local_distance="true")
    assert r.status_code == 200, r.text
    want, _ = brute_force(local_model, weight)
    order = np.argsort(want, kind="stable")[:8]
    got = r.json()["matches"]
    assert seeds_of(got) == order.tolist()
    assert [m["distance"] for m in got] == pytest.approx(want[order].tolist(), abs=1e-4)
    plain = search(client, k=8).json()["matches"]
    assert seeds_of(plain) != seeds_of(got)  # the local distance changes the order here


def test_local_distance_under_a_filter_ranks_only_allowed_items(
    make: Callable[..., Any], local_model: Path, gallery_engine: str
) -> None:
    if gallery_engine != "local":
        pytest.skip("filters are engine-independent above the seam; the local engine suffices")
    client = make()
    r = search(client, k=5, local_distance="true", cameras="cam1")
    assert r.status_code == 200, r.text
    want, _ = brute_force(local_model, 1.0)
    allowed = [i for i in range(N_ITEMS) if i % 3 == 1]
    order = sorted(allowed, key=lambda i: want[i])[:5]
    assert seeds_of(r.json()["matches"]) == order


def test_local_distance_runs_before_rerank(
    make: Callable[..., Any], local_model: Path, gallery_engine: str
) -> None:
    """Re-ranking re-ranks the combined distance of query + shortlist (here the gallery)."""
    if gallery_engine != "local":
        pytest.skip("the order of the two is engine-independent; the local engine suffices")
    client = make()
    r = search(client, k=6, local_distance="true", rerank="true")
    assert r.status_code == 200, r.text
    q_g, local_g_g = brute_force(local_model, 1.0)
    emb, _ = model_outputs(local_model, list(range(N_ITEMS)))
    g_g = pairwise_euclidean(emb, emb) + local_g_g
    p = client.app.state.settings.rerank_params()
    want = k_reciprocal_rerank(q_g[None], np.zeros((1, 1)), g_g, p.k1, p.k2, p.lambda_value)[0]
    order = np.argsort(want, kind="stable")[:6]
    got = r.json()["matches"]
    assert seeds_of(got) == order.tolist()
    assert [m["distance"] for m in got] == pytest.approx(want[order].tolist(), abs=1e-4)


def test_model_without_local_output_is_409(
    make_client: Callable[..., Any], tmp_path: Path, gallery_engine: str
) -> None:
    if gallery_engine != "local":
        pytest.skip("the model check comes before any engine; the local engine suffices")
    client = make_client(tmp_path / "plain")
    _add(client, range(3))
    r = search(client, local_distance="true")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "local_distance_unavailable"
    assert "--include-local" in r.json()["error"]["message"]


def test_items_without_local_features_are_409(make: Callable[..., Any]) -> None:
    """Items stored without local features (an older gallery or collection) are refused,
    not silently ranked by the global distance; plain searches still work."""
    client = make(local_distance_shortlist=N_ITEMS + 1)  # the old item is re-scored too
    store = client.app.state.galleries.get("g").store
    emb = np.eye(1, DIM, dtype=np.float32)
    store.add([NewItem(camera="old", timestamp=float("nan"), external_id="old")], emb)
    r = search(client, local_distance="true")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "local_distance_unavailable"
    assert search(client).status_code == 200


def test_local_distance_with_query_tricks_is_400(make: Callable[..., Any]) -> None:
    r = search(make(), local_distance="true", qe_n=2)
    assert r.status_code == 400, r.text
    assert "local_distance" in r.json()["error"]["message"]
