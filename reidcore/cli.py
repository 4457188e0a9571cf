"""The `reid` command.

Each subcommand lives in a small module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import their heavy dependencies (torch, ONNX Runtime,
FAISS) inside ``run`` only, so ``reid --help`` and ``reid serve`` never load PyTorch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from reidcore import __version__
from reidcore.logs import configure_logging

logger = logging.getLogger(__name__)

# subcommand -> module implementing it
COMMANDS: dict[str, str] = {
    "demo": "quickstart.command",
    "evaluate": "reidcore.commands.evaluate",
    "train": "training.commands.train",
    "export": "export.commands.export",
    "serve": "service.commands.serve",
    "index": "service.commands.index",
}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid",
        description="Person re-identification: train, evaluate, export and serve.",
    )
    parser.add_argument("--version", action="version", version=f"reid {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args._run(args) or 0)
    except CommandError as exc:
        print(f"reid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reid {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
