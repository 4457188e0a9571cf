"""``TrainConfig``: everything ``reid train`` needs, as a tree of dataclasses.

Loaded from YAML with ``key.sub=value`` overrides by :func:`load_train_config` (see
:mod:`training.configtools`); every field has a docstring. Cross-field rules (a local loss
needs a local branch, attributes need an annotation file...) are checked in
:meth:`TrainConfig.__post_init__`, so a bad config fails before any data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.configtools import ConfigError, load_config
from training.models.config import ModelConfig

DATA_FORMATS = ("market", "msmt17", "folders", "csv")
"""Valid :attr:`DataConfig.format` values (see :mod:`training.data.readers`)."""
SAMPLERS = ("pk", "random")
"""Valid :attr:`DataConfig.sampler` values."""
EVAL_SPLITS = ("val", "test")
"""Valid :attr:`DataConfig.eval_split` values."""
OPTIMIZERS = ("sgd", "adam")
"""Valid :attr:`OptimConfig.name` values."""
SCHEDULES = ("step", "cosine")
"""Valid :attr:`OptimConfig.schedule` values."""


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are split and batched."""

    format: str = "market"
    """``market`` (Market-1501 / DukeMTMC-reID / CUHK03-NP layout), ``msmt17`` (list files),
    ``folders`` (``ROOT/<camera>/<identity>/*.jpg``) or ``csv`` (``path,identity,camera``)."""
    root: str = ""
    """Dataset root folder (for ``csv``: the CSV file). Relative paths are taken from the
    working directory."""
    attributes: str = ""
    """APR attribute file (``market_attribute.mat``/``duke_attribute.mat``); ``""`` none."""
    attribute_split: str = "train"
    """Split of the attribute file to use: ``train``, ``test`` or ``all`` (both merged)."""
    attribute_colours: str = "binary"
    """``binary``: APR's schema, one no/yes attribute per colour field (Market 27 / Duke 23
    attributes); ``grouped``: this project's variant, one multi-class attribute per colour
    family (12 / 10)."""
    height: int = 256
    """Input height in pixels (training and evaluation)."""
    width: int = 128
    """Input width in pixels."""
    val_ids: int = 100
    """Training identities held out for validation (APR: 100 of Market's 751); 0 = none."""
    val_seed: int = 0
    """Seed of the validation split."""
    eval_split: str = "val"
    """Evaluate on ``val`` (identities carved from the training set) or on the dataset's own
    ``test`` query/gallery (Market layout and MSMT17 only)."""
    sampler: str = "pk"
    """``pk``: P identities × K images per batch (needed by triplet losses); ``random``."""
    p: int = 16
    """Identities per batch (``pk``)."""
    k: int = 4
    """Images per identity (``pk``)."""
    batch_size: int = 64
    """Images per batch with the ``random`` sampler (``pk`` uses P×K)."""
    workers: int = 2
    """Data-loading worker processes (0: load in the training process)."""
    eval_batch_size: int = 128
    """Images per batch when extracting evaluation features."""
    flip_p: float = 0.5
    """Probability of a horizontal flip (training augmentation)."""
    pad: int = 10
    """Padding of the random shift-crop in pixels (0 disables it)."""
    erase_p: float = 0.5
    """Probability of random erasing (0 disables it)."""

    def __post_init__(self) -> None:
        _one_of("data.format", self.format, DATA_FORMATS)
        _one_of("data.eval_split", self.eval_split, EVAL_SPLITS)
        _one_of("data.sampler", self.sampler, SAMPLERS)
        _one_of("data.attribute_split", self.attribute_split, ("train", "test", "all"))
        _one_of("data.attribute_colours", self.attribute_colours, ("binary", "grouped"))
        for name in ("height", "width", "p", "k", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_ids", "workers", "pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_split == "test" and self.format not in ("market", "msmt17"):
            raise ValueError(
                f"data.eval_split=test needs a market or msmt17 root, not {self.format}"
            )


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms. APR: ``id_weight=8, attributes=true``; AlignedReID:
    ``id_weight=1, global_triplet_weight=1, local_triplet_weight=1``."""

    id_weight: float = 1.0
    """Weight λ of the identity cross-entropy (APR: 8); 0 trains no identity classifier."""
    label_smoothing: float = 0.0
    """Label smoothing ε of the identity cross-entropy (0: plain cross-entropy)."""
    attributes: bool = False
    """Train the attribute classifiers with APR's mean attribute cross-entropy (needs
    ``model.use_attributes`` and ``data.attributes``)."""
    attribute_weight: float = 1.0
    """Weight of the mean attribute cross-entropy (APR: 1)."""
    triplet_margin: float = 0.5
    """Hinge margin of the (global and local) batch-hard triplet losses."""
    global_triplet_weight: float = 0.0
    """Weight of TriHard on the global feature (AlignedReID: 1); needs the ``pk`` sampler."""
    local_triplet_weight: float = 0.0
    """Weight of the local (stripe) triplet loss on the globally mined triplets (AlignedReID:
    1); needs ``model.use_local``."""
    local_aligned: bool = True
    """Local distance: AlignedReID's shortest path (true) or same-index stripes (false)."""
    mutual: bool = False
    """Train two models side by side with AlignedReID's mutual losses."""
    mutual_classification_weight: float = 0.01
    """Weight of the KL mutual loss on the identity probabilities."""
    mutual_metric_weight: float = 0.001
    """Weight of the squared-difference mutual loss on the batch distance matrices."""

    def __post_init__(self) -> None:
        for name in (
            "id_weight",
            "attribute_weight",
            "triplet_margin",
            "global_triplet_weight",
            "local_triplet_weight",
            "mutual_classification_weight",
            "mutual_metric_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must lie in [0, 1), got {self.label_smoothing}")

    @property
    def uses_triplet(self) -> bool:
        """Whether a triplet term is on (it needs P×K batches)."""
        return self.global_triplet_weight > 0 or self.local_triplet_weight > 0


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped once per epoch)."""

    name: str = "sgd"
    """``sgd`` (with momentum) or ``adam``."""
    lr: float = 1e-3
    """Base learning rate."""
    momentum: float = 0.9
    """SGD momentum (ignored by Adam)."""
    nesterov: bool = False
    """SGD Nesterov momentum."""
    weight_decay: float = 5e-4
    """L2 weight decay."""
    head_lr_mult: float = 1.0
    """Learning-rate multiplier of the layers not in the backbone (classifiers, neck, local
    branch); >1 lets fresh heads learn faster than a pretrained backbone."""
    milestones: list[int] = field(default_factory=list)
    """Epochs (0-based, counted from the start) at which the rate is multiplied by ``gamma``."""
    milestone_lrs: list[float] = field(default_factory=list)
    """A piecewise-constant schedule instead of ``gamma``: the learning rate from each
    milestone on (one per milestone). AlignedReID's mutual learning (Sec. 4.2: Adam 3e-4,
    "reduced to 1e-4 and 1e-5 at 60 epochs and 120 epochs") is ``lr: 3.0e-4``,
    ``milestones: [60, 120]``, ``milestone_lrs: [1.0e-4, 1.0e-5]``."""
    gamma: float = 0.1
    """Decay factor at each milestone."""
    warmup_epochs: int = 0
    """Epochs of linear warm-up from ``warmup_factor × lr`` to ``lr``."""
    warmup_factor: float = 0.1
    """Starting fraction of the learning rate during warm-up."""
    schedule: str = "step"
    """``step``: the milestones above; ``cosine``: after warm-up, a half cosine from ``lr``
    down to ``lr × cosine_floor`` at the last epoch (milestones must then be empty)."""
    cosine_floor: float = 0.01
    """Final fraction of the learning rate of the ``cosine`` schedule."""

    def __post_init__(self) -> None:
        _one_of("optim.name", self.name, OPTIMIZERS)
        _one_of("optim.schedule", self.schedule, SCHEDULES)
        if self.schedule == "cosine" and self.milestones:
            raise ValueError(
                "optim.schedule=cosine takes no milestones; leave optim.milestones empty"
            )
        if not 0.0 <= self.cosine_floor <= 1.0:
            raise ValueError(f"optim.cosine_floor must lie in [0, 1], got {self.cosine_floor}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.momentum < 0 or self.head_lr_mult <= 0:
            raise ValueError("optim.weight_decay and momentum must be >= 0, head_lr_mult > 0")
        if list(self.milestones) != sorted(set(self.milestones)) or any(
            m < 1 for m in self.milestones
        ):
            raise ValueError(
                f"optim.milestones must be increasing epochs >= 1, got {self.milestones}"
            )
        if not 0.0 < self.gamma <= 1.0 or not 0.0 < self.warmup_factor <= 1.0:
            raise ValueError("optim.gamma and optim.warmup_factor must lie in (0, 1]")
        if self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.milestone_lrs and (
            len(self.milestone_lrs) != len(self.milestones) or min(self.milestone_lrs) <= 0
        ):
            raise ValueError(
                f"optim.milestone_lrs must hold one positive rate per milestone "
                f"({len(self.milestones)}), got {self.milestone_lrs}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training."""

    every: int = 1
    """Evaluate every N epochs (and always after the last); 0 = only after the last."""
    at_start: bool = False
    """Also evaluate the initial model before the first epoch (e.g. pretrained weights)."""
    rerank: bool = False
    """Also report metrics after k-reciprocal re-ranking."""
    rerank_k1: int = 20
    """k1 of k-reciprocal re-ranking."""
    rerank_k2: int = 6
    """k2 of k-reciprocal re-ranking."""
    rerank_lambda: float = 0.3
    """Weight of the original distance in re-ranking."""
    local_distance: bool = False
    """Also report ``gl_*`` metrics ranked by the global plus the aligned local distance
    (AlignedReID arXiv 1711.08184v2 Sec. 4.3; needs ``model.use_local``)."""
    local_weight: float = 1.0
    """Weight of the local distance in that sum (the paper: 1)."""
    best_metric: str = "mAP"
    """Metric that selects ``best.pt``: ``mAP``, ``rank1`` or ``mINP``."""
    attribute_protocol: str = "apr"
    """``apr``: APR's Tables 3/4 (gallery images only, colours scored as one column per
    family, an identity with no colour marked counts as wrong); ``all_images``: query and
    gallery images, every attribute on its known labels."""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.every}")
        _one_of("eval.best_metric", self.best_metric, ("mAP", "rank1", "mINP"))
        _one_of("eval.attribute_protocol", self.attribute_protocol, ("apr", "all_images"))
        if not self.local_weight >= 0:
            raise ValueError(f"eval.local_weight must be >= 0, got {self.local_weight}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, loss, optimiser and run control."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset, split and batching."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture and initial weights (``training.models.config.ModelConfig``)."""
    peer_model: ModelConfig | None = None
    """Mutual learning only: the second model's architecture (``None``: the same as
    ``model``). AlignedReID (Sec. 4.4) pairs ResNet-50 with ResNet50-Xception; both models
    need the heads the losses use (``use_local``, ``use_attributes`` as ``model``)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss terms and weights."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation settings."""
    epochs: int = 60
    """Training epochs; 0 evaluates the initial (e.g. pretrained) model and saves it."""
    amp: bool = False
    """Mixed precision (fp16 autocast + GradScaler) on CUDA; ignored (with a warning) on CPU."""
    channels_last: bool = False
    """Keep the model's weights and each batch in channels-last (NHWC) memory order: float32
    still, through other kernels, so results differ from the default order by rounding only.
    An OSNet x0.25 training step on CUHK03 crops: 1.75 s -> 1.26 s on this project's 2-core
    x86 CPU, 0.87 s with ``flush_denormal`` too (``python -m benchmarks.train_step``)."""
    flush_denormal: bool = True
    """Treat float32 values below 1.2e-38 as zero on the CPU while the run trains
    (``torch.set_flush_denormal``; the process's earlier state is restored after).
    Fine-tuning pretrained weights produces such values, and computing with them is slow:
    flushing them makes the step above 1.38x faster in either memory order
    (``python -m benchmarks.train_step``)."""
    seed: int = 0
    """Seed of model initialisation, sampling, augmentation and dropout."""
    output_dir: str = "runs/train"
    """Folder for checkpoints, ``metrics.csv``, ``config.yaml`` and ``attributes.json``."""
    resume: str = ""
    """Checkpoint to resume from; ``auto``: ``output_dir/last.pt`` when it exists."""
    checkpoint_every: int = 0
    """Also keep ``epoch_NNN.pt`` every N epochs (0: only ``last.pt`` and ``best.pt``)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    progress: bool = True
    """Show a tqdm progress bar (rank 0 only)."""
    max_steps_per_epoch: int = 0
    """Stop each epoch after this many batches (0: the whole epoch); for smoke tests."""
    steps_per_epoch: int = 0
    """Batches per epoch: 0, one pass of the sampler; N, exactly N batches, the sampler
    starting a new pass (a new shuffle) as often as needed. AlignedReID (arXiv 1711.08184v2,
    Sec. 4.2): "Each epoch includes 2000 mini-batches", which its decays at epochs 80 and
    160 assume."""

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "checkpoint_every",
            "threads",
            "max_steps_per_epoch",
            "steps_per_epoch",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_consistency(self)


def _one_of(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not one of {list(valid)}")


def _check_consistency(cfg: TrainConfig) -> None:
    """Cross-section rules; ValueError naming the keys that disagree."""
    loss, model, data = cfg.loss, cfg.model, cfg.data
    if loss.attributes != model.use_attributes:
        raise ValueError(
            f"loss.attributes={loss.attributes} but model.use_attributes={model.use_attributes}: "
            "set both (attribute heads and their loss go together)"
        )
    if loss.attributes and not data.attributes:
        raise ValueError("loss.attributes=true needs data.attributes (an APR .mat file)")
    peer = cfg.peer_model
    if peer is not None and not loss.mutual:
        raise ValueError("peer_model is set but loss.mutual=false (it is the mutual peer)")
    if peer is not None and (peer.use_local, peer.use_attributes) != (
        model.use_local,
        model.use_attributes,
    ):
        raise ValueError(
            "peer_model.use_local/use_attributes must equal model's (both models train with "
            "the same losses)"
        )
    if cfg.eval.local_distance and not model.use_local:
        raise ValueError("eval.local_distance=true needs model.use_local=true")
    if loss.local_triplet_weight > 0 and not model.use_local:
        raise ValueError("loss.local_triplet_weight > 0 needs model.use_local=true")
    if loss.uses_triplet and data.sampler != "pk":
        raise ValueError("triplet losses need P×K batches: set data.sampler=pk")
    if loss.mutual and loss.id_weight == 0:
        raise ValueError("loss.mutual needs identity logits: set loss.id_weight > 0")
    if loss.id_weight == 0 and not loss.attributes and not loss.uses_triplet:
        raise ValueError(
            "every loss term is off: set loss.id_weight, loss.attributes or a triplet weight"
        )


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate.

    Raises :class:`~training.configtools.ConfigError` naming the file, key or value at fault.
    """
    try:
        return load_config(TrainConfig, path, overrides)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None
