"""Kubernetes manifests: schema validation (kubernetes-validate, offline) and structure."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.dockerfile import load_dockerfile
from tests.deploy.helpers import DOCKERFILE, K8S, load_manifests, schema_error

KUBERNETES_VERSION = "1.30.0"
"""Oldest Kubernetes the manifests must be valid for."""


def _all_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_manifests(path)
    ]


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], dict[str, Any]]:
    """Manifests by (kind, name)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for _, doc in _all_docs():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in out, f"{key} defined twice"
        out[key] = doc
    return out


@pytest.fixture(scope="module")
def pod(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return docs[("Deployment", "reid")]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c


def _cpu(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _port(container: dict[str, Any], port: str | int) -> int:
    """A probe's or Service's port (number or container port name) as a container port."""
    for p in container["ports"]:
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


@pytest.mark.parametrize(
    ("file", "doc"), _all_docs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_manifest_valid_against_the_kubernetes_schema(file: str, doc: dict[str, Any]) -> None:
    error = schema_error(doc, KUBERNETES_VERSION)
    assert error is None, f"{file}: {error}"


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_manifests(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kinds_present(docs: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {kind for kind, _ in docs}
    assert kinds == {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}


def test_probes_hit_health_endpoints_on_the_container_port(
    container: dict[str, Any], docs: dict[tuple[str, str], dict[str, Any]]
) -> None:
    config = docs[("ConfigMap", "reid-config")]["data"]
    listen = int(config["REID_PORT"])
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert _port(container, get["port"]) == listen, f"{probe} port is not REID_PORT"


def test_service_routes_to_the_pods(
    docs: dict[tuple[str, str], dict[str, Any]], container: dict[str, Any]
) -> None:
    service = docs[("Service", "reid")]["spec"]
    labels = docs[("Deployment", "reid")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    for port in service["ports"]:
        assert _port(container, port["targetPort"]) == 8000


def test_volumes_reference_existing_claims_and_models_are_read_only(
    pod: dict[str, Any], container: dict[str, Any], docs: dict[tuple[str, str], dict[str, Any]]
) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in docs, f"no PVC {claim}"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(m["name"] for m in mounts.values()) <= set(volumes)
    config = docs[("ConfigMap", "reid-config")]["data"]
    models = next(p for p in mounts if PurePosixPath(config["REID_MODEL_DIR"]).is_relative_to(p))
    assert mounts[models].get("readOnly") is True
    assert volumes[mounts[models]["name"]]["persistentVolumeClaim"].get("readOnly") is True
    gallery = mounts[config["REID_DATA_DIR"]]
    assert not gallery.get("readOnly", False)
    claim = volumes[gallery["name"]]["persistentVolumeClaim"]["claimName"]
    assert "ReadWriteOnce" in docs[("PersistentVolumeClaim", claim)]["spec"]["accessModes"]


def test_single_writer_on_the_gallery(docs: dict[tuple[str, str], dict[str, Any]]) -> None:
    spec = docs[("Deployment", "reid")]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"


def test_resources_gpu_cpu_memory(
    container: dict[str, Any], docs: dict[tuple[str, str], dict[str, Any]]
) -> None:
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert (
        resources["requests"].get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"])
        == (resources["limits"]["nvidia.com/gpu"])
    ), "extended resources: requests must equal limits"
    assert _cpu(resources["requests"]["cpu"]) <= _cpu(resources["limits"]["cpu"])
    threads = int(docs[("ConfigMap", "reid-config")]["data"]["REID_THREADS"])
    assert 1 <= threads <= _cpu(resources["limits"]["cpu"]), (
        "REID_THREADS: 0 would count node cores"
    )


def test_runs_as_the_image_user_without_privileges(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    user = load_dockerfile(DOCKERFILE).effective("service", "USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid or uid))
    assert security["fsGroup"] == int(gid or uid), "the gallery volume must be writable"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_settings_come_from_the_configmap_without_service_links(
    pod: dict[str, Any], container: dict[str, Any], docs: dict[tuple[str, str], dict[str, Any]]
) -> None:
    refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    assert refs and all(("ConfigMap", r) in docs for r in refs)
    # Service links inject <SERVICE>_PORT=tcp://... into pods; a Service named reid* would
    # set REID_PORT and other REID_* variables that the settings read.
    services = [name for kind, name in docs if kind == "Service"]
    if any(re.sub(r"\W", "_", n.upper()).startswith("REID") for n in services):
        assert pod.get("enableServiceLinks") is False


def test_image_is_the_service_image(container: dict[str, Any]) -> None:
    (kustomization,) = load_manifests(K8S / "kustomization.yaml")
    names = {i["name"] for i in kustomization.get("images", [])}
    assert container["image"].split(":")[0] in names
    assert container["image"].startswith("reid-service")
