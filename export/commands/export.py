"""`reid export`: Export a checkpoint to an ONNX model folder (model.onnx + manifest.json)."""

from __future__ import annotations

import argparse

HELP = "Export a checkpoint to an ONNX model folder (model.onnx + manifest.json)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from reidcore.cli import CommandError

    raise CommandError("this command is not available in this version of the project yet")
