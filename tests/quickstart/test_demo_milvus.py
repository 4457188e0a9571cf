"""`reid demo --backend milvus`: the same demo with the gallery in Milvus Lite (in-process,
no URI given), the same report as on the local engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidcore.cli import main
from tests.quickstart.test_demo_job import TINY_DEMO, _check_report, _row
from tests.quickstart.test_messy_data import BUILDERS

pytest.importorskip("fastapi", reason="the demo needs the service extra (fastapi)")
pytest.importorskip("onnxruntime", reason="the demo needs the service extra (onnxruntime)")
pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed")


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    from tests.service.tiny_model import write_tiny_model_folder

    return write_tiny_model_folder(tmp_path / "models" / "tiny" / "1")


def _demo(root: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["demo", "--dataset", str(root), "--model", str(model), "--out", str(out), *extra]


def test_demo_on_milvus_lite_reports_what_the_local_engine_does(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, gallery = BUILDERS["market"](tmp_path / "ds")
    milvus = _demo(root, tiny_model, tmp_path / "m", "--backend", "milvus", *TINY_DEMO)
    assert main(milvus) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "gallery engine: milvus (Milvus Lite in-process)" in out
    assert f"indexed {gallery} images via jobs API" in out
    assert (tmp_path / "m" / "data" / "milvus.db").exists()
    _check_report(out)
    assert main(_demo(root, tiny_model, tmp_path / "l", *TINY_DEMO)) == 0
    local = capsys.readouterr().out
    assert "gallery engine: local" in local
    for label in ("stored embeddings, full ranking", "stored embeddings, full k-reciprocal"):
        assert _row(out, label) == _row(local, label)  # same model, same vectors


def test_milvus_uri_needs_the_milvus_backend(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _demo(tmp_path / "ds", tiny_model, tmp_path / "o", "--milvus-uri", "http://x:1")
    assert main([*args, *TINY_DEMO]) == 2
    assert "--milvus-uri needs --backend milvus" in capsys.readouterr().err
