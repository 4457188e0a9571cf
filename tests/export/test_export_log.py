"""``reid export`` as the README writes it: the plain command works without real images
(parity on generated crops, said in the log and the manifest), and the log stays short:
ONNX Runtime's quantiser chatter (hundreds of root-logger INFO lines for a real model) is
lowered to DEBUG by the CLI's logging set-up, and its calibrators' prints go to the DEBUG
log."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from export.onnx_export import OnnxExportConfig, export_onnx
from export.variants import build_int8
from reidcore.cli import main
from service.manifest import load_manifest
from tests.export.helpers import SMALL, tiny_model, write_checkpoint
from training.models import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
ORT_DIR = str(Path(onnxruntime.__file__).parent) + "/"
MAX_LOG_LINES = 12
"""What a user reads for a plain export: checkpoint, parity source, export, runtime load,
parity summary, result (7 lines today; a flood is hundreds)."""


def ort_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.pathname.startswith(ORT_DIR)]


def test_plain_readme_command_succeeds_with_a_short_log(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="osnet_x0_25"))
    out = tmp_path / "models" / "plain" / "1"
    argv = ["export", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "reidcore.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr.splitlines()
    assert 0 < len(log) <= MAX_LOG_LINES, proc.stderr
    assert any("parity check on 32 generated pedestrian crops" in line for line in log)
    assert "parity images: 32 generated pedestrian crops" in proc.stdout
    manifest = load_manifest(out)
    assert "parity checked on 32 generated pedestrian crops" in manifest.training.notes
    assert not manifest.model.test_time_flip


class Collect(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_int8_export_log_has_no_onnxruntime_flood(
    tmp_path: Path,
    market_folder: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # At the source, quantising floods the root logger from ONNX Runtime at INFO ...
    model = tiny_model(ModelConfig(backbone="osnet_x0_25"))
    export_onnx(model, tmp_path / "m.onnx", SMALL.height, SMALL.width, OnnxExportConfig())
    calibration = np.random.default_rng(0).standard_normal((4, 3, 64, 32)).astype(np.float32)
    raw, root = Collect(), logging.getLogger()
    root.addHandler(raw)
    try:
        with caplog.at_level(logging.INFO):
            build_int8(tmp_path / "m.onnx", tmp_path / "int8.onnx", calibration)
    finally:
        root.removeHandler(raw)
    # Counted whatever their level now: once any test has configured the project's logging,
    # the root handler's DemoteNoise has already turned these same records into DEBUG ones.
    flood = ort_records(raw.records)
    assert len(flood) >= 10, [r.getMessage() for r in raw.records]
    assert "histogram" not in capsys.readouterr().out  # the calibrators' prints: DEBUG log
    # ... and through `reid export` none of it reaches the log at INFO.
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="osnet_x0_25"))
    argv = ["export", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "b")]
    argv += ["--validation", str(market_folder), "--validation-ids", "4", "--variants", "int8"]
    caplog.clear()
    assert main(argv) == 0
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r for r in ort_records(shown) if r.levelno == logging.INFO] == []
    assert len(shown) <= MAX_LOG_LINES + 6, [r.getMessage() for r in shown]
    assert "variant int8: kept" in capsys.readouterr().out
