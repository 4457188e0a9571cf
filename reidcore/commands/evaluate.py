"""`reid evaluate`: Evaluate query/gallery features from an .npz file (CMC, mAP, mINP), optionally re-ranked."""

from __future__ import annotations

import argparse

HELP = "Evaluate query/gallery features from an .npz file (CMC, mAP, mINP), optionally re-ranked."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from reidcore.cli import CommandError

    raise CommandError("this command is not available in this version of the project yet")
