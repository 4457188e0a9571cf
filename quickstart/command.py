"""`reid demo`: the main job end to end (see :mod:`quickstart.job`).

With no arguments, on a machine with no GPU, dataset or network: generate a synthetic camera
dataset, train a small model on it, export it to ONNX, start the service on 127.0.0.1:8000,
bulk-index the gallery through the API, run every query through the search endpoint (plain
and re-ranked), print the metrics and a few example matches, and keep serving until Ctrl-C.

``--dataset ROOT --format market|msmt17|folders|csv`` uses the user's dataset instead of the
synthetic one (messy files are skipped and counted; a missing query split is carved);
``--model DIR``
an existing model folder (no training, no export); ``--exit-when-done`` stops after the
report (what tests and CI use).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

FORMATS = ("market", "msmt17", "folders", "csv")
"""``--format`` choices (:data:`quickstart.dataset.FORMATS`; kept here so that ``reid --help``
stays light)."""

HELP = "Run the main job: dataset, train, export, serve, index, query (then keep serving)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("demo"), help="working folder (default demo/)"
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        help="your dataset instead of the synthetic one: a root folder (or CSV file) in --format",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default="market",
        help="--dataset layout: market (bounding_box_train/, bounding_box_test/, query/; the "
        "default), msmt17 (list_*.txt), folders (ROOT/<camera>/<identity>/*.jpg) or csv "
        "(path,identity,camera[,timestamp]); without a query split one is carved",
    )
    parser.add_argument(
        "--model", type=Path, help="existing model folder: skip training and export"
    )
    parser.add_argument("--host", default="127.0.0.1", help="service address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="service port (8000; 0: any free)")
    parser.add_argument(
        "--exit-when-done",
        "--no-serve",
        dest="exit_when_done",
        action="store_true",
        help="stop after the report instead of serving until Ctrl-C",
    )
    parser.add_argument("--train-ids", type=int, default=100, help="synthetic training ids (100)")
    parser.add_argument("--test-ids", type=int, default=100, help="synthetic test ids (100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (0)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (20)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training-config override, e.g. --set data.height=128 (repeatable)",
    )
    parser.add_argument(
        "--top-k", type=int, default=100, help="matches per search (100, the re-rank shortlist)"
    )
    parser.add_argument("--examples", type=int, default=3, help="example queries shown (3)")
    parser.add_argument(
        "--backend",
        choices=("local", "milvus"),
        default="local",
        help="gallery engine: local (FAISS + SQLite, the default) or milvus",
    )
    parser.add_argument(
        "--milvus-uri",
        default="",
        help="with --backend milvus: the Milvus server, e.g. http://127.0.0.1:19530 (its "
        "gallery 'demo' is replaced); default: Milvus Lite in this process, under --out",
    )


def run(args: argparse.Namespace) -> int:
    from quickstart.embedded import DemoEngine, DemoError
    from quickstart.job import DemoOptions, run_demo
    from reidcore.cli import CommandError

    if args.port < 0 or args.port > 65535:
        raise CommandError(f"--port must lie in 0..65535, got {args.port}")
    if args.milvus_uri and args.backend != "milvus":
        raise CommandError("--milvus-uri needs --backend milvus")
    if args.backend == "milvus" and importlib.util.find_spec("pymilvus") is None:
        raise CommandError("--backend milvus needs the milvus extra: pip install '.[milvus]'")
    if args.top_k < 1 or args.epochs < 1:
        raise CommandError(f"--top-k and --epochs must be >= 1, got {args.top_k}, {args.epochs}")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    opts = DemoOptions(
        out=args.out,
        dataset=args.dataset,
        fmt=args.fmt,
        model=args.model,
        host=args.host,
        port=args.port,
        serve=not args.exit_when_done,
        train_ids=args.train_ids,
        test_ids=args.test_ids,
        seed=args.seed,
        epochs=args.epochs,
        train_overrides=tuple(args.overrides),
        top_k=args.top_k,
        examples=args.examples,
        engine=DemoEngine(args.backend, args.milvus_uri),
    )
    try:
        run_demo(opts, lambda text: print(text, flush=True))
    except (DemoError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return 0
