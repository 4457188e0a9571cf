"""The scale-out overlay deploy/k8s-milvus, rendered by kustomize (kubectl kustomize, offline)
and checked: Kubernetes schemas, several replicas with an autoscaler, an Indexed Job sharding
`reid index`, settings pointing at the Helm-installed Milvus, secrets from Secrets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from reidcore.cli import build_parser
from service.jobs.shard import Shard
from service.settings import Settings
from tests.deploy.helpers import K8S_MILVUS, load_manifests, schema_error

KUBERNETES_VERSION = "1.30.0"
"""Oldest Kubernetes the manifests must be valid for (Indexed Jobs' backoffLimitPerIndex)."""
VALUES = K8S_MILVUS / "milvus-values.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], dict[str, Any]]:
    """The overlay's output by (kind, name)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its kustomize renders the overlay)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S_MILVUS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = {}
    for doc in yaml.safe_load_all(proc.stdout):
        if doc:
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.fixture(scope="module")
def settings(docs: dict[tuple[str, str], dict[str, Any]]) -> Settings:
    data = docs[("ConfigMap", "reid-config")]["data"]
    values = {k.removeprefix("REID_").lower(): v for k, v in data.items()}
    return Settings(**values)  # type: ignore[arg-type]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def test_every_manifest_valid_against_the_kubernetes_schema(
    docs: dict[tuple[str, str], dict[str, Any]],
) -> None:
    errors = [schema_error(doc, KUBERNETES_VERSION) for doc in docs.values()]
    assert [e for e in errors if e] == []


def test_overlay_lists_every_file_but_the_helm_values() -> None:
    (kustomization,) = load_manifests(K8S_MILVUS / "kustomization.yaml")
    listed = set(kustomization["resources"]) | {p["path"] for p in kustomization["patches"]}
    files = {p.name for p in K8S_MILVUS.glob("*.yaml")} - {"kustomization.yaml", VALUES.name}
    assert listed - {"../k8s"} == files


def test_stateless_replicas_with_an_autoscaler(docs: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = docs[("Deployment", "reid")]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert ("PersistentVolumeClaim", "reid-gallery") not in docs, "no single-writer volume"
    volumes = spec["template"]["spec"]["volumes"]
    claims = [v["persistentVolumeClaim"] for v in volumes if "persistentVolumeClaim" in v]
    for claim in claims:  # shared by every replica: read-only, many readers
        assert claim.get("readOnly") is True
        pvc = docs[("PersistentVolumeClaim", claim["claimName"])]
        assert "ReadOnlyMany" in pvc["spec"]["accessModes"]
    hpa = docs[("HorizontalPodAutoscaler", "reid")]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "reid")
    assert 2 <= hpa["minReplicas"] <= spec["replicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in _container(deployment)["resources"]["requests"], "utilization needs requests"


def test_settings_point_at_the_helm_installed_milvus(settings: Settings) -> None:
    assert settings.gallery_backend == "milvus" and settings.blob_backend == "s3"
    assert settings.milvus_consistency == "Strong"
    assert settings.milvus_index_type != "FLAT", "FLAT scans every vector"
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert values["cluster"]["enabled"] is True
    uri = urlsplit(settings.milvus_uri)
    # release "milvus" in namespace "milvus" (the install command in the values file)
    assert uri.hostname == "milvus.milvus.svc.cluster.local"
    assert uri.port == values["service"]["port"]
    text = VALUES.read_text(encoding="utf-8")
    assert "helm install milvus milvus/milvus --namespace milvus" in text
    assert urlsplit(settings.s3_endpoint_url).hostname == "milvus-minio.milvus.svc.cluster.local"


def test_secrets_come_from_secrets(docs: dict[tuple[str, str], dict[str, Any]]) -> None:
    secret_names = {
        f"REID_{n.upper()}"
        for n, f in Settings.model_fields.items()
        if "SecretStr" in str(f.annotation)
    }
    assert not secret_names & set(docs[("ConfigMap", "reid-config")]["data"])
    for key in (("Deployment", "reid"), ("Job", "reid-index")):
        env = {e["name"]: e for e in _container(docs[key]).get("env", [])}
        for name in ("REID_MILVUS_TOKEN", "REID_S3_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in env[name]["valueFrom"], (key, name)


def test_index_job_shards_the_folder_by_completion_index(
    docs: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = docs[("Job", "reid-index")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert 1 <= spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["enableServiceLinks"] is False  # no REID_* variables from Services
    container = _container(job)
    argv = [*container["command"], *container["args"]]
    assert argv[0] == "reid"
    refs = [c["configMapRef"]["name"] for c in container["envFrom"]]
    assert refs == ["reid-config"]
    assert (
        container["image"].split(":")[0]
        == _container(docs[("Deployment", "reid")])["image"].split(":")[0]
    )
    assert "$(JOB_COMPLETION_INDEX)" in " ".join(argv)
    for index in range(spec["completions"]):  # pod i indexes part i of completions
        words = [w.replace("$(JOB_COMPLETION_INDEX)", str(index)) for w in argv[1:]]
        args = build_parser().parse_args(words)
        assert args.command == "index" and not args.reindex
        assert Shard.parse(args.shard) == Shard(index, spec["completions"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    inbox = next(m for p, m in mounts.items() if PurePosixPath(args.source).is_relative_to(p))
    assert inbox["readOnly"] is True
