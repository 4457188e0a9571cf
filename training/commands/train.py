"""`reid train`: Train an APR / AlignedReID model from a YAML config."""

from __future__ import annotations

import argparse

HELP = "Train an APR / AlignedReID model from a YAML config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from reidcore.cli import CommandError

    raise CommandError("this command is not available in this version of the project yet")
