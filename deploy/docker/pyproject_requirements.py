"""Print the third-party requirements of this project for a set of extras, one per line.

The Dockerfile installs these in a layer of their own, before the source is copied, so that
editing the code does not reinstall PyTorch or the CUDA libraries. Extras that name the project
itself (``reid[serve-core]``) are expanded recursively; the project is never printed.

Usage: ``python3 pyproject_requirements.py PYPROJECT [EXTRA ...]`` (Python 3.11+, stdlib only:
it runs in the image before anything is installed).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name (``Faiss_CPU`` -> ``faiss-cpu``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """Normalised distribution name of a PEP 508 requirement string."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalize_name(match.group(1))


def _self_extras(requirement: str, project: str) -> list[str] | None:
    """The extras of ``requirement`` when it names ``project`` itself, else None."""
    match = _REQUIREMENT.match(requirement)
    if match is None or normalize_name(match.group(1)) != project:
        return None
    return [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]


def expand_requirements(project: Mapping[str, Any], extras: Sequence[str]) -> list[str]:
    """Core dependencies plus those of ``extras``, self-references expanded, in order, deduplicated.

    ``project`` is the ``[project]`` table of a pyproject.toml. Raises ``ValueError`` naming
    an extra that the table does not define.
    """
    name = normalize_name(str(project["name"]))
    optional: Mapping[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(requirements: Sequence[str]) -> None:
        for req in requirements:
            nested = _self_extras(req, name)
            if nested is None:
                if req not in out:
                    out.append(req)
                continue
            for extra in nested:
                visit(extra)

    def visit(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            valid = ", ".join(sorted(optional))
            raise ValueError(f"project {name!r} has no extra {extra!r} (valid: {valid})")
        seen_extras.add(extra)
        add(optional[extra])

    add(list(project.get("dependencies", [])))
    for extra in extras:
        visit(extra)
    return out


def load_project(path: Path) -> dict[str, Any]:
    """The ``[project]`` table of the pyproject.toml at ``path``."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    if "project" not in data:
        raise ValueError(f"{path}: no [project] table")
    return dict(data["project"])


def main(argv: Sequence[str]) -> int:
    """Entry point; prints one requirement per line."""
    if not argv:
        sys.stderr.write(__doc__ or "")
        return 2
    try:
        requirements = expand_requirements(load_project(Path(argv[0])), argv[1:])
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        sys.stderr.write(f"pyproject_requirements: error: {exc}\n")
        return 2
    sys.stdout.write("".join(f"{r}\n" for r in requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
