"""deploy/compose.milvus.yaml (Milvus standalone with etcd and MinIO, two service replicas,
nginx on one port) and deploy/nginx/reid.conf, read statically (no Docker here)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.app import create_app
from service.settings import Settings
from tests.deploy.helpers import (
    COMPOSE,
    COMPOSE_MILVUS,
    ENV_EXAMPLE,
    NGINX_CONF,
    REPO,
    ComposeReset,
    load_compose,
    read_env_file,
)

INTERPOLATION = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)(:?[-?])([^}]*)\}$")


@pytest.fixture(scope="module")
def milvus() -> dict[str, Any]:
    return load_compose(COMPOSE_MILVUS)


@pytest.fixture(scope="module")
def services(milvus: dict[str, Any]) -> dict[str, Any]:
    return dict(milvus["services"])


@pytest.fixture(scope="module")
def nginx() -> str:
    return re.sub(r"#[^\n]*", "", NGINX_CONF.read_text(encoding="utf-8"))


def _directives(conf: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"(?m)^\s*{name}\s+([^;{{}}\n]+);", conf)]


def test_official_images_pinned(services: dict[str, Any]) -> None:
    images = {n: s["image"] for n, s in services.items() if "image" in s}
    assert images["milvus"].startswith("milvusdb/milvus:v2.")
    assert images["etcd"].startswith("quay.io/coreos/etcd:v3.")
    assert images["minio"].startswith("minio/minio:RELEASE.")
    assert images["lb"].startswith("nginx:")
    assert not any(i.endswith(":latest") for i in images.values())
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]


def test_milvus_reaches_etcd_and_minio(services: dict[str, Any]) -> None:
    env = services["milvus"]["environment"]
    assert env["ETCD_ENDPOINTS"].split(":")[0] == "etcd"
    assert env["MINIO_ADDRESS"] == "minio:9000"
    assert (env["MINIO_ACCESS_KEY_ID"], env["MINIO_SECRET_ACCESS_KEY"]) == (
        services["minio"]["environment"]["MINIO_ROOT_USER"],
        services["minio"]["environment"]["MINIO_ROOT_PASSWORD"],
    )
    for dep in ("etcd", "minio"):
        assert services["milvus"]["depends_on"][dep]["condition"] == "service_healthy"
        assert "healthcheck" in services[dep]


def test_two_replicas_on_milvus_and_s3(services: dict[str, Any]) -> None:
    reid = services["reid"]
    assert reid["deploy"]["replicas"] == 2
    assert isinstance(reid["ports"], ComposeReset) or reid["ports"] == []
    env = reid["environment"]
    values = {k.removeprefix("REID_").lower(): v for k, v in env.items()}
    settings = Settings(model_dir="/models/x/1", data_dir="/data", **values)
    assert settings.gallery_backend == "milvus" and settings.blob_backend == "s3"
    uri = urlsplit(settings.milvus_uri)
    assert (uri.hostname, uri.port) == ("milvus", 19530) and "milvus" in services
    assert settings.milvus_consistency == "Strong"  # a write on one replica, read on the other
    assert urlsplit(settings.s3_endpoint_url).hostname == "minio"
    assert env["REID_S3_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert (
        env["REID_S3_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    )
    for dep in ("milvus", "minio"):
        assert reid["depends_on"][dep]["condition"] == "service_healthy"


def test_replicas_do_not_share_the_gallery_volume(services: dict[str, Any]) -> None:
    """Two replicas on the one gallery-data volume would both resume the same job files."""
    mounts = {m["target"]: m for m in services["reid"]["volumes"]}
    assert mounts["/data"]["type"] == "volume" and "source" not in mounts["/data"]
    assert mounts["/models"]["read_only"] is True
    base = {m["target"]: m for m in load_compose(COMPOSE)["services"]["reid"]["volumes"]}
    assert mounts["/models"]["source"] == base["/models"]["source"]


def test_one_published_port_through_nginx(services: dict[str, Any]) -> None:
    def ports(service: dict[str, Any]) -> list[Any]:
        value = service.get("ports", [])
        return [] if isinstance(value, ComposeReset) else list(value)

    published = [(n, p) for n, s in services.items() for p in ports(s)]
    assert len(published) == 1 and published[0][0] == "lb"
    host, container = str(published[0][1]).rsplit(":", 1)
    assert host == "${HOST_PORT:-8000}"
    (conf_mount,) = services["lb"]["volumes"]
    assert (REPO / conf_mount["source"]).resolve() == NGINX_CONF
    assert conf_mount["read_only"] is True
    assert services["lb"]["depends_on"]["reid"]["condition"] == "service_healthy"
    assert "healthcheck" in load_compose(COMPOSE)["services"]["reid"]
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert _directives(re.sub(r"#[^\n]*", "", conf), "listen") == [container]


def test_nginx_sends_to_every_replica_on_the_service_port(nginx: str) -> None:
    active, _, _ = read_env_file(ENV_EXAMPLE)
    servers = {s.split()[0] for s in _directives(nginx, "server")}
    assert servers == {f"reid:{active['REID_PORT']}"}
    # uploads: the service enforces REID_MAX_ARCHIVE_BYTES itself and streams the body
    assert _directives(nginx, "client_max_body_size") == ["0"]
    assert _directives(nginx, "proxy_request_buffering") == ["off"]


def test_job_requests_of_one_client_reach_one_replica(nginx: str) -> None:
    """Job records are in the replica that took the job: nginx routes every job path by the
    client's address (hash) and everything else round-robin; checked against the app's
    own routes."""
    (pattern,) = re.findall(r"location ~ (\S+) \{\s*proxy_pass http://reid_jobs;", nginx)
    assert re.search(r"upstream reid_jobs \{\s*hash \$remote_addr", nginx)
    app = create_app(Settings(model_dir=REPO / "missing", data_dir=REPO / "missing"))
    paths = {getattr(r, "path", "") for r in app.state.routes}
    jobs = {p for p in paths if "/jobs" in p or p.endswith("/reindex")}
    assert jobs, "no job routes found"
    for path in paths:
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        assert bool(re.search(pattern, concrete)) == (path in jobs), path


def test_credentials_come_from_the_shell_never_the_file(milvus: dict[str, Any]) -> None:
    """Secrets are `${VAR:?message}` (required, no default); user names may default."""
    env = milvus["services"]["minio"]["environment"]
    m = INTERPOLATION.match(env["MINIO_ROOT_PASSWORD"])
    assert m is not None and m.group(2) == ":?"
    assert INTERPOLATION.match(env["MINIO_ROOT_USER"]) is not None
