"""API docs without internet: /docs and /redoc load every asset from the service itself.

Plain HTTP: the pages reference no other host and their assets are served (the package's
bytes, cacheable, nothing else of the package reachable). In headless Chromium (skipped
where Chromium or Playwright is absent, like tests/service/test_web_page.py) with every
request to a host other than 127.0.0.1 aborted: Swagger UI renders the service's
operations, ReDoc renders them too, and no request ever left for another host.

ReDoc's bundle shows a "Redocly" logo from its CDN in the side bar; the pages' CSP stops that
image before any request is made (a console line says so) and ReDoc hides it on error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service.api.docs_routes import ASSETS, ASSETS_URL
from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread
from tests.service.test_web_page import CHROMIUM_ARGS, WAIT_MS, browser, chromium  # noqa: F401

PAGES = ("/docs", "/redoc")
REDOC_LOGO = "cdn.redoc.ly/redoc/logo-mini.svg"
"""The one external reference in ReDoc's bundle that the page meets (see the docstring)."""
URL_ATTR = re.compile(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""")


def referenced_urls(html: str) -> list[str]:
    """Every src/href/url value of a page."""
    return URL_ATTR.findall(html)


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_reference_no_other_host(page: str, tmp_path: Path, make_client: Any) -> None:
    client = make_client(tmp_path / "data")
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = referenced_urls(r.text)
    assert any(ASSETS_URL in u for u in urls), urls  # the assets are this service's
    for url in urls:
        assert not urlsplit(url).netloc and not url.startswith("//"), url
    assert "http://" not in r.text and "https://" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    for url in urls:
        if url.startswith(ASSETS_URL):
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert "max-age" in asset.headers["cache-control"]


def test_assets_are_the_packaged_files_and_nothing_else(tmp_path: Path, make_client: Any) -> None:
    client = make_client(tmp_path / "data")
    static = resources.files("fastapi_offline") / "static"
    for name, media_type in ASSETS.items():
        r = client.get(f"{ASSETS_URL}/{name}")
        assert r.status_code == 200
        assert r.content == (static / name).read_bytes()
        assert r.headers["content-type"] == media_type
    for name in ("core.py", "__init__.py", "nothing.js"):
        r = client.get(f"{ASSETS_URL}/{name}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


def test_openapi_schema_omits_the_docs_routes(tmp_path: Path, make_client: Any) -> None:
    paths = make_client(tmp_path / "data").get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith(("/docs", "/redoc"))]


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("docs_data"))
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def offline_page(browser: Any) -> Iterator[tuple[Any, list[str], list[str]]]:  # noqa: F811
    """A page whose requests to any host but 127.0.0.1 are aborted (and recorded)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    blocked: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg, blocked, errors
    context.close()


def operation_paths(server: str) -> list[str]:
    return sorted(httpx.get(f"{server}/openapi.json", timeout=30).json()["paths"])


def test_swagger_ui_renders_operations_offline(server: str, offline_page: Any) -> None:
    pg, blocked, errors = offline_page
    pg.goto(server + "/docs")
    pg.wait_for_selector(".opblock .opblock-summary-path")
    shown = set(
        pg.eval_on_selector_all(
            ".opblock .opblock-summary-path",
            "els => els.map(e => e.getAttribute('data-path') || e.textContent.trim())",
        )
    )
    paths = operation_paths(server)
    assert {p.replace("\u200b", "") for p in shown} == set(paths)
    assert pg.title() == "reid - Swagger UI"
    assert blocked == [] and errors == [], (blocked, errors)


def test_redoc_renders_operations_offline(server: str, offline_page: Any) -> None:
    pg, blocked, errors = offline_page
    pg.goto(server + "/redoc")
    pg.wait_for_selector("[data-section-id^='operation/']", state="attached")
    sections = pg.eval_on_selector_all(
        "[data-section-id^='operation/']", "els => els.map(e => e.dataset.sectionId)"
    )
    assert len(sections) >= len(operation_paths(server))
    assert pg.locator("img[alt='redocly logo']").count() == 0  # hidden after the CSP refusal
    assert blocked == [] and [e for e in errors if REDOC_LOGO not in e] == [], (blocked, errors)
