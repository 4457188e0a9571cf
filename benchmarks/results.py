"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the others alone.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``;
a section that does not exist yet is appended.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = (
    "# Benchmark results\n\nEach section is written by the script it names; rerun it to refresh.\n"
)


def machine_description() -> str:
    """CPU model, core count and memory of this machine, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def write_section(name: str, title: str, body: str, command: str) -> Path:
    """Replace (or append) section ``name`` of RESULTS.md with ``body`` and a provenance line."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- {name}:start -->\n## {title}\n\n"
        f"Machine: {machine_description()}. Date: {stamp}. Command: `{command}`\n\n"
        f"{body.rstrip()}\n<!-- {name}:end -->"
    )
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")
    return RESULTS


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


_LOAD_AT_START = _load_average()  # benchmarks import this module before they start working


def load_note() -> str:
    """The 1-minute load average when the benchmark started, and whether other work was
    competing for the CPU (read at import, before the benchmark's own load)."""
    load = _LOAD_AT_START
    if load is None:
        return "Load average unknown."
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return (
            f"Load average {load:.2f} on {cores} cores at the start: other work competed for "
            "the CPU, timings are noisy upwards."
        )
    return f"Load average {load:.2f} on {cores} cores at the start (otherwise idle machine)."
