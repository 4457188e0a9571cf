from __future__ import annotations

import subprocess
import sys

from reidcore.cli import COMMANDS, build_parser


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reidcore.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("train", "evaluate", "export", "serve", "index"):
        assert name in out
    assert set(COMMANDS) >= {"train", "evaluate", "export", "serve", "index"}


def test_help_does_not_import_torch() -> None:
    code = "import sys; from reidcore.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parser_builds() -> None:
    assert build_parser().prog == "reid"
