"""The try-it page: its files over HTTP, and the page itself in a real headless Chromium.

Result crops come from ``GET /v1/galleries/{g}/items/{id}/image``; the checks that they load
(natural width > 0) apply when the service has that route (:func:`has_image_route`).

The browser tests start the real app under uvicorn on 127.0.0.1 over the tiny test model and
a temporary gallery of a few items, drive Debian's Chromium with Playwright, and compare what
the page shows with what the API answers for the same request. They skip when Playwright
(``pip install playwright``) or Chromium (``apt-get install -y chromium``) is absent.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread
from service.web.routes import ASSETS, WEB_DIR

GALLERY = "people"
N_ITEMS = 12
QUERY_ITEM = 3  # the query is the exact image of this item (its id is QUERY_ITEM + 1)
K = 5
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path("/tmp/reid_web_page.png")
IMAGE_ROUTE = "/v1/galleries/{gallery}/items/{item_id}/image"
OFFSET_ITEMS = (10, 11)  # items with dataset frame times (seconds from the recording start)
WAIT_MS = 10_000  # longest wait for the page, far above what it needs
APT_LINE = "apt-get update && apt-get install -y chromium"


def person_png(seed: int) -> bytes:
    """A 40x20 PNG of random colour blocks (4x2, the tiny model's grid) with mild noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 2, 3))
    arr = np.kron(blocks, np.ones((10, 10, 1), dtype=np.int64))
    arr = np.clip(arr + rng.integers(-8, 9, size=arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ page files, no browser


def test_page_and_assets_are_served(model_dir: Path, tmp_path: Path, make_client: Any) -> None:
    client = make_client(tmp_path / "data")
    for path, name in [
        ("/", "index.html"),
        ("/ui/app.js", "app.js"),
        ("/ui/style.css", "style.css"),
    ]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.content == (WEB_DIR / name).read_bytes()
        assert r.headers["content-type"] == ASSETS[name]
        assert "script-src 'self'" in r.headers["content-security-policy"]
    page = client.get("/").text
    assert '<script src="/ui/app.js"' in page and 'href="/ui/style.css"' in page


def test_page_references_nothing_outside_the_service() -> None:
    """No CDN: every file the page loads or calls is on the same origin."""
    for name in ASSETS:
        text = (WEB_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text, name
        assert "//cdn" not in text, name


@pytest.mark.parametrize("name", ["routes.py", "__init__.py", "../app.py", "nothing.js"])
def test_only_the_page_files_are_served(name: str, tmp_path: Path, make_client: Any) -> None:
    r = make_client(tmp_path / "data").get(f"/ui/{name}")
    assert r.status_code == 404
    body = r.json()["error"]
    assert body["code"] == "not_found"
    if "/" not in name:  # "../app.py" is normalised away by the client before it is sent
        assert repr(name) in body["message"]


# ------------------------------------------------------------------ browser fixtures


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of the Chromium binary (REID_CHROMIUM, else chromium on PATH)."""
    path = os.environ.get("REID_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(f"no Chromium at {path}: run `{APT_LINE}` (or set REID_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """A headless Chromium driven by Playwright (its driver comes with the pip wheel)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install playwright"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app under uvicorn with gallery ``people``: N_ITEMS items on two cameras, the last
    ones with frame times."""
    settings = Settings(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("web_data"))
    with serve_in_thread(create_app(settings)) as url:
        pngs = [person_png(i) for i in range(N_ITEMS)]
        items = [
            {
                "camera": f"c{i % 2 + 1}",
                "timestamp": 12.5 * i if i in OFFSET_ITEMS else 1_700_000_000 + 60 * i,
                "external_id": f"person-{i}",
                "metadata": {"time_kind": "offset"} if i in OFFSET_ITEMS else {},
            }
            for i in range(len(pngs))
        ]
        r = httpx.post(
            f"{url}/v1/galleries/{GALLERY}/items",
            files=[("images", (f"p{i}.png", png, "image/png")) for i, png in enumerate(pngs)],
            data={"items": json.dumps(items)},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        yield url


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    """The page, loaded and ready; fails the test on any script or console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda m: record_console_error(errors, m))
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready=true]", state="attached")
    yield pg
    context.close()
    # The invalid-file and missing-crop tests expect their failed requests' console lines.
    expected = ("status of 415", "status of 404")
    assert [e for e in errors if not any(x in e for x in expected)] == [], errors


# ------------------------------------------------------------------ browser helpers


def record_console_error(errors: list[str], message: Any) -> None:
    """Keep the browser console's errors (CSP violations, failed loads, script errors)."""
    if message.type == "error":
        errors.append(f"console: {message.text}")


def has_image_route(server: str, headers: dict[str, str] | None = None) -> bool:
    """Whether the service serves item crops (the page then shows them)."""
    doc = httpx.get(f"{server}/openapi.json", headers=headers, timeout=30).json()
    return IMAGE_ROUTE in doc["paths"]


def api_search(server: str, png: bytes, rerank: bool) -> list[dict[str, Any]]:
    """The API's answer for the same query: the reference the page must show."""
    r = httpx.post(
        f"{server}/v1/galleries/{GALLERY}/search",
        files={"image": ("query.png", png, "image/png")},
        data={"k": str(K), "rerank": str(rerank).lower()},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    matches: list[dict[str, Any]] = r.json()["matches"]
    return matches


def shown_matches(pg: Any, reranked: bool) -> list[dict[str, Any]]:
    """The cards of the column with ``data-reranked``: id, score, distance, camera, thumb."""
    column = f'.column[data-reranked="{str(reranked).lower()}"]'
    pg.wait_for_selector(f"{column} .match")
    wait_for_crops(pg)
    cards: list[dict[str, Any]] = pg.eval_on_selector_all(
        f"{column} .match",
        """cards => cards.map(c => ({
            id: Number(c.dataset.itemId),
            score: c.querySelector('.score').textContent,
            distance: c.querySelector('.distance').textContent,
            camera: c.querySelector('.camera').textContent,
            thumb: (c.querySelector('img.thumb') || {}).naturalWidth || 0,
            attributes: c.querySelector('.attributes').textContent,
        }))""",
    )
    return cards


def wait_for_crops(pg: Any) -> None:
    """Until every crop the page asked for has loaded or turned into a placeholder."""
    pg.wait_for_function(
        "() => !document.querySelector('[data-pending]')"
        " && [...document.querySelectorAll('img')].every(i => i.complete)"
    )


def expected_cards(matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": m["item"]["id"],
            "score": f"{m['score']:.3f}",
            "distance": f"distance {m['distance']:.3f}",
            "camera": f"camera {m['item']['camera']}",
        }
        for m in matches
    ]


def search(pg: Any, png: bytes, name: str = "query.png", mime: str = "image/png") -> None:
    pg.set_input_files("#query-file", {"name": name, "mimeType": mime, "buffer": png})
    pg.fill("#k", str(K))
    pg.click("#search-button")
    pg.wait_for_selector("#results[data-state=done]", state="attached")


# ------------------------------------------------------------------ browser tests


def test_page_loads_with_model_and_galleries(page: Any) -> None:
    assert page.title() == "reid: try the service"
    assert "Model tiny/1 (64-d embedding" in page.inner_text("#model-status")
    options = page.eval_on_selector_all("#gallery option", "os => os.map(o => o.textContent)")
    assert f"{GALLERY} ({N_ITEMS} items)" in options  # other tests may add galleries


def test_query_shows_ranked_matches_with_thumbnails(page: Any, server: str) -> None:
    query = person_png(QUERY_ITEM)
    search(page, query)
    cards = shown_matches(page, reranked=False)
    expected = api_search(server, query, rerank=False)
    assert [{k: c[k] for k in ("id", "score", "distance", "camera")} for c in cards] == (
        expected_cards(expected)
    )
    assert cards[0]["id"] == QUERY_ITEM + 1 and cards[0]["score"] == "1.000"  # itself first
    if has_image_route(server):  # the crops the service keeps, fetched and decoded
        assert all(m["item"]["image_url"] for m in expected)
        assert all(c["thumb"] > 0 for c in cards), cards
    first = expected[0]["item"]["attributes"]
    assert all(f"{name}{p['label']}" in cards[0]["attributes"] for name, p in first.items())
    # The query's own attributes come from POST /v1/attributes, as chips.
    r = httpx.post(f"{server}/v1/attributes", files={"image": ("q.png", query, "image/png")})
    chips = page.eval_on_selector_all(
        "#query-attributes .chip", "cs => cs.map(c => [c.dataset.name, c.dataset.value])"
    )
    assert chips == [[n, a["label"]] for n, a in r.json()["attributes"].items()]
    times = page.eval_on_selector_all(".match .time", "ts => ts.map(t => t.textContent)")
    assert not any("1970" in t for t in times)  # frame times are offsets, not 1970 dates
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_rerank_toggle_and_side_by_side(page: Any, server: str) -> None:
    query = person_png(QUERY_ITEM + 5)
    search(page, query)
    plain = shown_matches(page, reranked=False)
    page.check('input[name="ranking"][value="rerank"]')
    page.wait_for_selector('.column[data-reranked="true"]')
    reranked = shown_matches(page, reranked=True)
    expected = expected_cards(api_search(server, query, rerank=True))
    assert [{k: c[k] for k in ("id", "score", "distance", "camera")} for c in reranked] == expected
    assert page.locator(".column").count() == 1
    assert [c["distance"] for c in reranked] != [c["distance"] for c in plain]

    page.check('input[name="ranking"][value="both"]')
    page.wait_for_function("() => document.querySelectorAll('.column').length === 2")
    page.wait_for_selector("#results[data-state=done]", state="attached")
    assert page.eval_on_selector_all(".column", "cs => cs.map(c => c.dataset.reranked)") == [
        "false",
        "true",
    ]
    assert page.locator('.column[data-reranked="true"] .moved').count() == K
    page.screenshot(path=str(SCREENSHOT.with_name("reid_web_page_both.png")), full_page=True)


def test_invalid_file_shows_the_service_message(page: Any, server: str) -> None:
    junk = b"this is not an image at all"
    r = httpx.post(
        f"{server}/v1/attributes", files={"image": ("notes.jpg", junk, "image/jpeg")}, timeout=30
    )
    assert r.status_code == 415
    error = r.json()["error"]
    search(page, junk, name="notes.jpg", mime="image/jpeg")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error .error-message") == error["message"]
    assert page.inner_text("#error .error-code").startswith(error["code"])
    assert page.locator(".match").count() == 0
    page.screenshot(path=str(SCREENSHOT.with_name("reid_web_page_error.png")))


def test_adding_images_shows_their_crops(page: Any, server: str) -> None:
    pngs = [person_png(100 + i) for i in range(2)]
    page.click("details summary")
    page.fill("#add-gallery", "visitors")
    page.fill("#add-camera", "c9")
    page.set_input_files(
        "#add-files",
        [{"name": f"v{i}.png", "mimeType": "image/png", "buffer": b} for i, b in enumerate(pngs)],
    )
    page.click("#add-button")
    page.wait_for_function(
        "() => document.getElementById('add-status').textContent.startsWith('Added')"
    )
    assert page.inner_text("#add-status") == "Added 2 of 2 images to visitors."
    assert page.eval_on_selector("#gallery", "s => s.selectedOptions[0].textContent") == (
        "visitors (2 items)"
    )
    for item_id, name in [(1, "v0.png"), (2, "v1.png")]:
        item = httpx.get(f"{server}/v1/galleries/visitors/items/{item_id}", timeout=30).json()
        assert item["camera"] == "c9" and item["metadata"] == {"file": name}
    search(page, pngs[1])
    cards = shown_matches(page, reranked=False)
    assert cards[0]["id"] == 2
    if has_image_route(server):
        assert cards[0]["thumb"] > 0


def api_post(server: str, path: str, **kwargs: Any) -> Any:
    r = httpx.post(f"{server}/v1/galleries/{GALLERY}/{path}", timeout=30, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_attribute_chips_start_an_attribute_search(page: Any, server: str) -> None:
    search(page, person_png(QUERY_ITEM))
    chips = page.locator("#query-attributes .chip")
    wanted: dict[str, str] = {}
    for i in range(2):  # one chip, then two: all selected values are wanted
        chip = chips.nth(i)
        wanted[chip.get_attribute("data-name") or ""] = chip.get_attribute("data-value") or ""
        chip.click()
        page.wait_for_function(
            "n => document.querySelector('#attribute-results h2')?.textContent.split(',').length"
            " === n && document.getElementById('attribute-results').dataset.state === 'done'",
            arg=len(wanted),
        )
        expected = api_post(server, "attribute-search", json={"attributes": wanted, "k": K})
        ids = page.eval_on_selector_all(
            "#attribute-results .match", "cs => cs.map(c => Number(c.dataset.itemId))"
        )
        assert ids == [m["item"]["id"] for m in expected["matches"]]
        probs = page.eval_on_selector_all(
            "#attribute-results .probability", "ps => ps.map(p => p.textContent)"
        )
        assert probs == [f"{m['probability'] * 100:.1f}%" for m in expected["matches"]]
    page.screenshot(path=str(SCREENSHOT.with_name("reid_web_page_attributes.png")), full_page=True)


def test_trajectory_lanes_and_path_are_the_apis(page: Any, server: str) -> None:
    query = person_png(QUERY_ITEM)
    page.fill("#min-score", "-1")  # every match: both cameras, both time kinds
    search(page, query)
    page.wait_for_selector("#trajectory:not([hidden])")
    expected = api_post(
        server,
        "trajectory",
        files={"image": ("query.png", query, "image/png")},
        data={"k": "100", "min_score": "-1"},
    )
    lanes = page.eval_on_selector_all(
        ".lane",
        "ls => ls.map(l => [l.dataset.camera,"
        " [...l.querySelectorAll('.sighting')].map(s => Number(s.dataset.itemId))])",
    )
    assert lanes == [
        [lane["camera"], [s["item"]["id"] for s in lane["sightings"]]] for lane in expected["lanes"]
    ]
    steps = page.eval_on_selector_all("#path .step-time", "ts => ts.map(t => t.textContent)")
    assert steps == [p["time"]["text"] for p in expected["path"]]
    offsets = [p["time"]["text"] for p in expected["path"] if p["time"]["kind"] == "offset"]
    assert offsets == ["+0:02:05.0", "+0:02:17.5"]  # items 10 and 11: 12.5 s per index
    wait_for_crops(page)
    if has_image_route(server):
        widths = page.eval_on_selector_all("img.lane-thumb", "is => is.map(i => i.naturalWidth)")
        assert len(widths) == sum(len(lane[1]) for lane in lanes) and all(w > 0 for w in widths)
    page.screenshot(path=str(SCREENSHOT.with_name("reid_web_page_trajectory.png")), full_page=True)


def test_camera_filter_applies_to_the_search(page: Any, server: str) -> None:
    query = person_png(QUERY_ITEM)
    page.select_option("#cameras", ["c2"])
    search(page, query)
    cards = shown_matches(page, reranked=False)
    expected = api_post(
        server,
        "search",
        files={"image": ("q.png", query, "image/png")},
        data={"k": K, "cameras": "c2"},
    )
    assert [c["id"] for c in cards] == [m["item"]["id"] for m in expected["matches"]]
    assert {c["camera"] for c in cards} == {"camera c2"}


def test_time_filter_is_read_as_utc(page: Any, server: str) -> None:
    query = person_png(QUERY_ITEM)
    page.fill("#time-from", "2023-11-14T22:16:00")  # items 3.. (22:13:20Z + i minutes)
    search(page, query)
    cards = shown_matches(page, reranked=False)
    expected = api_post(
        server,
        "search",
        files={"image": ("q.png", query, "image/png")},
        data={"k": K, "time_from": "2023-11-14T22:16:00Z"},
    )
    assert [c["id"] for c in cards] == [m["item"]["id"] for m in expected["matches"]]
    assert all(m["item"]["id"] >= 4 for m in expected["matches"])  # ids are index + 1
    assert all(m["item"]["time_kind"] == "datetime" for m in expected["matches"])


def test_a_crop_that_is_not_there_shows_a_placeholder(page: Any, server: str) -> None:
    if not has_image_route(server):
        pytest.skip("this version of the service keeps no crops (no image route)")
    missing = f"**/items/{QUERY_ITEM + 1}/image"
    page.route(missing, lambda route: route.fulfill(status=404, body="{}"))
    search(page, person_png(QUERY_ITEM))
    shown_matches(page, reranked=False)
    card = page.locator(f'#results .match[data-item-id="{QUERY_ITEM + 1}"]')
    assert card.locator(".placeholder").inner_text() == "no image"
    assert page.locator("#results img.thumb").count() == K - 1


@pytest.fixture(scope="module")
def keyed_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with API keys on every /v1 endpoint (where the service has API keys)."""
    if "auth_mode" not in Settings.model_fields:
        pytest.skip("this version of the service has no API keys (Settings.auth_mode)")
    keys: dict[str, Any] = {"auth_mode": "all", "api_keys": "secret-key"}
    settings = Settings(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("web_keyed"), **keys)
    with serve_in_thread(create_app(settings)) as url:
        yield url


def test_api_key_is_sent_when_typed(browser: Any, keyed_server: str) -> None:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    try:
        pg.goto(keyed_server + "/")  # the page itself needs no key
        pg.wait_for_selector("body[data-ready=true]", state="attached")
        pg.wait_for_selector("#error:not([hidden])")
        r = httpx.get(f"{keyed_server}/v1/galleries", timeout=30)
        assert r.status_code == 401
        assert pg.inner_text("#error .error-message") == r.json()["error"]["message"]
        pg.fill("#api-key", "secret-key")
        pg.dispatch_event("#api-key", "change")
        pg.wait_for_selector("#error", state="hidden")
        pg.wait_for_selector(
            "#gallery option", state="attached"
        )  # the list fills after the error clears
        options = pg.eval_on_selector_all("#gallery option", "os => os.map(o => o.textContent)")
        assert options == ["no gallery yet: add images below"]
        # With a gallery: results, crops (fetched with the key) and the trajectory show.
        pngs = [person_png(i) for i in range(3)]
        r = httpx.post(
            f"{keyed_server}/v1/galleries/{GALLERY}/items",
            files=[("images", (f"p{i}.png", png, "image/png")) for i, png in enumerate(pngs)],
            data={"items": json.dumps([{"camera": "c1", "timestamp": i} for i in range(3)])},
            headers={"X-API-Key": "secret-key"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        pg.dispatch_event("#api-key", "change")
        pg.wait_for_selector(f'#gallery option[value="{GALLERY}"]', state="attached")
        search(pg, pngs[0])
        cards = shown_matches(pg, reranked=False)
        assert cards[0]["id"] == 1
        if has_image_route(keyed_server, {"X-API-Key": "secret-key"}):
            assert all(c["thumb"] > 0 for c in cards), cards
        pg.wait_for_selector("#trajectory:not([hidden])")
    finally:
        context.close()
