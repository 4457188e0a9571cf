"""A small Dockerfile reader for static checks (Docker itself is not available to the tests).

It understands what the project's Dockerfile uses: comments and parser directives, line
continuations, global ``ARG`` defaults in ``FROM``, named stages, JSON (exec) and shell forms.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined."""

    lineno: int
    """Line number (1-based) where the instruction starts."""
    keyword: str
    """Upper-case instruction name, e.g. ``RUN``."""
    args: str
    """Everything after the keyword, continuations joined with a space."""


@dataclass
class Stage:
    """One ``FROM`` and the instructions up to the next one."""

    name: str
    """The ``AS`` name, or the stage's index as a string when unnamed."""
    base: str
    """The image or stage it starts from, global ARGs substituted."""
    instructions: list[Instruction] = field(default_factory=list)
    """Instructions after ``FROM``."""

    def all(self, keyword: str) -> list[Instruction]:
        """Instructions of this stage with ``keyword``."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """A parsed Dockerfile."""

    global_args: dict[str, str]
    """Global ``ARG`` defaults (before the first ``FROM``)."""
    stages: dict[str, Stage]
    """Stages by name, in file order."""

    def chain(self, name: str) -> list[Stage]:
        """The stage ``name`` and the stages it is built on, base first."""
        out: list[Stage] = []
        stage: Stage | None = self.stages[name]
        while stage is not None:
            out.insert(0, stage)
            stage = self.stages.get(stage.base)
        return out

    def effective(self, name: str, keyword: str) -> Instruction | None:
        """The last ``keyword`` instruction that applies to stage ``name`` (inherited too)."""
        found = [i for s in self.chain(name) for i in s.all(keyword)]
        return found[-1] if found else None

    def env(self, name: str) -> dict[str, str]:
        """``ENV`` values in effect in stage ``name`` (``key=value`` form only)."""
        values: dict[str, str] = {}
        for stage in self.chain(name):
            for inst in stage.all("ENV"):
                for token in shlex.split(inst.args):
                    key, sep, value = token.partition("=")
                    if not sep:
                        raise ValueError(f"line {inst.lineno}: ENV without '=' is not supported")
                    values[key] = substitute(value, values)
        return values


def substitute(text: str, values: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` replaced from ``values``."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2) or ""
        return values.get(name, default)

    return _VAR.sub(repl, text)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) with continuations joined and comments and blank lines dropped."""
    out: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if not buffer:
            start = lineno
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        buffer.append(line)
        out.append((start, " ".join(p for p in buffer if p)))
        buffer = []
    if buffer:
        out.append((start, " ".join(buffer)))
    return out


def parse_dockerfile(text: str) -> Dockerfile:
    """Stages and global ARGs of a Dockerfile's text."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for lineno, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=substitute(parts[0], global_args))
            stages[name] = current
        elif current is None:
            if keyword != "ARG":
                raise ValueError(f"line {lineno}: {keyword} before the first FROM")
            key, _, default = args.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            current.instructions.append(Instruction(lineno, keyword, args))
    return Dockerfile(global_args=global_args, stages=stages)


def load_dockerfile(path: Path) -> Dockerfile:
    """Parse the Dockerfile at ``path``."""
    return parse_dockerfile(path.read_text(encoding="utf-8"))


def command_words(args: str) -> list[str]:
    """CMD/ENTRYPOINT arguments as a list: JSON (exec) form, or the shell form wrapped in sh -c."""
    stripped = args.strip()
    if stripped.startswith("["):
        words = json.loads(stripped)
        if not all(isinstance(w, str) for w in words):
            raise ValueError(f"exec form with non-string items: {args}")
        return list(words)
    return ["/bin/sh", "-c", stripped]


def healthcheck_command(args: str) -> list[str]:
    """The command of a ``HEALTHCHECK [--opt=v ...] CMD ...`` instruction."""
    head, sep, command = args.partition("CMD ")
    if not sep:
        raise ValueError(f"HEALTHCHECK without CMD: {args}")
    for option in head.split():
        if not option.startswith("--"):
            raise ValueError(f"unexpected HEALTHCHECK word {option!r}")
    return command_words(command)


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over slash-separated relative paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per pattern of a .dockerignore, in order."""
    out: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        out.append((negated, _ignore_regex(pattern.strip("/"))))
    return out


def is_ignored(patterns: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last matching pattern
    decides, a pattern matching a parent folder matches what is inside it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return ignored
