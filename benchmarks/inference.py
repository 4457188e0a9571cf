"""Inference speed of PyTorch eager vs ONNX Runtime fp32 / optimized / int8, and int8's mAP.

Run: ``.venv/bin/python -m benchmarks.inference`` (about 3-5 minutes on 2 cores).

* Speed: images/s at batch 1 and 32, same model, same inputs, same process, for ResNet-50
  (random weights, 256x128, global embedding) and OSNet-x0.25 (torchreid MSMT17 weights when
  ../shared/weights has them, else random). Each runtime gets a warm-up run, then is timed
  for at least ``MIN_SECONDS`` of repeated calls; the median per-call time is reported.
* Accuracy: the OSNet checkpoint's mAP on a CUHK03-NP validation split carved from
  ../shared/data/cuhk03-np-detected (100 held-out identities, seed 0), fp32 vs int8 (int8
  calibrated on 64 images of the remaining training identities). Skipped when absent.

The CPU is shared with other jobs while this runs: figures are noisy, compare ratios
measured in the same run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import write_section
from export.checkpoint import load_for_export
from export.onnx_export import OnnxExportConfig, export_onnx
from export.validation import ValidationSet, embed, load_images, open_session, retrieval_metrics
from export.variants import build_int8, build_optimized
from reidcore.preprocess import PreprocessConfig, preprocess_batch
from training.data.readers import read_market
from training.data.split import split_validation
from training.models import InferenceWrapper, ModelConfig, ReidModel, build_model

logger = logging.getLogger(__name__)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OSNET_WEIGHTS = SHARED / "weights" / "osnet_x0_25_msmt17.pth"
CUHK03 = SHARED / "data" / "cuhk03-np-detected"
CFG = PreprocessConfig()  # 256x128, ImageNet mean/std, RGB
BATCHES = (1, 32)
MIN_SECONDS = 4.0
"""Minimum timed seconds per (runtime, batch) after the warm-up call."""


@dataclass
class SpeedRow:
    """Images per second of one runtime at each batch size."""

    model: str
    runtime: str
    per_batch: dict[int, float]


def time_calls(fn: Callable[[], object], min_seconds: float = MIN_SECONDS) -> float:
    """Median seconds per call of ``fn`` after one warm-up call, over >= ``min_seconds``."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed_inputs(n: int = 32, seed: int = 0) -> np.ndarray:
    """Real CUHK03 crops (preprocessed) when available, else seeded noise: [n, 3, 256, 128]."""
    folder = CUHK03 / "bounding_box_train"
    if folder.is_dir():
        paths = sorted(folder.iterdir())[:n]
        return preprocess_batch(load_images(paths), CFG)
    return (
        np.random.default_rng(seed)
        .standard_normal((n, 3, CFG.height, CFG.width))
        .astype(np.float32)
    )


def eager_runner(model: ReidModel, batch: np.ndarray) -> Callable[[], object]:
    wrapper = InferenceWrapper(model)
    x = torch.from_numpy(batch)

    def run() -> object:
        with torch.inference_mode():
            return wrapper(x)

    return run


def ort_runner(path: Path, batch: np.ndarray) -> Callable[[], object]:
    session = open_session(path, threads=os.cpu_count() or 1)
    return lambda: session.run(["embedding"], {"images": batch})


def build_files(model: ReidModel, folder: Path, calibration: np.ndarray) -> dict[str, Path]:
    """fp32, optimized and int8 ONNX files of ``model`` in ``folder``."""
    files = {"ORT fp32": folder / "model.onnx"}
    export_onnx(model, files["ORT fp32"], CFG.height, CFG.width, OnnxExportConfig())
    files["ORT optimized"] = folder / "model.optimized.onnx"
    build_optimized(files["ORT fp32"], files["ORT optimized"])
    files["ORT int8 (QDQ)"] = folder / "model.int8.onnx"
    t0 = time.perf_counter()
    build_int8(files["ORT fp32"], files["ORT int8 (QDQ)"], calibration)
    logger.info("int8 quantisation took %.1f s", time.perf_counter() - t0)
    return files


def speed_rows(name: str, model: ReidModel, inputs: np.ndarray, tmp: Path) -> list[SpeedRow]:
    """Images/s of eager PyTorch and each ONNX file of ``model`` at every batch size."""
    folder = tmp / name
    folder.mkdir()
    files = build_files(model.eval(), folder, inputs)
    rows = [SpeedRow(name, "PyTorch eager (inference_mode)", {})]
    rows += [SpeedRow(name, label, {}) for label in files]
    for bs in BATCHES:
        batch = np.ascontiguousarray(inputs[:bs])
        runners = [eager_runner(model, batch)] + [ort_runner(p, batch) for p in files.values()]
        for row, runner in zip(rows, runners, strict=True):
            row.per_batch[bs] = bs / time_calls(runner)
            print(f"{name:12s} {row.runtime:32s} batch {bs:2d}: {row.per_batch[bs]:7.1f} img/s")
    return rows


def osnet_model() -> tuple[ReidModel, str]:
    if OSNET_WEIGHTS.is_file():
        return load_for_export(OSNET_WEIGHTS).model, "OSNet-x0.25 (MSMT17 weights)"
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="osnet_x0_25"), 0).eval(), "OSNet-x0.25 (random)"


def accuracy_rows(model: ReidModel, tmp: Path) -> list[str]:
    """Markdown rows: fp32 vs int8 mAP/rank-1 of ``model`` on the CUHK03 validation split."""
    if not (CUHK03 / "bounding_box_train").is_dir():
        print(f"{CUHK03} absent: accuracy part skipped")
        return []
    train, query, gallery = split_validation(read_market(CUHK03).train, num_ids=100, seed=0)
    batch_of = lambda samples: preprocess_batch(load_images([Path(s.path) for s in samples]), CFG)  # noqa: E731
    vs = ValidationSet(
        name="CUHK03-NP detected train, 100 held-out identities (seed 0)",
        query=batch_of(query),
        gallery=batch_of(gallery),
        query_ids=np.asarray([s.pid for s in query]),
        query_cams=np.asarray([s.camid for s in query]),
        gallery_ids=np.asarray([s.pid for s in gallery]),
        gallery_cams=np.asarray([s.camid for s in gallery]),
        paths=[s.path for s in [*query, *gallery]],
    )
    calibration = batch_of(train[:: max(1, len(train) // 64)][:64])
    folder = tmp / "accuracy"
    folder.mkdir()
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(model, fp32, CFG.height, CFG.width, OnnxExportConfig())
    build_int8(fp32, int8, calibration)
    rows = []
    results = {}
    for label, path in (("ORT fp32", fp32), ("ORT int8 (QDQ)", int8)):
        session = open_session(path)
        results[label] = retrieval_metrics(vs, embed(session, vs.query), embed(session, vs.gallery))
        r = results[label]
        rows.append(f"| {label} | {100 * r.mAP:.2f} | {100 * r.rank(1):.2f} |")
        print(f"accuracy {label}: mAP {100 * r.mAP:.2f} rank-1 {100 * r.rank(1):.2f}")
    drop = 100 * (results["ORT fp32"].mAP - results["ORT int8 (QDQ)"].mAP)
    rows.append(
        f"\nint8 mAP drop: {drop:.2f} points ({len(query)} query, {len(gallery)} gallery; {vs.name})."
    )
    return rows


def render(speed: list[SpeedRow], accuracy: list[str], model_name: str) -> str:
    """The RESULTS.md section body."""
    lines = [
        "| model | runtime | img/s batch 1 | img/s batch 32 | x eager (b32) |",
        "|---|---|---|---|---|",
    ]
    eager = {r.model: r.per_batch[32] for r in speed if r.runtime.startswith("PyTorch")}
    for r in speed:
        ratio = r.per_batch[32] / eager[r.model]
        lines.append(
            f"| {r.model} | {r.runtime} | {r.per_batch[1]:.1f} | {r.per_batch[32]:.1f} | {ratio:.2f} |"
        )
    body = "\n".join(lines)
    body += (
        "\n\nSame inputs (real CUHK03 crops when present), same process, ORT with all graph "
        f"optimisations and {os.cpu_count()} intra-op threads, torch {torch.get_num_threads()} threads. "
        "fp16 is not timed: it targets the CUDA EP and this host has no GPU. "
        "**The CPU was shared with other engineers' jobs during the run: numbers are noisy.**"
    )
    if accuracy:
        body += (
            f"\n\nAccuracy, {model_name}:\n\n| runtime | mAP | rank-1 |\n|---|---|---|\n"
            + "\n".join(accuracy)
        )
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    inputs = speed_inputs()
    osnet, osnet_name = osnet_model()
    torch.manual_seed(0)
    resnet = build_model(ModelConfig(backbone="resnet50"), 0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        speed = speed_rows("ResNet-50", resnet, inputs, Path(tmp))
        speed += speed_rows("OSNet-x0.25", osnet, inputs, Path(tmp))
        accuracy = accuracy_rows(osnet, Path(tmp))
    print(f"total {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        path = write_section(
            "inference",
            "Inference: PyTorch eager vs ONNX Runtime fp32 / optimized / int8",
            render(speed, accuracy, osnet_name),
            "python -m benchmarks.inference",
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
