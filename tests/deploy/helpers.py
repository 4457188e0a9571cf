"""Shared readers for the deploy tests: YAML with Compose tags, env files, tools, a fake server."""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "deploy" / "compose.cpu.yaml"
COMPOSE_MILVUS = REPO / "deploy" / "compose.milvus.yaml"
NGINX_CONF = REPO / "deploy" / "nginx" / "reid.conf"
ENV_EXAMPLE = REPO / "deploy" / "reid.env.example"
K8S = REPO / "deploy" / "k8s"
K8S_MILVUS = REPO / "deploy" / "k8s-milvus"
"""The scale-out overlay of K8S (beside it: kustomize refuses an overlay inside its base)."""
REQUIREMENTS_SCRIPT = REPO / "deploy" / "docker" / "pyproject_requirements.py"

TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "pytorch", "triton"}
"""Distributions that must never reach the service image."""

_ENV_LINE = re.compile(r"^(#\s*)?(REID_[A-Z0-9_]+)=(.*)$")


class ComposeReset:
    """A Compose ``!reset`` tag (the value it carries is ignored, as Compose does)."""


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also reads Compose's ``!reset`` and ``!override`` tags."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> ComposeReset:
    return ComposeReset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load_compose(path: Path) -> dict[str, Any]:
    """A compose file as a dict (merge keys resolved, ``!reset`` as :class:`ComposeReset`)."""
    with path.open(encoding="utf-8") as f:
        data = yaml.load(f, Loader=ComposeLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    return data


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``."""
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def schema_error(doc: dict[str, Any], kubernetes_version: str) -> str | None:
    """What kubernetes-validate (offline schemas, strict) finds wrong in ``doc``; None when
    valid. Skips the test when kubernetes-validate is not installed."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes-validate not installed (offline schemas; the dev extra)")
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}"
    return None


def read_env_file(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """(active ``REID_*`` values, commented-out ``REID_*`` examples, line of each name).

    A line ``# REID_X=...`` documents a setting left unset. Raises ``ValueError`` on a
    name given twice or a non-comment line that is not ``NAME=value``.
    """
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        m = _ENV_LINE.match(line)
        if m is None:
            if line and not line.startswith("#"):
                raise ValueError(f"{path}:{lineno}: not NAME=value: {raw!r}")
            continue
        name, value = m.group(2), m.group(3)
        if name in lines:
            raise ValueError(f"{path}:{lineno}: {name} given twice (first on line {lines[name]})")
        (commented if m.group(1) else active)[name] = value
        lines[name] = lineno
    return active, commented, lines


def load_requirements_script() -> ModuleType:
    """deploy/docker/pyproject_requirements.py as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pyproject_requirements", REQUIREMENTS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(name: str) -> str | None:
    """Path of an executable installed beside this Python (the venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def reid_help(subcommand: str) -> str:
    """Output of ``reid SUBCOMMAND --help`` run as a process; fails the test on non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "reidcore.cli", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, f"reid {subcommand} --help exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers each path with the status in the server's ``statuses`` (404 otherwise)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = self.server.statuses.get(self.path, 404)  # type: ignore[attr-defined]
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""


@contextmanager
def fake_server(statuses: dict[str, int]) -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server on a free port: (port, paths requested)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.statuses = statuses  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(words: list[str], port: int) -> int:
    """Exit status of a healthcheck command, ``python`` mapped to this interpreter."""
    if words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    env = {"REID_PORT": str(port), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(words, env=env, capture_output=True, timeout=30, check=False).returncode
