"""Generation speed of the synthetic Market-style dataset and its colour-histogram baseline.

Run: ``.venv/bin/python -m benchmarks.synthetic_dataset``. Writes the default-size dataset
(100 train + 100 test identities, 6 cameras, 2 crops per identity and camera) to a temporary
folder, times it (wall clock and this process's CPU time: the generator is single-threaded),
then scores the HSV-histogram baseline with and without camera centring.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.results import write_section
from reidcore.evaluation import format_results_table
from training.data.histogram_baseline import HistogramConfig, evaluate_histogram_baseline
from training.data.synthetic import generate_dataset

COMMAND = ".venv/bin/python -m benchmarks.synthetic_dataset"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        root = generate_dataset(Path(tmp) / "synthetic", seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        counts = {
            d: len(list((root / d).iterdir()))
            for d in ("bounding_box_train", "bounding_box_test", "query")
        }
        images = sum(counts.values())
        rows = []
        for centred in (False, True):
            cfg = HistogramConfig(camera_centred=centred)
            label = "HSV histogram, 6 stripes" + (", camera-centred" if centred else "")
            rows.append((label, evaluate_histogram_baseline(root, cfg)))
    table = format_results_table(rows)
    body = (
        f"Default dataset, seed 0: {images} crops ({counts['bounding_box_train']} train, "
        f"{counts['bounding_box_test']} gallery incl. 20 distractors and 10 junk, "
        f"{counts['query']} queries).\n\n"
        f"| | seconds | ms per crop |\n|---|---|---|\n"
        f"| wall clock | {wall:.1f} | {1000 * wall / images:.1f} |\n"
        f"| CPU (one core) | {cpu:.1f} | {1000 * cpu / images:.1f} |\n\n"
        f"Colour-histogram baseline (query vs gallery, Market-1501 protocol):\n\n"
        f"```\n{table}\n```\n"
    )
    print(body)
    write_section(
        "synthetic_dataset",
        "Synthetic dataset: generation speed and histogram baseline",
        body,
        COMMAND,
    )


if __name__ == "__main__":
    main()
