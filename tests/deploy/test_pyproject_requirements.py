"""deploy/docker/pyproject_requirements.py against hand-written projects and the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import REPO, load_requirements_script

script = load_requirements_script()

PROJECT = {
    "name": "My_Proj",
    "dependencies": ["numpy>=1.26", "pillow"],
    "optional-dependencies": {
        "core": ["fastapi>=0.110", "numpy>=1.26"],
        "cpu": ["my-proj[core]", "onnxruntime>=1.18; platform_machine == 'x86_64'"],
        "all": ["my.proj[cpu,core]", "torch>=2.3"],
        "loop": ["my_proj[loop]", "x"],
    },
}


def test_self_references_are_expanded_in_order_without_duplicates() -> None:
    assert script.expand_requirements(PROJECT, ["cpu"]) == [
        "numpy>=1.26",
        "pillow",
        "fastapi>=0.110",
        "onnxruntime>=1.18; platform_machine == 'x86_64'",
    ]
    assert script.expand_requirements(PROJECT, ["all"])[-1] == "torch>=2.3"
    assert script.expand_requirements(PROJECT, []) == ["numpy>=1.26", "pillow"]
    assert script.expand_requirements(PROJECT, ["loop"]) == ["numpy>=1.26", "pillow", "x"]


def test_unknown_extra_is_named() -> None:
    with pytest.raises(ValueError, match="no extra 'gpu'.*valid: all, core, cpu, loop"):
        script.expand_requirements(PROJECT, ["gpu"])


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("Faiss_CPU>=1.8", "faiss-cpu"),
        ("onnxruntime-gpu", "onnxruntime-gpu"),
        ("a.b[c] ; x", "a-b"),
    ],
)
def test_requirement_name(requirement: str, name: str) -> None:
    assert script.requirement_name(requirement) == name


def test_main_prints_the_real_service_gpu_requirements(capsys: pytest.CaptureFixture[str]) -> None:
    assert script.main([str(REPO / "pyproject.toml"), "service-gpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "onnxruntime-gpu>=1.18" in lines and not any(line.startswith("reid") for line in lines)


def test_main_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert script.main([str(tmp_path / "missing.toml"), "service"]) == 2
    assert "missing.toml" in capsys.readouterr().err
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.x]\n", encoding="utf-8")
    assert script.main([str(bad)]) == 2
    assert "no [project] table" in capsys.readouterr().err
