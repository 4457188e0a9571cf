"""Tests of `reid demo` (the main job) and its pieces: ranked-list metrics, port, errors."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from quickstart.metrics import evaluate_rankings, rankings_to_distmat
from reidcore.cli import main
from reidcore.evaluation import evaluate_rank

pytest.importorskip("fastapi", reason="the demo needs the service extra (fastapi)")
pytest.importorskip("onnxruntime", reason="the demo needs the service extra (onnxruntime)")

TINY_DEMO = ["--port", "0", "--exit-when-done", "--examples", "1"]


def _row(out: str, label: str) -> list[str]:
    for line in out.splitlines():
        if line.startswith(label + " "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


def _labels(rng: np.random.Generator, nq: int, ng: int) -> tuple[np.ndarray, ...]:
    q_ids = rng.integers(1, 6, nq)
    g_ids = np.concatenate([q_ids, rng.integers(-1, 6, ng - nq)])  # junk and distractors too
    return q_ids, g_ids, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


# --------------------------------------------------------------------------- ranked lists


@pytest.mark.parametrize("seed", range(5))
def test_complete_rankings_give_the_distance_matrix_metrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q_ids, g_ids, q_cams, g_cams = _labels(rng, 7, 30)
    dist = rng.random((7, 30)).astype(np.float32)
    rankings = [list(np.argsort(row, kind="stable")) for row in dist]
    got = evaluate_rankings(rankings, q_ids, g_ids, q_cams, g_cams)
    want = evaluate_rank(dist, q_ids, g_ids, q_cams, g_cams)
    np.testing.assert_allclose(got.cmc, want.cmc)
    assert got.mAP == pytest.approx(want.mAP) and got.mINP == pytest.approx(want.mINP)
    assert got.num_valid == want.num_valid


@pytest.mark.parametrize("seed", range(5))
def test_truncated_rankings_never_overestimate(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    q_ids, g_ids, q_cams, g_cams = _labels(rng, 9, 40)
    dist = rng.random((9, 40)).astype(np.float32)
    full = evaluate_rank(dist, q_ids, g_ids, q_cams, g_cams, return_per_query_ap=True)
    for k in (1, 5, 20, 39):
        rankings = [list(np.argsort(row, kind="stable")[:k]) for row in dist]
        cut = evaluate_rankings(rankings, q_ids, g_ids, q_cams, g_cams)
        assert cut.mAP <= full.mAP + 1e-12
        assert np.all(cut.cmc <= full.cmc + 1e-12)


def test_truncated_ranking_hand_computed() -> None:
    """Query id 1 (cam 0); gallery g0 id1, g1 id2, g2 id1, g3 id3 (all cam 1); list [g1, g0].

    Unlisted: non-match g3 before match g2 -> order g1 g0 g3 g2, matches at 2 and 4.
    official AP = ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = 1/3; mean AP = (1/2 + 2/4)/2 = 1/2.
    """
    args = (np.array([1]), np.array([1, 2, 1, 3]), np.array([0]), np.array([1, 1, 1, 1]))
    dist = rankings_to_distmat([[1, 0]], *args)
    np.testing.assert_array_equal(dist, [[1, 0, 3, 2]])
    assert evaluate_rankings([[1, 0]], *args).mAP == pytest.approx(1 / 3)
    assert evaluate_rankings([[1, 0]], *args, map_mode="mean").mAP == pytest.approx(1 / 2)
    assert evaluate_rankings([[1, 0]], *args).rank(1) == 0.0


@pytest.mark.parametrize(
    ("rankings", "message"),
    [([[0, 4]], "outside [0, 4)"), ([[1, 1]], "listed twice"), ([[0], [1]], "2 ranked lists")],
)
def test_bad_rankings_are_refused(rankings: list[list[int]], message: str) -> None:
    args = (np.array([1]), np.array([1, 2, 1, 3]), np.array([0]), np.array([1, 1, 1, 1]))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        rankings_to_distmat(rankings, *args)


# --------------------------------------------------------------------------- report pieces


def _match(pid: int, camera: str, score: float) -> dict[str, Any]:
    attrs = {"gender": {"label": "female", "probability": 0.9}}
    attrs["hat"] = {"label": "no", "probability": 0.99}
    item = {"camera": camera, "metadata": {"identity": pid}, "attributes": attrs}
    return {"item": item, "score": score, "distance": 1.0 - score}


def test_example_marks_true_matches_and_same_camera_items() -> None:
    from quickstart.embedded import GalleryImage
    from quickstart.report import format_example

    query = GalleryImage(Path("0002_c1s1_000001_00.jpg"), 2, 1)
    matches = [_match(2, "c3", 0.9), _match(2, "c1", 0.8), _match(7, "c2", 0.7)]
    text = format_example(query, {"gender": {"label": "male", "probability": 0.6}}, matches)
    lines = text.splitlines()
    assert lines[0] == "query 0002_c1s1_000001_00.jpg: identity 2, camera c1"
    assert lines[1] == "  predicted: gender=male 0.60"
    assert [ln.split()[5] for ln in lines[3:]] == ["yes", "same-cam", "no"]
    assert lines[3].split()[1:5] == ["0.900", "0.1000", "c3", "2"]
    assert lines[3].endswith("gender=female 0.90, hat=no 0.99")  # found values, then "no"s


def test_stored_embeddings_of_a_missing_gallery(tmp_path: Path) -> None:
    from quickstart.embedded import DemoError, read_stored_embeddings

    with pytest.raises(DemoError, match="was anything indexed"):
        read_stored_embeddings(tmp_path, "nothing")


# --------------------------------------------------------------------------- CLI errors


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    from tests.service.tiny_model import write_tiny_model_folder

    return write_tiny_model_folder(tmp_path / "models" / "tiny" / "1")


def test_busy_port_fails_before_any_work(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "out"
        code = main(["demo", "--out", str(out), "--model", str(tiny_model), "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "Traceback" not in err
    assert not (out / "dataset").exists()  # nothing generated before the port check


def test_bad_dataset_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["demo", "--dataset", str(tmp_path / "empty"), *TINY_DEMO]) == 2
    err = capsys.readouterr().err
    assert f"--dataset {tmp_path / 'empty'}" in err and "not a Market-1501-style root" in err


def test_dataset_without_query_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    train = tmp_path / "ds" / "bounding_box_train"
    train.mkdir(parents=True)
    Image.new("RGB", (16, 32)).save(train / "0001_c1s1_000001_00.jpg")
    assert main(["demo", "--dataset", str(tmp_path / "ds"), *TINY_DEMO]) == 2
    err = capsys.readouterr().err  # no query split, and none can be carved from one camera
    assert "no identity is seen by 2 cameras" in err and "no query split" in err


def test_bad_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    assert main(["demo", "--model", str(tmp_path / "m"), *TINY_DEMO]) == 2
    err = capsys.readouterr().err
    assert f"--model {tmp_path / 'm'}" in err and "no manifest" in err


def test_serve_until_interrupted_prints_the_urls() -> None:
    from quickstart.job import serve_until_interrupted

    lines: list[str] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    service: Any = SimpleNamespace(url="http://127.0.0.1:1234")
    serve_until_interrupted(service, "demo", lines.append, wait=interrupt)
    text = "\n".join(lines)
    assert "http://127.0.0.1:1234/ " in text and "/docs" in text and "stopping" in text


# --------------------------------------------------------------------------- whole runs


def _check_report(out: str) -> None:
    """The table is there; complete search lists reproduce the full-ranking row exactly."""
    plain = next(x for x in out.splitlines() if x.startswith("service search k="))
    label = plain.split("  ")[0]
    searched = _row(out, label)
    full = _row(out, "stored embeddings, full ranking")
    assert searched == full  # same model, same vectors, complete lists
    assert _row(out, label + " rerank")[6:] == full[6:]  # same valid/skipped queries
    assert 0.0 <= float(full[4]) <= 100.0
    assert "query " in out and "predicted:" in out  # an example with its attributes
    assert "attribute search " in out and "/attribute-search): " in out  # by description
    assert "trajectory (POST " in out and "sightings on cameras" in out
    # dataset frame times read as offsets from the recording start, never as 1970 dates
    assert "1970-" not in out.split("trajectory (POST ", 1)[1]


@pytest.mark.parametrize("jobs_api", [True, False], ids=["jobs", "items"])
def test_existing_model_skips_training(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    jobs_api: bool,
) -> None:
    from quickstart.client import ReidClient

    if not jobs_api:
        monkeypatch.setattr(ReidClient, "has_jobs_api", lambda self: False)
    out_dir = tmp_path / "out"
    args = ["--out", str(out_dir), "--model", str(tiny_model), "--train-ids", "2"]
    assert main(["demo", *args, "--test-ids", "5", *TINY_DEMO]) == 0
    out = capsys.readouterr().out
    assert "training and export skipped" in out
    assert not (out_dir / "runs").exists() and not (out_dir / "models").exists()
    assert ("via jobs API" in out) == jobs_api and ("via POST /items" in out) != jobs_api
    _check_report(out)


@pytest.mark.slow
def test_whole_pipeline_with_tiny_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    tiny = ["--train-ids", "8", "--test-ids", "5", "--epochs", "1"]
    small = ["--set", "data.height=32", "--set", "data.width=16"]
    assert main(["demo", "--out", str(out_dir), *tiny, *small, *TINY_DEMO]) == 0
    out = capsys.readouterr().out
    for step in ("[1/6] Dataset", "[2/6] Training", "[3/6] Exporting", "[6/6] Querying"):
        assert step in out
    assert (out_dir / "models" / "demo" / "1" / "manifest.json").is_file()
    assert "PyTorch evaluation on the query/gallery split" in out
    assert "ONNX Runtime vs PyTorch on " in out and "outputs all agree" in out
    assert "attribute accuracy" in out  # the test identities' attributes are evaluated
    assert "time per step: dataset" in out
    _check_report(out)


def test_printed_attributes_put_binary_no_values_last() -> None:
    from quickstart.report import format_attributes

    attrs = {
        "upred": {"label": "no", "probability": 0.99},
        "gender": {"label": "female", "probability": 0.7},
        "age": {"label": "young", "probability": 0.6},
        "hat": {"label": "no", "probability": 0.95},
    }
    assert format_attributes(attrs, limit=3) == "gender=female 0.70, age=young 0.60, upred=no 0.99"
