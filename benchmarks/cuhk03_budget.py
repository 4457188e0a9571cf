"""Validation accuracy of the CUHK03-NP CPU recipe against training minutes.

Runs ``training/configs/osnet_cuhk03_cpu.yaml`` as shipped except that ``--val-ids``
identities of the CUHK03-NP training split are held out (they appear in no training batch;
per identity and camera one random crop is a query, the rest the gallery) and evaluated
every ``eval.every`` epochs. The table is the curve a user picks a budget from: after each
evaluated epoch, the minutes spent training so far (evaluation excluded) and validation
rank-1 / mAP, plain and re-ranked (k-reciprocal, all queries at once). The shipped recipe
trains on all 767 identities instead; the same steps cost the same minutes.

``python -m benchmarks.cuhk03_budget [--val-ids 200 --out runs/cuhk03_val200]`` trains and
writes section ``cuhk03_budget`` of benchmarks/RESULTS.md (needs ../shared/data and
../shared/weights); ``--from-run DIR`` only summarises a finished run of that command.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

from benchmarks.results import load_note, write_section
from training.config import load_train_config
from training.trainer import train

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "osnet_cuhk03_cpu.yaml"
COLUMNS = ("rank1", "mAP", "rerank_rank1", "rerank_mAP")


def curve(run: Path) -> list[dict[str, float]]:
    """Evaluated rows of ``run/metrics.csv`` with ``train_min``, the cumulative minutes of
    training (the ``seconds`` of each epoch) up to that row, and ``fast_min``, the same epochs
    at the rate of the run's fastest epoch (what they cost when nothing else ran)."""
    with (run / "metrics.csv").open() as fh:
        table = list(csv.DictReader(fh))
    fastest = min((float(r["seconds"]) for r in table if r["seconds"]), default=0.0)
    rows, spent = [], 0.0
    for row in table:
        spent += float(row["seconds"] or 0.0)
        if row["mAP"]:
            epoch = int(row["epoch"])
            base = {"epoch": epoch, "train_min": spent / 60, "fast_min": epoch * fastest / 60}
            base["img_s"] = float(row["images_per_s"] or "nan")
            rows.append(base | {k: float(row[k]) for k in COLUMNS})
    return rows


def wall_minutes(run: Path) -> float:
    """Minutes from the run's start (``config.yaml`` is written first) to its last row."""
    return ((run / "metrics.csv").stat().st_mtime - (run / "config.yaml").stat().st_mtime) / 60


def markdown(run: Path, note: str) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = curve(run)
    steps = cfg["epochs"] * cfg["steps_per_epoch"]
    lines = [
        f"`osnet_cuhk03_cpu.yaml` with {cfg['data']['val_ids']} of the 767 CUHK03-NP (detected) "
        f"training identities held out (seed {cfg['data']['val_seed']}): {cfg['epochs']} epochs "
        f"× {cfg['steps_per_epoch']} batches of 16×4 = {steps} steps, {cfg['threads']} threads. "
        f"Whole run {wall_minutes(run):.1f} min wall (evaluations included). {note} The img/s "
        "column is the training rate of that epoch: it drops when other work shares the CPU; "
        "'alone' are the minutes at the run's fastest epoch's rate.",
        "",
        "| epoch | training minutes | alone | img/s | rank-1 | mAP | re-ranked rank-1 | re-ranked mAP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{100 * r[k]:.1f}" for k in COLUMNS)
        times = f"{r['train_min']:.1f} | {r['fast_min']:.1f} | {r['img_s']:.0f}"
        lines.append(f"| {r['epoch']} | {times} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val-ids", type=int, default=200)
    parser.add_argument("--out", default="runs/cuhk03_val200")
    parser.add_argument("--from-run", help="summarise this finished run instead of training")
    args = parser.parse_args(argv)
    run = Path(args.from_run or args.out)
    if not args.from_run:
        overrides = [f"data.val_ids={args.val_ids}", f"output_dir={run}", "progress=false"]
        train(load_train_config(CONFIG, overrides))
    note = "Summarised from a finished run." if args.from_run else load_note()
    body = markdown(run, note)
    print(body)
    command = "python -m benchmarks.cuhk03_budget " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_section(
        "cuhk03_budget", "CUHK03-NP CPU recipe: validation against minutes", body, command.strip()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
