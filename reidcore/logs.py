"""Logging set-up, called once by each entry point (the `reid` CLI, the service)."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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
