"""Fine-tune torchreid's OSNet x0.25 (MSMT17) on the CUHK03-NP training split, on this CPU.

The real-data result of the training issue: validation rank-1/mAP (100 held-out identities
of the CUHK03-NP training split, one query per identity and camera) of

1. the MSMT17 checkpoint as it is (``epochs=0``),
2. fine-tuned global-only (identity + TriHard on the global feature),
3. fine-tuned AlignedReID (+ TriHard on the aligned local distance, same mined triplets),
4. fine-tuned AlignedReID with mutual learning of two models,

each with and without k-reciprocal re-ranking. All runs start from the same checkpoint with
the same data, seed and step budget (``--epochs`` × ``--steps`` batches of P×K = 16×4), so
mutual learning costs twice the compute of the others.

``python -m benchmarks.train_cuhk03 [--epochs 6 --steps 50 --out runs/cuhk03]`` writes
section ``train_cuhk03`` of benchmarks/RESULTS.md; needs ../shared/data and ../shared/weights.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from benchmarks.results import load_note, write_section
from benchmarks.training_run import timed_training
from reidcore.logs import configure_logging

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "osnet_cuhk03_cpu.yaml"
LOCAL = ["model.use_local=true", "loss.local_triplet_weight=1.0", "loss.local_aligned=true"]

VARIANTS: dict[str, list[str]] = {
    "MSMT17 checkpoint as it is": ["epochs=0"],
    "fine-tuned, global only (ID + TriHard)": [],
    "fine-tuned, AlignedReID (global + aligned local)": LOCAL,
    "fine-tuned, AlignedReID + mutual learning": [*LOCAL, "loss.mutual=true"],
}
"""Run label -> overrides of ``osnet_cuhk03_cpu.yaml``."""

METRICS = ("rank1", "mAP", "rerank_rank1", "rerank_mAP")


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Train (or only evaluate) one variant; its last validation row plus wall time."""
    out = Path(args.out) / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    epochs = args.epochs
    base = [
        f"output_dir={out}",
        f"epochs={epochs}",
        f"max_steps_per_epoch={args.steps}",
        "steps_per_epoch=0",
        "data.val_ids=100",
        "optim.schedule=step",
        f"eval.every={max(epochs, 1)}",
        "eval.at_start=false",
        "eval.rerank=true",
        "optim.warmup_epochs=1",
        f"optim.milestones=[{max(epochs - 1, 1)}]",
        f"threads={args.threads}",
        "progress=false",
    ]
    row = timed_training(CONFIG, [*base, *overrides])
    logger.info("%s: %s", name, {k: row.get(k) for k in (*METRICS, "train_s")})
    return row


def markdown(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        "CUHK03-NP detected training split (../shared/data), 100 identities held out for "
        "validation (200 query / 767 gallery, seed 0); OSNet x0.25 from torchreid's MSMT17 "
        f"checkpoint, 256×128, P×K 16×4, Adam 3e-4 (heads ×10), {args.epochs} epochs × "
        f"{args.steps} steps, lr ×0.1 for the last epoch, {args.threads} thread(s). Retrieval "
        "uses the global feature only (as both papers do at test time). " + load_note(),
        "",
        "| run | rank-1 | mAP | rank-1 re-ranked | mAP re-ranked | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [f"{100 * row[k]:.1f}" if k in row else "n/a" for k in METRICS]
        lines.append(f"| {name} | {' | '.join(cells)} | {row['train_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50, help="batches per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/cuhk03")
    parser.add_argument(
        "--only", nargs="*", help="run only variants whose label contains one of these"
    )
    args = parser.parse_args(argv)
    configure_logging()
    rows = {}
    for name, overrides in VARIANTS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        rows[name] = run_variant(name, overrides, args)
        body = markdown(rows, args)
        print(body, flush=True)
    command = "python -m benchmarks.train_cuhk03 " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_section("train_cuhk03", "CUHK03-NP fine-tuning on CPU", body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
