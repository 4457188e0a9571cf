"""Logging set-up, called once by each entry point (the `reid` CLI, the service).

Third-party libraries log at INFO what a user has no use for: FAISS's loader tries its
AVX512/AVX2 builds one after the other and logs each attempt, ONNX Runtime's quantiser logs
every tensor it leaves alone (through the root logger). :class:`DemoteNoise` lowers those
INFO records to DEBUG, so they show with ``--log-level DEBUG`` only.
"""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

NOISY_LOGGERS = ("faiss", "onnxruntime")
"""Logger names (and their children) whose INFO records are demoted to DEBUG."""
NOISY_PATHS = (f"{os.sep}faiss{os.sep}", f"{os.sep}onnxruntime{os.sep}")
"""Source folders whose INFO records are demoted even when logged through the root logger."""


class DemoteNoise(logging.Filter):
    """A handler filter: third-party INFO records become DEBUG records (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _is_noise(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def _is_noise(record: logging.LogRecord) -> bool:
    if any(record.name == n or record.name.startswith(n + ".") for n in NOISY_LOGGERS):
        return True
    return any(p in (record.pathname or "") for p in NOISY_PATHS)


def configure_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; `REID_LOG_LEVEL` overrides the default INFO."""
    if level is None:
        level = os.environ.get("REID_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=_FORMAT, datefmt="%H:%M:%S")
    else:
        root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, DemoteNoise) for f in handler.filters):
            handler.addFilter(DemoteNoise())
