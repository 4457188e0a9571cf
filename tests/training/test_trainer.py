"""The trainer end to end on a tiny synthetic dataset: learning, exact resume, mutual learning,
checkpoint contract, DDP on two CPU processes, and ``reid train`` errors.

Everything runs single-threaded (``threads=1``: on a shared 2-core machine two threads per
process were 20x slower) on ResNet-18 at 64×32.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reidcore.cli import main as reid_main
from training.checkpoint import FORMAT, load_checkpoint, load_checkpoint_for_inference
from training.config import TrainConfig, load_train_config
from training.configtools import ConfigError
from training.data.loader import ReidBatch
from training.losses import aligned_triplet_loss
from training.models import ReidOutput
from training.objective import pair_loss, term_names
from training.optim import lr_factor
from training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "synthetic_tiny.yaml"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training identities (plus 2 test ones) seen by 3 mildly different cameras."""
    from training.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    return generate_dataset(
        out,
        num_train_ids=24,
        num_test_ids=2,
        num_cameras=3,
        images_per_camera=3,
        seed=0,
        num_distractors=0,
        num_junk=0,
        camera_severity=0.3,
        overwrite=True,
    )


def tiny_config(root: Path, out: Path, *overrides: str) -> TrainConfig:
    """The shipped tiny config pointed at ``root``, writing to ``out``."""
    base = [
        f"data.root={root}",
        f"data.attributes={root / 'market_attribute.mat'}",
        f"output_dir={out}",
        "data.val_ids=8",
        "threads=1",
        "progress=false",
    ]
    return load_train_config(TINY, [*base, *overrides])


@pytest.mark.slow  # six epochs and seven evaluations: ~15 s on a shared 2-core CPU
def test_training_raises_validation_map(synth_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(synth_root, tmp_path, "epochs=6", "eval.every=6")
    result = train(cfg)
    before, after = result.history[0], result.history[-1]
    assert before["epoch"] == 0 and after["epoch"] == 6
    assert after["mAP"] > before["mAP"] + 0.1, (before["mAP"], after["mAP"])
    assert after["attr_acc"] > before["attr_acc"] + 0.1
    first_loss = result.history[1]["loss"]
    assert after["loss"] < first_loss
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith(
        "epoch,lr,images_per_s,seconds,loss,id,attr,tri_global,tri_local"
    )
    assert len(csv_lines) == 1 + 7  # header, epoch 0 evaluation, 6 epochs
    for name in ("best.pt", "last.pt", "config.yaml", "attributes.json"):
        assert (tmp_path / name).is_file(), name
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch == 6
    assert best["metrics"]["mAP"] == pytest.approx(after["mAP"])


def _short(root: Path, out: Path, *extra: str) -> TrainConfig:
    return tiny_config(
        root,
        out,
        "epochs=2",
        "max_steps_per_epoch=2",
        "eval.at_start=false",
        "eval.every=0",
        "checkpoint_every=1",
        "model.dropout=0.5",  # exercises torch's generator across the resume
        *extra,
    )


def test_resume_from_epoch_checkpoint_continues_exactly(synth_root: Path, tmp_path: Path) -> None:
    full = train(_short(synth_root, tmp_path / "full"))
    resumed_cfg = _short(
        synth_root, tmp_path / "resumed", f"resume={tmp_path / 'full/epoch_001.pt'}"
    )
    resumed = train(resumed_cfg)
    expected = [loss for epoch, _, loss in full.step_losses if epoch == 1]
    got = [loss for epoch, _, loss in resumed.step_losses]
    assert [e for e, _, _ in resumed.step_losses] == [1, 1]
    assert got == pytest.approx(expected, abs=1e-6)
    a = load_checkpoint(tmp_path / "full/last.pt")
    b = load_checkpoint(tmp_path / "resumed/last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6, msg=key)


def test_resume_refuses_a_different_model(synth_root: Path, tmp_path: Path) -> None:
    train(_short(synth_root, tmp_path / "a", "epochs=1"))
    cfg = _short(
        synth_root, tmp_path / "b", "model.local_dim=16", f"resume={tmp_path / 'a/last.pt'}"
    )
    with pytest.raises(ValueError, match="model config"):
        train(cfg)


def test_mutual_learning_updates_both_models(synth_root: Path, tmp_path: Path) -> None:
    cfg = _short(synth_root, tmp_path, "epochs=1", "loss.mutual=true", "eval.every=1")
    trainer = Trainer(cfg)
    initial = [
        {k: v.clone() for k, v in m.core.state_dict().items() if v.is_floating_point()}
        for m in trainer.members
    ]
    assert not torch.equal(  # the two peers start from different heads
        initial[0]["classifier.weight"], initial[1]["classifier.weight"]
    )
    result = trainer.run()
    for start, member in zip(initial, trainer.members, strict=True):
        now = member.core.state_dict()
        changed = [k for k, v in start.items() if not torch.equal(v, now[k])]
        assert "classifier.weight" in changed and "backbone.conv1.weight" in changed
    row = result.history[-1]
    for term in ("mutual_cls", "mutual_metric", "peer_id", "peer_tri_local"):
        assert row[term] >= 0.0, term
    assert "mAP" in row
    peer, info = load_checkpoint_for_inference(tmp_path / "last.pt", peer=True)
    for k, v in peer.state_dict().items():
        torch.testing.assert_close(v, trainer.members[1].core.state_dict()[k], msg=k)
    assert info.num_classes == trainer.data.num_classes


def test_mutual_learning_with_two_backbones(synth_root: Path, tmp_path: Path) -> None:
    """AlignedReID Sec. 4.4 pairs different architectures: ResNet-18 with OSNet here."""
    peer = (
        "peer_model={backbone: osnet_x0_25, use_local: true, use_attributes: true, local_dim: 32}"
    )
    cfg = _short(synth_root, tmp_path, "epochs=1", "loss.mutual=true", peer)
    trainer = Trainer(cfg)
    assert type(trainer.members[0].core.backbone) is not type(trainer.members[1].core.backbone)
    result = trainer.run()
    assert result.history[-1]["peer_tri_local"] >= 0.0
    peer_model, _ = load_checkpoint_for_inference(tmp_path / "last.pt", peer=True)
    assert type(peer_model.backbone) is type(trainer.members[1].core.backbone)
    for k, v in peer_model.state_dict().items():
        torch.testing.assert_close(v, trainer.members[1].core.state_dict()[k], msg=k)


def test_steps_per_epoch_runs_that_many_batches_over_several_passes(
    synth_root: Path, tmp_path: Path
) -> None:
    cfg = _short(synth_root, tmp_path, "epochs=1", "max_steps_per_epoch=0")
    passes = len(Trainer(cfg).loader)
    steps = 2 * passes + 1  # AlignedReID Sec. 4.2: an epoch is a number of mini-batches
    result = train(dataclasses.replace(cfg, steps_per_epoch=steps))
    assert [s for _, s, _ in result.step_losses] == list(range(1, steps + 1))


def test_pair_loss_matches_hand_sum() -> None:
    """The objective is the weighted sum of the independently computed terms."""
    g = torch.Generator().manual_seed(0)
    n, d, c = 8, 6, 4
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    attrs = torch.tensor([[0, 1], [0, 1], [1, -1], [1, 0], [0, 0], [0, 0], [1, 2], [1, 2]])

    def output() -> ReidOutput:
        return ReidOutput(
            features=torch.randn(n, d, generator=g),
            embedding=torch.randn(n, d, generator=g),
            id_logits=torch.randn(n, c, generator=g),
            attr_logits=[torch.randn(n, 2, generator=g), torch.randn(n, 3, generator=g)],
            attr_probs=None,
            local_features=torch.randn(n, 3, 5, generator=g),
        )

    batch = ReidBatch(
        torch.zeros(n, 3, 4, 4), pids, torch.zeros(n, dtype=torch.long), attrs, torch.arange(n)
    )
    cfg = dataclasses.replace(
        TrainConfig().loss,
        id_weight=8.0,
        label_smoothing=0.1,
        attributes=True,
        attribute_weight=0.5,
        global_triplet_weight=1.5,
        local_triplet_weight=2.0,
        mutual=True,
        mutual_classification_weight=0.01,
        mutual_metric_weight=0.001,
    )
    a, b = output(), output()
    total, terms = pair_loss([a, b], batch, cfg)

    def single(o: ReidOutput) -> torch.Tensor:
        assert o.id_logits is not None and o.local_features is not None
        ce = F.cross_entropy(o.id_logits, pids, label_smoothing=0.1)
        att0 = F.cross_entropy(o.attr_logits[0], attrs[:, 0])
        known = attrs[:, 1] >= 0
        att1 = F.cross_entropy(o.attr_logits[1][known], attrs[known, 1])
        trip = aligned_triplet_loss(o.features, o.local_features, pids, 0.5)
        return 8.0 * ce + 0.5 * (att0 + att1) / 2 + 1.5 * trip.global_loss + 2.0 * trip.local_loss

    def dist(o: ReidOutput) -> torch.Tensor:
        return torch.cdist(o.features, o.features)

    assert a.id_logits is not None and b.id_logits is not None
    pa, pb = a.id_logits.softmax(1), b.id_logits.softmax(1)
    kl = (pb * (pb.log() - pa.log())).sum(1).mean() + (pa * (pa.log() - pb.log())).sum(1).mean()
    mse = 2 * (dist(a) - dist(b)).pow(2).mean()
    expected = single(a) + single(b) + 0.01 * kl + 0.001 * mse
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)
    assert sorted(terms) == sorted(term_names(cfg))


def test_lr_schedule_of_the_papers() -> None:
    apr = load_train_config(REPO / "training/configs/apr_market.yaml").optim
    assert [lr_factor(e, apr) for e in (0, 49, 50, 54)] == pytest.approx([1, 1, 0.1, 0.1])
    aligned = load_train_config(REPO / "training/configs/alignedreid_market.yaml").optim
    assert [lr_factor(e, aligned) for e in (79, 80, 159, 160)] == pytest.approx([1, 0.1, 0.1, 0.01])
    warm = dataclasses.replace(aligned, warmup_epochs=4, warmup_factor=0.2)
    assert [lr_factor(e, warm) for e in (0, 2, 4)] == pytest.approx([0.2, 0.6, 1.0])


def test_epochs_zero_evaluates_and_saves_the_initial_model(
    synth_root: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(synth_root, tmp_path, "epochs=0")
    trainer = Trainer(cfg)
    result = trainer.run()
    assert [row["epoch"] for row in result.history] == [0]
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["format"] == FORMAT and state["epoch"] == 0
    assert set(state["metrics"]) >= {"rank1", "mAP", "mINP", "attr_acc"}
    model, info = load_checkpoint_for_inference(tmp_path / "best.pt")
    assert info.preprocess.height == 64 and info.preprocess.width == 32
    assert info.schema.names == trainer.data.schema.names and len(info.schema) == 27  # APR
    assert info.num_classes == trainer.data.num_classes
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        ours = trainer.members[0].core.eval()(x)
        theirs = model(x)
    torch.testing.assert_close(theirs.embedding, ours.embedding)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from training.distributed import cleanup_distributed, init_distributed

    cfg = _short(Path(root), Path(out), "epochs=1", "device=cpu", "data.p=4", "eval.every=1")
    info = init_distributed("cpu")
    trainer = Trainer(cfg, info)
    trainer.run()
    torch.save(trainer.members[0].core.state_dict(), Path(out) / f"rank{rank}.pt")
    cleanup_distributed(info)


def test_ddp_two_cpu_processes(synth_root: Path, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), str(synth_root), str(tmp_path)), nprocs=2, join=True
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0.items():
        if k.endswith("num_batches_tracked") or "running_" in k:
            continue  # BN statistics stay per rank (no SyncBN)
        torch.testing.assert_close(r1[k], v, msg=k)  # gradients were averaged
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and "mAP" in state["metrics"]


def test_reid_train_bad_override_names_the_key(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reid_main(["train", "--config", str(TINY), "--set", "optim.lr=fast"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "'fast'" in err
    assert reid_main(["train", "--config", str(TINY), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "lrr" in err and "valid keys" in err
    assert (
        reid_main(["train", "--config", str(TINY), "--set", f"data.root={tmp_path / 'none'}"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    data = [f"data.root={synth_root}", f"data.attributes={synth_root / 'market_attribute.mat'}"]
    too_many = ["--set", "data.p=40", "--set", f"output_dir={tmp_path / 'run'}"]
    args = ["train", "--config", str(TINY), *[x for d in data for x in ("--set", d)], *too_many]
    assert reid_main(args) == 2
    assert "data.p=40" in capsys.readouterr().err


def test_inconsistent_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.use_local"):
        load_train_config(TINY, ["model.use_local=false"])
    with pytest.raises(ConfigError, match="sampler=pk"):
        load_train_config(TINY, ["data.sampler=random"])
