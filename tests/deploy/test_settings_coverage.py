"""Every REID_* name in the deploy files is a real setting, and the env example documents all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.deploy.dockerfile import load_dockerfile
from tests.deploy.helpers import (
    COMPOSE,
    COMPOSE_CPU,
    COMPOSE_MILVUS,
    DOCKERFILE,
    ENV_EXAMPLE,
    K8S,
    load_compose,
    load_manifests,
    read_env_file,
)

SETTING_NAMES = {f"REID_{name.upper()}" for name in Settings.model_fields}
CONTAINER_VALUES = {"REID_MODEL_DIR", "REID_DATA_DIR", "REID_HOST"}
"""Settings whose example value is the container's, not the code default."""


def _settings_from_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    """Settings read from exactly ``values`` in the environment, as the container does."""
    import os

    for name in [n for n in os.environ if n.startswith("REID_")]:
        monkeypatch.delenv(name)
    base = {"REID_MODEL_DIR": "/models/x/1", "REID_DATA_DIR": "/data"}
    for name, value in {**base, **values}.items():
        monkeypatch.setenv(name, value)
    return Settings()  # type: ignore[call-arg]


def _unknown(names: set[str], where: str) -> str:
    return f"{where}: not settings of service/settings.py: {sorted(names - SETTING_NAMES)}"


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    active, commented, _ = read_env_file(ENV_EXAMPLE)
    names = set(active) | set(commented)
    assert names <= SETTING_NAMES, _unknown(names, str(ENV_EXAMPLE))
    assert names >= SETTING_NAMES, f"undocumented settings: {sorted(SETTING_NAMES - names)}"


def test_every_env_example_line_has_a_comment_above() -> None:
    _, _, lines = read_env_file(ENV_EXAMPLE)
    text = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for name, lineno in lines.items():
        above = text[lineno - 2].strip()
        assert above.startswith("#") and not re.match(r"#\s*REID_\w+=", above), (
            f"{ENV_EXAMPLE}:{lineno}: {name} has no explanation above it"
        )


def test_env_example_values_are_valid_and_the_code_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    active, _, _ = read_env_file(ENV_EXAMPLE)
    settings = _settings_from_env(monkeypatch, active)
    defaults = Settings.model_fields
    for name in active.keys() - CONTAINER_VALUES:
        field = name.removeprefix("REID_").lower()
        assert getattr(settings, field) == defaults[field].default, (
            f"{name}={active[name]} differs from the code default {defaults[field].default!r}"
        )
    assert settings.host == "0.0.0.0"
    assert str(settings.model_dir) == active["REID_MODEL_DIR"]


def test_commented_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    _, commented, _ = read_env_file(ENV_EXAMPLE)
    _settings_from_env(monkeypatch, commented)


def _compose_environments() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in (COMPOSE, COMPOSE_CPU, COMPOSE_MILVUS):
        for name, service in load_compose(path)["services"].items():
            env = service.get("environment", {})
            if isinstance(env, list):
                env = dict(e.split("=", 1) for e in env)
            out.append((f"{path.name}:{name}", env))
    return out


@pytest.mark.parametrize(("where", "env"), _compose_environments(), ids=lambda x: str(x)[:40])
def test_compose_environment_names_are_settings(
    where: str, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reid = {k: str(v) for k, v in env.items() if k.startswith("REID_")}
    assert set(reid) <= SETTING_NAMES, _unknown(set(reid), where)
    _settings_from_env(monkeypatch, reid)


def test_dockerfile_env_names_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = load_dockerfile(DOCKERFILE).env("service")
    reid = {k: v for k, v in env.items() if k.startswith("REID_")}
    assert set(reid) <= SETTING_NAMES, _unknown(set(reid), "Dockerfile")
    assert _settings_from_env(monkeypatch, reid).port == 8000


def _configmap(path: Path) -> dict[str, str]:
    (doc,) = [d for d in load_manifests(path) if d["kind"] == "ConfigMap"]
    return dict(doc["data"])


def test_configmap_names_and_values_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _configmap(K8S / "configmap.yaml")
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert set(data) <= SETTING_NAMES, _unknown(set(data), "configmap.yaml")
    settings = _settings_from_env(monkeypatch, data)
    assert settings.host == "0.0.0.0"
    active, _, _ = read_env_file(ENV_EXAMPLE)
    missing = set(active) - set(data)
    assert not missing, f"set in the env example but not in the ConfigMap: {sorted(missing)}"


def _secret_settings() -> set[str]:
    """Settings typed as secrets (SecretStr, alone or in a container)."""
    return {
        f"REID_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def test_secrets_are_never_given_in_committed_files() -> None:
    secrets = _secret_settings()
    active, commented, _ = read_env_file(ENV_EXAMPLE)
    assert not secrets & set(active), "the env example must leave secrets commented out"
    assert secrets <= set(commented), "document each secret as a commented-out line"
    assert not secrets & set(_configmap(K8S / "configmap.yaml")), "secrets belong in a Secret"
    for where, env in _compose_environments():
        for name in secrets & set(env):  # only as a required variable of the shell: ${X:?why}
            assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}", str(env[name])), (
                f"{where}: {name} given in the compose file"
            )
