"""The training loop behind ``reid train``: one model (APR, AlignedReID, ...) or two trained
side by side (mutual learning), on one process or several (torchrun + DDP).

Per epoch: batches from :class:`~training.datasets.TrainLoader` (seeded by the epoch), the
objective of :mod:`training.objective` (fp16 autocast + GradScaler when ``amp`` on CUDA),
a step of every optimiser, a step of every scheduler; then, on rank 0, validation every
``eval.every`` epochs (:mod:`training.evaluate`), ``last.pt`` (and ``epoch_NNN.pt``,
``best.pt``) in the :mod:`training.checkpoint` format and one row of ``metrics.csv``.

Resuming from the checkpoint of epoch ``k`` continues exactly as the uninterrupted run:
weights, optimiser/scheduler/scaler states are restored, and every random stream of epoch
``e`` (sampler, augmentation, worker seeds, torch's generator for dropout) is re-seeded from
``(seed, e)`` at the start of the epoch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from training.config import TrainConfig
from training.configtools import ConfigError, config_to_dict
from training.datasets import PreparedData, TrainLoader, build_eval_loaders, prepare_data
from training.distributed import DistInfo, average_scalars, barrier, init_distributed
from training.evaluate import METRIC_NAMES, evaluate_model
from training.models import ReidModel, build_model
from training.objective import pair_loss, term_names
from training.optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """One trained model with its optimiser and schedule."""

    core: ReidModel
    """The model itself (what checkpoints store)."""
    module: nn.Module
    """What the forward pass calls: ``core``, or its DDP wrapper."""
    optimizer: torch.optim.Optimizer
    """Its optimiser."""
    scheduler: torch.optim.lr_scheduler.LRScheduler
    """Its per-epoch learning-rate schedule."""


@dataclass
class TrainResult:
    """What a run produced (on every rank; metrics only on rank 0)."""

    output_dir: Path
    """Where checkpoints and logs went."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per epoch (as in ``metrics.csv``); the initial evaluation has ``epoch == 0``."""
    step_losses: list[tuple[int, int, float]] = field(default_factory=list)
    """``(epoch, step, total loss)`` of every training step run by this call."""
    best: float | None = None
    """Best value of ``eval.best_metric`` seen."""
    best_epoch: int = -1
    """Epoch of ``best.pt``."""


@dataclass
class _State:
    """Mutable run state shared by the loop's helpers."""

    epoch: int = 0
    best: float | None = None
    best_epoch: int = -1
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator, for third-party code)
    torch.manual_seed(seed)


def flushing_denormals() -> bool:
    """Whether this process's CPU currently treats float32 denormals as zero."""
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


@contextlib.contextmanager
def denormals_flushed(on: bool) -> Iterator[None]:
    """``torch.set_flush_denormal(on)`` for the block, the process's earlier state after it
    (it is global: other code in the process, e.g. hypothesis, relies on denormals)."""
    before = flushing_denormals()
    torch.set_flush_denormal(on)  # a no-op where the CPU cannot
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.default_rng([seed, epoch, 11]).integers(2**62))


def build_members(cfg: TrainConfig, data: PreparedData, info: DistInfo) -> list[Member]:
    """The model (and peer, for mutual learning), moved, wrapped and given optimisers."""
    num_classes = data.num_classes if cfg.loss.id_weight > 0 else 0
    members = []
    for i in range(2 if cfg.loss.mutual else 1):
        torch.manual_seed(cfg.seed + i)  # different initial heads for the two peers
        model_cfg = cfg.peer_model if i and cfg.peer_model is not None else cfg.model
        try:
            core = build_model(model_cfg, num_classes, data.schema).to(info.device)
            if cfg.channels_last:
                # Module.to accepts memory_format at run time; its type stubs do not declare it
                core.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        except ValueError as exc:  # pretrained file that does not fit, named in the message
            raise ConfigError(f"model (pretrained={cfg.model.pretrained!r}): {exc}") from None
        module: nn.Module = core
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            module = DistributedDataParallel(core, device_ids=ids)
        optimizer = build_optimizer(core, cfg.optim)
        members.append(
            Member(core, module, optimizer, build_scheduler(optimizer, cfg.optim, cfg.epochs))
        )
    return members


def _amp_enabled(cfg: TrainConfig, info: DistInfo) -> bool:
    if cfg.amp and info.device.type != "cuda":
        logger.warning("amp=true applies on CUDA only; training in float32 on %s", info.device)
    return cfg.amp and info.device.type == "cuda"


class Trainer:
    """Runs :class:`TrainConfig` ``cfg``; use :func:`train` unless you need the pieces."""

    def __init__(self, cfg: TrainConfig, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.info = info if info is not None else init_distributed(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.data = prepare_data(cfg.data)
        self.loader = TrainLoader(self.data, cfg.data, cfg.seed, self.info)
        self.members = build_members(cfg, self.data, self.info)
        self.amp = _amp_enabled(cfg, self.info)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.terms = term_names(cfg.loss)
        self.state = _State()
        self.result = TrainResult(self.out)
        self.eval_loaders = None
        if self.info.is_main and self.data.evaluation is not None:
            self.eval_loaders = build_eval_loaders(
                self.data.evaluation,
                self.data.preprocess,
                cfg.data.eval_batch_size,
                cfg.data.workers,
            )

    # ------------------------------------------------------------------ run control

    def run(self) -> TrainResult:
        """Train (or only evaluate, with ``epochs == 0``) and return the result."""
        with denormals_flushed(self.cfg.flush_denormal):
            return self._run()

    def _run(self) -> TrainResult:
        if self.info.is_main:
            self._write_side_files()
        if self.cfg.resume:
            self._resume()
        start = self.state.epoch
        if start == 0 and (self.cfg.eval.at_start or self.cfg.epochs == 0):
            self._evaluate_and_save(0, None)
        for epoch in range(start, self.cfg.epochs):
            stats = self.train_epoch(epoch)
            for m in self.members:
                m.scheduler.step()
            self._evaluate_and_save(epoch + 1, stats)
        self.result.best, self.result.best_epoch = self.state.best, self.state.best_epoch
        return self.result

    def _should_evaluate(self, epoch: int) -> bool:
        if self.data.evaluation is None:
            return False
        every = self.cfg.eval.every
        return epoch == self.cfg.epochs or epoch == 0 or (every > 0 and epoch % every == 0)

    def _evaluate_and_save(self, epoch: int, train_stats: dict[str, float] | None) -> None:
        """Validation (rank 0), checkpoints and the CSV row of ``epoch`` completed epochs."""
        self.state.epoch = epoch
        metrics: dict[str, float] = {}
        if self.info.is_main:
            if self._should_evaluate(epoch):
                metrics = self.evaluate()
            self.state.metrics = metrics
            self._save_checkpoints(epoch, metrics)
            row = {"epoch": float(epoch), **(train_stats or {}), **metrics}
            self.result.history.append(row)
            self._append_csv(row)
        barrier(self.info)

    # ------------------------------------------------------------------ training

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of training; returns mean loss terms, lr and images/s."""
        self.state.epoch = epoch
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))  # dropout etc.: a function of the epoch
        for m in self.members:
            m.module.train()
        total_steps = self.cfg.steps_per_epoch or len(self.loader)
        if self.cfg.max_steps_per_epoch:
            total_steps = min(total_steps, self.cfg.max_steps_per_epoch)
        sums = dict.fromkeys(self.terms, 0.0)
        images, steps, start = 0, 0, time.perf_counter()
        bar = tqdm(
            total=total_steps,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            disable=not (self.cfg.progress and self.info.is_main),
            leave=False,
        )
        for batch in self.loader.epoch_batches(epoch, self.cfg.steps_per_epoch):
            if steps >= total_steps:
                break
            values = self.train_step(batch)
            for k, v in values.items():
                sums[k] += v
            images += batch.images.shape[0]
            steps += 1
            self.result.step_losses.append((epoch, steps, values["loss"]))
            rate = images / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"img/s": f"{rate:.1f}"})
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - start
        stats = average_scalars({k: v / max(steps, 1) for k, v in sums.items()}, self.info)
        stats.update(
            lr=self.members[0].optimizer.param_groups[0]["lr"],
            images_per_s=images * self.info.world_size / max(seconds, 1e-9),
            seconds=seconds,
        )
        logger.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.cfg.epochs,
            ", ".join(f"{k} {v:.4g}" for k, v in stats.items()),
        )
        return stats

    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward, loss, backward and optimiser step(s) on one batch; the loss terms."""
        batch = batch.to(self.info.device, non_blocking=True)
        if self.cfg.channels_last:
            batch = replace(
                batch, images=batch.images.contiguous(memory_format=torch.channels_last)
            )
        with torch.autocast(self.info.device.type, dtype=torch.float16, enabled=self.amp):
            outs = [m.module(batch.images) for m in self.members]
        total, terms = pair_loss(outs, batch, self.cfg.loss)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"loss is {total.item()} at epoch {self.state.epoch + 1}: lower optim.lr or check the data"
            )
        for m in self.members:
            m.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        for m in self.members:
            self.scaler.step(m.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in terms.items()}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, member: int = 0) -> dict[str, float]:
        """Validation metrics of model ``member`` ({} when there is no evaluation split)."""
        if self.eval_loaders is None or self.data.evaluation is None:
            return {}
        query, gallery = self.eval_loaders
        return evaluate_model(
            self.members[member].core,
            query,
            gallery,
            self.data.evaluation,
            self.data.schema,
            self.info.device,
            self.cfg.eval,
        )

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """The checkpoint dict of the current state (see :mod:`training.checkpoint`)."""
        sampler = self.loader.sampler
        state: dict[str, Any] = {
            "format": FORMAT,
            "model": self.members[0].core.state_dict(),
            "model_config": self.cfg.model.to_dict(),
            "num_classes": self.members[0].core.classifier.out_features
            if self.members[0].core.classifier is not None
            else 0,
            "attribute_schema": self.data.schema.to_dict(),
            "preprocess": self.data.preprocess.to_dict(),
            "dataset": self.data.name,
            "metrics": dict(metrics),
            "epoch": epoch,
            "config": config_to_dict(self.cfg),
            "optimizers": [m.optimizer.state_dict() for m in self.members],
            "schedulers": [m.scheduler.state_dict() for m in self.members],
            "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else None,
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "trainer": {"best": self.state.best, "best_epoch": self.state.best_epoch},
        }
        if len(self.members) > 1:
            state["peer_model"] = self.members[1].core.state_dict()
            state["peer_model_config"] = (self.cfg.peer_model or self.cfg.model).to_dict()
        return state

    def _is_better(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.cfg.eval.best_metric)
        if value is None or math.isnan(value):
            return self.state.best is None  # without evaluation, best.pt follows the last epoch
        return self.state.best is None or value > self.state.best

    def _save_checkpoints(self, epoch: int, metrics: dict[str, float]) -> None:
        better = self._is_better(metrics)
        if better:
            value = metrics.get(self.cfg.eval.best_metric)
            self.state.best = value if value is not None and not math.isnan(value) else None
            self.state.best_epoch = epoch
        state = self.checkpoint_state(epoch, metrics)
        save_checkpoint(state, self.out / "last.pt")
        every = self.cfg.checkpoint_every
        if every and epoch > 0 and epoch % every == 0:
            save_checkpoint(state, self.out / f"epoch_{epoch:03d}.pt")
        if better or not (self.out / "best.pt").exists():
            save_checkpoint(state, self.out / "best.pt")
            logger.info(
                "best.pt <- epoch %d (%s %s)", epoch, self.cfg.eval.best_metric, self.state.best
            )

    def _resume(self) -> None:
        path = Path(self.cfg.resume)
        if self.cfg.resume == "auto":
            path = self.out / "last.pt"
            if not path.is_file():
                logger.info("resume=auto: no %s, starting from scratch", path)
                return
        state = load_checkpoint(path, map_location=self.info.device)
        self._check_compatible(state, path)
        for i, m in enumerate(self.members):
            m.core.load_state_dict(state["peer_model" if i else "model"])
            m.optimizer.load_state_dict(state["optimizers"][i])
            m.scheduler.load_state_dict(state["schedulers"][i])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state.get("sampler") and hasattr(self.loader.sampler, "load_state_dict"):
            self.loader.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        trainer = state.get("trainer", {})
        self.state = _State(
            epoch=int(state["epoch"]),
            best=trainer.get("best"),
            best_epoch=int(trainer.get("best_epoch", -1)),
            metrics=dict(state["metrics"]),
        )
        logger.info("resumed from %s at epoch %d", path, self.state.epoch)

    def _check_compatible(self, state: dict[str, Any], path: Path) -> None:
        if state["model_config"] != self.cfg.model.to_dict():
            raise CheckpointError(
                f"{path}: model config {state['model_config']} differs from this run's "
                f"{self.cfg.model.to_dict()}"
            )
        if len(state.get("optimizers", [])) != len(self.members):
            raise CheckpointError(
                f"{path} holds {len(state.get('optimizers', []))} optimiser states; this run "
                f"trains {len(self.members)} model(s) (loss.mutual must match)"
            )
        if state["epoch"] > self.cfg.epochs:
            raise CheckpointError(f"{path} is at epoch {state['epoch']} > epochs={self.cfg.epochs}")

    # ------------------------------------------------------------------ side files

    def _write_side_files(self) -> None:
        """``config.yaml`` and ``attributes.json`` beside the checkpoints."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(
            yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False)
        )
        (self.out / "attributes.json").write_text(json.dumps(self.data.schema.to_dict(), indent=2))

    def csv_columns(self) -> list[str]:
        """Columns of ``metrics.csv``."""
        return ["epoch", "lr", "images_per_s", "seconds", *self.terms, *METRIC_NAMES]

    def _append_csv(self, row: dict[str, float]) -> None:
        path = self.out / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.csv_columns(), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (int(v) if k == "epoch" else f"{v:.6g}") for k, v in row.items()})


def train(cfg: TrainConfig, info: DistInfo | None = None) -> TrainResult:
    """Run ``cfg`` to the end (see :class:`Trainer`)."""
    return Trainer(cfg, info).run()
