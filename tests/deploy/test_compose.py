"""docker-compose.yml and the CPU override, read with PyYAML and checked against the other files."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from reidcore.cli import build_parser
from tests.deploy.dockerfile import command_words, healthcheck_command, load_dockerfile
from tests.deploy.helpers import (
    COMPOSE,
    COMPOSE_CPU,
    DOCKERFILE,
    ENV_EXAMPLE,
    REPO,
    ComposeReset,
    fake_server,
    load_compose,
    read_env_file,
    run_healthcheck,
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mounts by container path, short syntax turned into the long one."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            kind = "bind" if parts[0].startswith((".", "/", "$")) else "volume"
            v = {"type": kind, "source": parts[0], "target": parts[1]}
            v["read_only"] = len(parts) > 2 and "ro" in parts[2].split(",")
        out[v["target"]] = v
    return out


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _argv(service: dict[str, Any]) -> list[str]:
    return list(service["entrypoint"]) + list(service["command"])


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"reid", "train", "export"}
    assert "profiles" not in services["reid"], "the service starts with a plain `up`"
    assert services["train"]["profiles"] == ["train"]
    assert services["export"]["profiles"] == ["train"]


def test_build_targets_are_dockerfile_stages(compose: dict[str, Any]) -> None:
    stages = load_dockerfile(DOCKERFILE).stages
    targets = {name: s["build"]["target"] for name, s in compose["services"].items()}
    assert targets == {"reid": "service", "train": "train", "export": "train"}
    assert set(targets.values()) <= set(stages)


def test_service_port_maps_to_the_exposed_port(compose: dict[str, Any]) -> None:
    (mapping,) = compose["services"]["reid"]["ports"]
    container_port = str(mapping).rsplit(":", 1)[1]
    exposed = load_dockerfile(DOCKERFILE).stages["service"].all("EXPOSE")[0].args
    active, _, _ = read_env_file(ENV_EXAMPLE)
    assert container_port == exposed == active["REID_PORT"]


def test_models_read_only_and_gallery_on_a_named_volume(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["reid"])
    assert mounts["/models"]["type"] == "bind" and mounts["/models"]["read_only"] is True
    data = mounts["/data"]
    assert data["type"] == "volume" and data["source"] in compose["volumes"]
    assert not data.get("read_only", False)
    active, _, _ = read_env_file(ENV_EXAMPLE)
    assert active["REID_DATA_DIR"] == "/data"
    assert PurePosixPath(active["REID_MODEL_DIR"]).parts[:2] == ("/", "models")


def test_gpu_reserved_for_the_service_and_training(compose: dict[str, Any]) -> None:
    for name in ("reid", "train"):
        devices = _gpu_devices(compose["services"][name])
        assert devices, f"{name}: no deploy.resources.reservations.devices"
        (device,) = devices
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert device.get("count", 1) == 1 or device.get("device_ids")


def test_healthcheck_asks_readyz(compose: dict[str, Any]) -> None:
    check = compose["services"]["reid"]["healthcheck"]
    assert check["test"][0] == "CMD"
    with fake_server({"/readyz": 200}) as (port, seen):
        assert run_healthcheck(check["test"][1:], port) == 0
        assert seen == ["/readyz"]
    with fake_server({"/readyz": 503}) as (port, _):
        assert run_healthcheck(check["test"][1:], port) != 0
    image_check = load_dockerfile(DOCKERFILE).effective("service", "HEALTHCHECK")
    assert image_check is not None
    assert check["test"][1:] == healthcheck_command(image_check.args), "image and compose differ"


def test_env_files_exist_or_are_optional(compose: dict[str, Any]) -> None:
    env_files = compose["services"]["reid"]["env_file"]
    paths = [e["path"] if isinstance(e, dict) else e for e in env_files]
    assert "deploy/reid.env.example" in paths
    for entry in env_files:
        required = entry.get("required", True) if isinstance(entry, dict) else True
        path = entry["path"] if isinstance(entry, dict) else entry
        assert not required or (REPO / path).is_file(), f"env_file {path} is required but missing"


def test_train_and_export_commands_are_valid_reid_commands(compose: dict[str, Any]) -> None:
    parser = build_parser()
    train = parser.parse_args(_argv(compose["services"]["train"])[1:])
    assert train.command == "train" and (REPO / train.config).is_file()
    export = parser.parse_args(_argv(compose["services"]["export"])[1:])
    assert export.command == "export"


def test_export_writes_where_the_service_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workdir = load_dockerfile(DOCKERFILE).effective("train", "WORKDIR")
    assert workdir is not None
    export_mounts = _mounts(services["export"])
    export = build_parser().parse_args(_argv(services["export"])[1:])
    out = PurePosixPath(workdir.args) / export.out  # relative to the image's working directory
    checkpoint = PurePosixPath(workdir.args) / export.checkpoint
    models_target = next(t for t in export_mounts if out.is_relative_to(t))
    assert not export_mounts[models_target].get("read_only", False)
    assert export_mounts[models_target]["source"] == _mounts(services["reid"])["/models"]["source"]
    served = PurePosixPath("/models") / out.relative_to(models_target)
    active, _, _ = read_env_file(ENV_EXAMPLE)
    assert str(served) == active["REID_MODEL_DIR"], "the env example serves another folder"
    assert any(checkpoint.is_relative_to(t) for t in _mounts(services["train"])), checkpoint


def test_training_data_read_only_and_paths_match_the_configs(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["train"])
    workdir = load_dockerfile(DOCKERFILE).effective("train", "WORKDIR")
    assert workdir is not None
    shared = PurePosixPath(workdir.args).parent / "shared"
    for sub in ("data", "weights"):
        mount = mounts[str(shared / sub)]
        assert mount["read_only"] is True, f"{sub} must be read-only"
    train = build_parser().parse_args(_argv(compose["services"]["train"])[1:])
    text = (REPO / train.config).read_text(encoding="utf-8")
    assert "../shared/data/" in text, "the config no longer reads ../shared/data: update the mounts"


def test_cpu_override_resets_the_gpu_reservations() -> None:
    override = load_compose(COMPOSE_CPU)["services"]
    assert isinstance(override["reid"]["deploy"], ComposeReset)
    assert isinstance(override["train"]["deploy"], ComposeReset)
    assert override["reid"]["environment"]["REID_DEVICE"] == "cpu"


def test_service_command_is_the_image_default(compose: dict[str, Any]) -> None:
    """The service keeps the image's CMD, which reads REID_MODEL_DIR / REID_DATA_DIR."""
    reid = compose["services"]["reid"]
    assert "command" not in reid and "entrypoint" not in reid
    cmd = load_dockerfile(DOCKERFILE).effective("service", "CMD")
    assert cmd is not None and "$REID_MODEL_DIR" in command_words(cmd.args)[-1]
