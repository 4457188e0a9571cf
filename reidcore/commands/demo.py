"""`reid demo`: Run the main job end to end on a self-contained demo input."""

from __future__ import annotations

import argparse

HELP = "Run the main job end to end on a self-contained demo input."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from reidcore.cli import CommandError

    raise CommandError("this command is not available in this version of the project yet")
