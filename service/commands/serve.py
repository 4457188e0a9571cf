"""`reid serve`: Run the REST service over a model folder and a data directory."""

from __future__ import annotations

import argparse
import logging

HELP = "Run the REST service over a model folder and a data directory."

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (model.onnx + manifest.json)")
    parser.add_argument("--data", required=True, help="data directory of the galleries")
    parser.add_argument(
        "--host", default=None, help="bind address (default REID_HOST or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default REID_PORT or 8000)")


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from reidcore.cli import CommandError
    from service.app import create_app
    from service.errors import ServiceError
    from service.manifest import load_manifest
    from service.settings import Settings

    overrides = {"model_dir": args.model, "data_dir": args.data}
    overrides |= {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
        load_manifest(settings.model_dir)  # fail here, with a clear message, not in the lifespan
    except ValidationError as exc:
        raise CommandError(f"invalid settings: {exc}") from None
    except ServiceError as exc:  # ManifestError: one line, no traceback
        raise CommandError(str(exc)) from None
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)
    return 0
