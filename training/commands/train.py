"""`reid train`: train an APR / AlignedReID model from a YAML config.

``reid train --config training/configs/apr_market.yaml --set data.root=... --set epochs=10``

Multi-GPU: ``torchrun --nproc_per_node=N -m reidcore.cli train --config ...`` (one process
per GPU; the process group is set up from torchrun's environment).
"""

from __future__ import annotations

import argparse
import logging

HELP = "Train an APR / AlignedReID model from a YAML config."

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see training/configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from reidcore.cli import CommandError
    from training.checkpoint import CheckpointError
    from training.config import load_train_config
    from training.configtools import ConfigError
    from training.data.errors import DatasetError

    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    from training.distributed import cleanup_distributed, init_distributed
    from training.trainer import train

    try:
        info = init_distributed(cfg.device)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        result = train(cfg, info)
    except (ConfigError, DatasetError, CheckpointError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        cleanup_distributed(info)
    if info.is_main:
        best = "n/a" if result.best is None else f"{result.best:.4f}"
        print(
            f"done: checkpoints in {result.output_dir} "
            f"(best {cfg.eval.best_metric} {best} at epoch {result.best_epoch})"
        )
    return 0
