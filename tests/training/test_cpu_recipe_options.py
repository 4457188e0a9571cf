"""Options of the CPU recipe: the cosine schedule (against hand-computed rates), channels-last
training (same losses and features as the default memory order) and flushing denormals."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from training.config import OptimConfig, load_train_config
from training.evaluate import extract, weights_memory_format
from training.optim import lr_factor
from training.trainer import Trainer, denormals_flushed, flushing_denormals

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "synthetic_tiny.yaml"


def test_cosine_schedule_by_hand() -> None:
    cfg = OptimConfig(schedule="cosine", warmup_epochs=2, warmup_factor=0.1, cosine_floor=0.01)
    # 12 epochs: warm-up at 0 and 1, then a half cosine over epochs 2..11 (span 9)
    expected = {
        0: 0.1,
        1: 0.55,
        2: 1.0,
        5: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 3)),  # 0.7525
        11: 0.01,
    }
    assert {e: lr_factor(e, cfg, 12) for e in expected} == pytest.approx(expected)
    rates = [lr_factor(e, cfg, 12) for e in range(2, 12)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))  # strictly decreasing


def test_cosine_schedule_rejects_milestones_and_bad_floor() -> None:
    with pytest.raises(ValueError, match="cosine takes no milestones"):
        OptimConfig(schedule="cosine", milestones=[5])
    with pytest.raises(ValueError, match="cosine_floor"):
        OptimConfig(schedule="cosine", cosine_floor=1.5)
    with pytest.raises(ValueError, match="optim.schedule"):
        OptimConfig(schedule="linear")


def test_shipped_cuhk03_recipe_ends_at_its_floor() -> None:
    cfg = load_train_config(REPO / "training/configs/osnet_cuhk03_cpu.yaml")
    assert cfg.optim.schedule == "cosine" and cfg.channels_last
    last = cfg.optim.lr * lr_factor(cfg.epochs - 1, cfg.optim, cfg.epochs)
    assert last == pytest.approx(cfg.optim.lr * cfg.optim.cosine_floor)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synth"),
        num_train_ids=12,
        num_test_ids=2,
        num_cameras=2,
        images_per_camera=3,
        seed=0,
        num_distractors=0,
        num_junk=0,
        overwrite=True,
    )


def _trainer(root: Path, out: Path, *overrides: str) -> Trainer:
    cfg = load_train_config(
        TINY,
        [
            f"data.root={root}",
            f"data.attributes={root / 'market_attribute.mat'}",
            f"output_dir={out}",
            "data.val_ids=4",
            "data.workers=0",
            "threads=1",
            "progress=false",
            *overrides,
        ],
    )
    return Trainer(cfg)


def test_channels_last_trains_and_extracts_like_the_default_order(
    synth_root: Path, tmp_path: Path
) -> None:
    default = _trainer(synth_root, tmp_path / "a", "channels_last=false")
    nhwc = _trainer(synth_root, tmp_path / "b", "channels_last=true")
    assert weights_memory_format(default.members[0].core) == torch.contiguous_format
    assert weights_memory_format(nhwc.members[0].core) == torch.channels_last
    assert nhwc.eval_loaders is not None and default.eval_loaders is not None
    fa = extract(default.members[0].core, default.eval_loaders[1], torch.device("cpu"))
    fb = extract(nhwc.members[0].core, nhwc.eval_loaders[1], torch.device("cpu"))
    assert fa.features.shape == fb.features.shape
    assert abs(fa.features - fb.features).max() < 1e-4
    # one step: same losses and gradients (later steps drift apart by rounding that Adam's
    # per-weight normalisation amplifies on near-zero gradients, in either memory order)
    batch = next(iter(default.loader.epoch_batches(0, 0)))
    losses = []
    for t in (default, nhwc):
        t.members[0].module.train()
        torch.manual_seed(0)
        losses.append(t.train_step(batch))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5)
    grads = [
        {n: p.grad for n, p in t.members[0].core.named_parameters() if p.grad is not None}
        for t in (default, nhwc)
    ]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    # float32 in both, summed in another order by other kernels: the whole gradient agrees to
    # rounding (0.6% here; on a random OSNet x0.25 NCHW is 0.7% and NHWC 2.7% away from a
    # float64 reference), while a wrong layout or a missed conversion would be far off
    flat = [torch.cat([g.flatten() for _, g in sorted(d.items())]) for d in grads]
    err = float((flat[1] - flat[0]).norm() / flat[0].norm())
    assert err < 0.03, err


def test_denormals_are_flushed_only_while_a_run_trains() -> None:
    before = flushing_denormals()
    with denormals_flushed(True):
        tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
        if not flushing_denormals():
            pytest.skip("this CPU cannot flush denormals (no SSE3 DAZ/FTZ)")
        assert (tiny * 1.0).item() == 0.0
        with denormals_flushed(False):
            assert (torch.tensor([1e-39]) * 1.0).item() != 0.0
        assert flushing_denormals()
    assert flushing_denormals() == before  # hypothesis and friends need the state back


def test_a_training_run_restores_the_denormal_state(synth_root: Path, tmp_path: Path) -> None:
    before = flushing_denormals()
    seen: list[bool] = []
    t = _trainer(synth_root, tmp_path, "epochs=1", "max_steps_per_epoch=1", "flush_denormal=true")
    step = t.train_step
    t.train_step = lambda batch: (seen.append(flushing_denormals()), step(batch))[1]  # type: ignore[method-assign]
    t.run()
    supported = torch.set_flush_denormal(True)  # True where the CPU can flush
    torch.set_flush_denormal(before)
    assert seen and all(seen) == supported  # every step ran flushed
    assert flushing_denormals() == before


def test_cosine_needs_the_run_length_from_the_trainer(synth_root: Path, tmp_path: Path) -> None:
    t = _trainer(
        synth_root,
        tmp_path,
        "epochs=4",
        "optim.schedule=cosine",
        "optim.milestones=[]",
        "optim.warmup_epochs=0",
        "optim.cosine_floor=0.1",
    )
    sched, base = t.members[0].scheduler, t.cfg.optim.lr
    rates = []
    for _ in range(4):
        rates.append(sched.get_last_lr()[0])
        sched.step()
    expected = [base * lr_factor(e, dataclasses.replace(t.cfg.optim), 4) for e in range(4)]
    assert rates == pytest.approx(expected)
    assert rates[-1] == pytest.approx(base * 0.1)
