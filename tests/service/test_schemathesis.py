"""The API contract: Schemathesis, every check, all its phases (coverage, fuzzing and the
stateful phase that follows the OpenAPI links), against the service on a local port.

Deterministic (``--generation-deterministic``, no example database) and bounded in examples
per operation, so it takes seconds, not minutes. What a valid image or archive is, and the
rules across form fields that JSON Schema cannot state, come from
``tests/service/schemathesis_hooks.py``.

A new endpoint or form field keeps this green by saying in the OpenAPI document what it
accepts: the media types of file fields (``service.api.schemas.multipart``), limits that come
from settings (``service.api.schemas.with_limits``), ``null``/empty optional form fields as
absent (``NULL_FORM``); rules across fields that JSON Schema cannot state go in the hooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 15
HOOKS = "tests.service.schemathesis_hooks"
STATEFUL_CONFIG = """\
# The stateful phase follows the links the OpenAPI document declares (add item -> get/delete
# item, submit job -> get/cancel job), not links Schemathesis infers: with inferred links
# (e.g. GET /v1/galleries -> any {gallery} operation) Schemathesis 4.32 put a valid gallery
# name from the list into a negative case whose only invalid part was that name, then
# reported the now valid request's 200 as "schema-violating request accepted" (ST201,
# "Invalid component: positive test case"), in about half the runs.
[phases.stateful.inference]
algorithms = []
"""


def _schemathesis(url: str, work: Path, key: str | None) -> subprocess.CompletedProcess[str]:
    """The CLI run from ``work``, where it keeps its report and its cache of past failures
    (which it would replay first: a fresh one each time keeps runs alike)."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # also: no example database
        "--exclude-deprecated",  # DELETE /v1/jobs/{id}: an old alias of POST .../cancel
        "--request-timeout",
        "60",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(work / "report"),
        *(["--header", f"X-API-Key: {key}"] if key else []),
    ]
    config = work / "schemathesis.toml"
    config.write_text(STATEFUL_CONFIG, encoding="utf-8")
    command[3:3] = ["--config-file", str(config)]  # a global option: before "run"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("auth_mode", ["none", "write"])
def test_schemathesis_finds_nothing(model_dir: Path, tmp_path: Path, auth_mode: str) -> None:
    """With keys on, the requests carry one, and the ``ignored_auth`` check also sends each
    operation that declares a security scheme without it (401 expected)."""
    key = "contract-key" if auth_mode != "none" else None
    settings = Settings(
        model_dir=model_dir,
        data_dir=tmp_path / "data",
        auth_mode=auth_mode,  # type: ignore[arg-type]
        api_keys=[key] if key else [],  # type: ignore[list-item]
    )
    with serve_in_thread(create_app(settings)) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        result = _schemathesis(url, tmp_path, key)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-8000:]
    assert "❌" not in out and "Failures:" not in out, out[-8000:]  # warnings may remain
    assert "Stateful" in out and "API Links" in out, out[-4000:]  # the stateful phase ran
    assert "inferred)" not in out, out[-4000:]  # ... on the declared links only
    # what makes the stateful phase able to chain calls at all
    add = schema["paths"]["/v1/galleries/{gallery}/items"]["post"]["responses"]["200"]
    assert set(add["links"]) == {"get_item", "delete_item"}
    submit = schema["paths"]["/v1/galleries/{gallery}/jobs"]["post"]["responses"]["202"]
    assert set(submit["links"]) == {"get_job", "cancel_job"}
    secured = {
        (path, method)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "security" in op
    }
    if auth_mode == "write":
        assert ("/v1/galleries/{gallery}/items", "post") in secured
        assert ("/v1/galleries/{gallery}/search", "post") not in secured
    else:
        assert not secured
