"""Optional API keys: none, write endpoints only, or all; health probes always open."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from service.api.auth import key_matches
from service.settings import Settings
from tests.service.conftest import random_image

KEY = "s3cret-key-1"


def _add(c: Any, headers: dict[str, str]) -> Any:
    files = [("images", ("a.png", random_image(1)))]
    data = {"items": json.dumps([{"camera": "a", "timestamp": 0}])}
    return c.post("/v1/galleries/g/items", files=files, data=data, headers=headers)


ENDPOINTS: dict[str, Callable[[Any, dict[str, str]], Any]] = {
    "healthz": lambda c, h: c.get("/healthz", headers=h),
    "readyz": lambda c, h: c.get("/readyz", headers=h),
    "metrics": lambda c, h: c.get("/metrics", headers=h),
    "embed (read)": lambda c, h: c.post(
        "/v1/embed", files=[("images", ("a.png", random_image(1)))], headers=h
    ),
    "list galleries (read)": lambda c, h: c.get("/v1/galleries", headers=h),
    "jobs list (read)": lambda c, h: c.get("/v1/jobs", headers=h),
    "add items (write)": _add,
    "delete gallery (write)": lambda c, h: c.delete("/v1/galleries/nope", headers=h),
    "submit job (write)": lambda c, h: c.post(
        "/v1/galleries/g/jobs", files={"archive": ("a.tar", b"x")}, headers=h
    ),
}
NEEDS_KEY = {
    "none": set(),
    "write": {"add items (write)", "delete gallery (write)", "submit job (write)"},
    "all": {k for k in ENDPOINTS if "(" in k},
}


@pytest.mark.parametrize("mode", ["none", "write", "all"])
def test_which_endpoints_need_a_key(
    make_client: Callable[..., Any], tmp_path: Path, mode: str
) -> None:
    c = make_client(tmp_path / "d", auth_mode=mode, api_keys=[KEY, "other-key"])
    for name, call in ENDPOINTS.items():
        without, wrong = call(c, {}), call(c, {"X-API-Key": KEY + "x"})
        bearer, header = (
            call(c, {"Authorization": f"Bearer {KEY}"}),
            call(c, {"X-API-Key": "other-key"}),
        )
        if name in NEEDS_KEY[mode]:
            for r in (without, wrong):
                assert r.status_code == 401, (name, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")
        else:
            assert without.status_code != 401, name
        assert bearer.status_code != 401 and header.status_code != 401, name


def test_private_metrics(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "d", auth_mode="write", api_keys=[KEY], metrics_public=False)
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_keys_from_environment_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_API_KEYS", " key-one ,key-two,, ")
    monkeypatch.setenv("REID_AUTH_MODE", "all")
    s = Settings(model_dir=Path("m"), data_dir=Path("d"))  # type: ignore[call-arg]
    assert [k.get_secret_value() for k in s.api_keys] == ["key-one", "key-two"]
    assert "key-one" not in repr(s)  # secrets never printed
    monkeypatch.setenv("REID_API_KEYS", "")
    with pytest.raises(ValidationError, match="needs at least one key"):
        Settings(model_dir=Path("m"), data_dir=Path("d"))  # type: ignore[call-arg]


def test_key_matching() -> None:
    keys = [SecretStr("alpha"), SecretStr("beta")]
    assert key_matches("beta", keys) and key_matches("alpha", keys)
    assert not key_matches("alph", keys) and not key_matches("", keys)
    assert not key_matches("beta ", keys)
