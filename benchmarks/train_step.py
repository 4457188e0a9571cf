"""Seconds per training step of the CUHK03-NP CPU recipe, by CPU option.

One P×K batch of real CUHK03-NP crops through OSNet x0.25 from torchreid's MSMT17 weights
(forward, identity + TriHard loss, backward, Adam step), timed over ``--steps`` steps after
one warm-up step, for the default memory order and channels-last, each with float32
denormals kept and flushed (``channels_last`` and ``flush_denormal`` of the training config).
Data loading is left out: it runs in worker processes beside the step.

``python -m benchmarks.train_step [--steps 8 --threads 2]`` writes section ``train_step`` of
benchmarks/RESULTS.md; needs ../shared/data and ../shared/weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import load_note, write_section
from training.config import load_train_config
from training.trainer import Trainer, denormals_flushed

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "osnet_cuhk03_cpu.yaml"
OPTIONS = [(False, False), (False, True), (True, False), (True, True)]
"""(channels_last, flush_denormal) pairs, slowest expected first."""


def seconds_per_step(channels_last: bool, flush: bool, steps: int, threads: int) -> float:
    """Mean seconds of ``steps`` training steps on one fixed batch."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_train_config(
            CONFIG,
            [
                f"channels_last={str(channels_last).lower()}",
                f"flush_denormal={str(flush).lower()}",
                f"threads={threads}",
                "data.workers=0",
                "data.val_ids=0",
                f"output_dir={out}",
                "progress=false",
            ],
        )
        trainer = Trainer(cfg)
        batch = next(iter(trainer.loader.epoch_batches(0, 0)))
        trainer.members[0].module.train()
        with denormals_flushed(flush):  # as Trainer.run does
            trainer.train_step(batch)  # warm-up: allocations, kernel choice
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(batch)
            return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for channels_last, flush in OPTIONS:
        s = seconds_per_step(channels_last, flush, args.steps, args.threads)
        rows.append((channels_last, flush, s))
        print(f"channels_last={channels_last} flush_denormal={flush}: {s:.3f} s/step", flush=True)
    base = rows[0][2]
    lines = [
        f"One 16×4 batch of CUHK03-NP crops at 256×128 through OSNet x0.25 (MSMT17 weights), "
        f"forward + ID/TriHard loss + backward + Adam, mean of {args.steps} steps after a "
        f"warm-up step, {args.threads} thread(s), data loading excluded. " + load_note(),
        "",
        "| memory order | float32 denormals | s/step | speed-up |",
        "|---|---|---|---|",
    ]
    for channels_last, flush, s in rows:
        order = "channels-last" if channels_last else "default (NCHW)"
        lines.append(f"| {order} | {'flushed' if flush else 'kept'} | {s:.3f} | {base / s:.2f}x |")
    body = "\n".join(lines)
    print(body)
    command = "python -m benchmarks.train_step " + " ".join(sys.argv[1:] if argv is None else argv)
    write_section("train_step", "CPU training step of the CUHK03-NP recipe", body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
