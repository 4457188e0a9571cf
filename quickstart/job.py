"""The main job behind ``reid demo``: dataset -> train -> export -> serve -> index -> query.

Steps, each with a header, progress bars and its elapsed time:

1. dataset: the synthetic camera dataset (``training.data.synthetic``) in ``<out>/dataset``
   (reused when its parameters match), or the user's dataset given with ``--dataset`` in any
   format the training readers take (:mod:`quickstart.dataset`: messy files skipped and
   counted, a query split carved when there is none);
2. train: a small model (:data:`RECIPE` over ``training/configs/synthetic_tiny.yaml``) on its
   ``bounding_box_train`` split, evaluated by PyTorch on its query/gallery split;
3. export: the checkpoint to a parity-checked fp32 ONNX model folder in ``<out>/models``
   (steps 2-3 are skipped with ``--model DIR``);
4. serve: the REST service (:func:`service.app.create_app`) on ``host:port`` with its
   SQLite+FAISS storage in ``<out>/data`` (emptied first);
5. index: the gallery split through the jobs API (an archive) or item batches;
6. query: every query through the search endpoint, plain and re-ranked, plus full-ranking
   metrics from the stored embeddings (:mod:`quickstart.report`), and example matches.

Then the service keeps running until Ctrl-C, unless ``serve`` is off. The port is bound
before step 1, so a busy port fails at once. Training, export and service packages are
imported inside the steps: this module is the one place that ties them together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quickstart.client import ReidClient, ServiceCallError
from quickstart.dataset import DemoData, describe, read_demo_data
from quickstart.embedded import (
    DemoEngine,
    DemoError,
    GalleryImage,
    bind_port,
    index_gallery,
    start_service,
)
from quickstart.report import QueryRun, examples, run_queries
from reidcore.evaluation import EvaluationResult, format_results_table
from service.threaded import ThreadedServer

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]
"""Where user-facing text goes (the CLI passes ``print``)."""

STEPS = ("dataset", "train", "export", "serve", "index", "query")
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic_tiny.yaml"
RECIPE: tuple[str, ...] = (
    "model.use_local=false",
    "loss.local_triplet_weight=0",
    "loss.global_triplet_weight=0",
    "data.sampler=random",
    "data.batch_size=24",
    "loss.id_weight=8",
    "threads=1",
)
"""Overrides of ``synthetic_tiny.yaml`` for the demo model: APR (identity loss weighted 8 +
attribute losses) on ResNet-18 from scratch at 64x32. On the default synthetic dataset it
beat the ID+triplet and AlignedReID variants tried (those overfit the 100 training
identities). One torch thread: on a shared 2-core machine two threads ran several times
slower; ``--set threads=0`` uses every core."""
MODEL_NAME = "demo"
"""Name of the exported model folder: ``<out>/models/demo/<version>``."""


@dataclass(frozen=True)
class DemoOptions:
    """Everything ``reid demo`` can be told."""

    out: Path = Path("demo")
    """Working folder: dataset/, runs/, models/, data/ (git-ignored as /demo/)."""
    dataset: Path | None = None
    """The user's dataset root (or CSV file) in ``fmt``; None: the synthetic dataset."""
    fmt: str = "market"
    """Format of ``dataset``: market, msmt17, folders or csv (:data:`quickstart.dataset.FORMATS`)."""
    model: Path | None = None
    """Existing model folder (model.onnx + manifest.json): skips training and export."""
    host: str = "127.0.0.1"
    """Address the service binds to."""
    port: int = 8000
    """Port of the service (0: any free port)."""
    serve: bool = True
    """Keep serving after the report until Ctrl-C (False: stop after the query step)."""
    train_ids: int = 100
    """Training identities of the synthetic dataset."""
    test_ids: int = 100
    """Query/gallery identities of the synthetic dataset."""
    seed: int = 0
    """Seed of the synthetic dataset and of training."""
    epochs: int = 20
    """Training epochs."""
    train_overrides: tuple[str, ...] = ()
    """Extra ``key=value`` training-config overrides, applied last."""
    top_k: int = 100
    """Matches asked per search, capped at the gallery size. Complete lists give exact metrics,
    top-k lists lower bounds; 100 is the service's re-ranking shortlist, so the re-ranked row
    shows what a production search returns."""
    examples: int = 3
    """Example queries printed with their matches."""
    gallery: str = "demo"
    """Gallery name in the service."""
    engine: DemoEngine = DemoEngine()
    """Where the gallery lives: the local engine, Milvus Lite, or a Milvus server."""


@dataclass
class DemoResult:
    """What one run of the main job produced."""

    model_dir: Path
    """Model folder served."""
    url: str
    """Base URL of the service."""
    index: dict[str, Any]
    """Indexing report: method, added, failed, failures."""
    query: QueryRun
    """Metrics and search results."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Elapsed seconds per step."""


class Steps:
    """Prints a header per step and its elapsed time; keeps the times."""

    def __init__(self, echo: Echo, total: int = len(STEPS)) -> None:
        self.echo, self.total = echo, total
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """``with steps.step("train", "Training"):`` prints ``[2/6] Training`` and the time."""
        number = STEPS.index(name) + 1
        self.echo(f"\n=== [{number}/{self.total}] {title} ===")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.echo(f"--- {name}: {self.seconds[name]:.1f} s")

    def summary(self) -> str:
        """One line of step times and their total."""
        parts = [f"{k} {v:.0f} s" for k, v in self.seconds.items()]
        return f"time per step: {', '.join(parts)}; total {sum(self.seconds.values()):.0f} s"


# --------------------------------------------------------------------------- step 1: dataset


def synthetic_dataset(opts: DemoOptions, echo: Echo) -> Path:
    """The synthetic dataset in ``<out>/dataset``, generated unless one with the same
    parameters is there already."""
    from training.data.synthetic import META_FILE, SyntheticConfig, generate_dataset

    root = opts.out / "dataset"
    wanted = dataclasses.asdict(
        SyntheticConfig(num_train_ids=opts.train_ids, num_test_ids=opts.test_ids, seed=opts.seed)
    )
    meta = root / META_FILE
    if meta.is_file() and json.loads(meta.read_text()).get("config") == wanted:
        echo(f"reusing the synthetic dataset in {root} (same parameters)")
        return root
    echo(
        f"generating a synthetic camera dataset in {root}: {opts.train_ids} training and "
        f"{opts.test_ids} test identities, 6 cameras"
    )
    generate_dataset(
        root, opts.train_ids, opts.test_ids, seed=opts.seed, overwrite=True, progress=True
    )
    return root


def demo_data(root: Path, fmt: str, opts: DemoOptions) -> DemoData:
    """The query/gallery of ``root`` (carved when it has none); :class:`DemoError` if unusable."""
    return read_demo_data(root, fmt, opts.seed, training=opts.model is None)


# --------------------------------------------------------------------------- steps 2-3: model


def train_overrides(data: DemoData, opts: DemoOptions) -> list[str]:
    """The training config of the demo model on ``data``: recipe, paths, then user overrides.

    A dataset with its own query split is evaluated on it; a carved one holds the carved
    identities out of training (the trainer's validation split, same seed: the same split).
    """
    root = data.root
    attributes = root / "market_attribute.mat"
    split = (
        [f"data.val_ids={data.held_out}", f"data.val_seed={opts.seed}", "data.eval_split=val"]
        if data.carved
        else ["data.val_ids=0", "data.eval_split=test"]
    )
    out = [
        *RECIPE,
        f"data.root={root}",
        f"data.format={data.fmt}",
        *split,
        f"epochs={opts.epochs}",
        "eval.every=0",
        "eval.at_start=false",
        f"seed={opts.seed}",
        "progress=true",
        f"output_dir={opts.out / 'runs' / MODEL_NAME}",
    ]
    if attributes.is_file():
        out += [f"data.attributes={attributes}", "data.attribute_split=all"]  # test ids too
    else:
        out += ["data.attributes=", "model.use_attributes=false", "loss.attributes=false"]
    return [*out, *opts.train_overrides]


def train_model(data: DemoData, opts: DemoOptions, echo: Echo) -> Path:
    """Train the demo model on ``data``; returns its ``best.pt``."""
    from training.config import load_train_config
    from training.configtools import ConfigError
    from training.data.errors import DatasetError
    from training.trainer import train

    try:
        cfg = load_train_config(TRAIN_CONFIG, train_overrides(data, opts))
    except ConfigError as exc:
        raise DemoError(f"training config: {exc}") from None
    run_dir = Path(cfg.output_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed or appended one
    m = cfg.model
    echo(
        f"training {m.backbone} ({cfg.data.height}x{cfg.data.width}, {cfg.epochs} epochs, "
        f"attributes {'on' if m.use_attributes else 'off'}) -> {run_dir}"
    )
    try:
        result = train(cfg)
    except (ConfigError, DatasetError) as exc:
        raise DemoError(f"training on {data.root}: {exc}") from None
    last = result.history[-1] if result.history else {}
    if "rank1" in last:
        echo(
            f"PyTorch evaluation on the query/gallery split: rank-1 {100 * last['rank1']:.1f} %, "
            f"mAP {100 * last['mAP']:.1f} %"
            + (
                f", attribute accuracy {100 * last['attr_acc']:.1f} %"
                if last.get("attr_acc", math.nan) == last.get("attr_acc")  # present, not NaN
                else ""
            )
            + f"; valid queries {int(last.get('valid_queries', 0))} of {int(last.get('queries', 0))}"
        )
    return run_dir / "best.pt"


def export_model(checkpoint: Path, validation: Path | None, opts: DemoOptions, echo: Echo) -> Path:
    """Export ``checkpoint`` to ``<out>/models/demo/1`` (fp32, parity-checked on the
    ``validation`` Market root's images, else on generated crops)."""
    from export.pipeline import ExportError, ExportOptions, export_model_folder

    folder = opts.out / "models" / MODEL_NAME / "1"
    try:
        result = export_model_folder(
            ExportOptions(checkpoint=checkpoint, out=folder, validation=validation, overwrite=True)
        )
    except (ExportError, ValueError) as exc:
        raise DemoError(f"export of {checkpoint}: {exc}") from None
    echo(parity_line(result.parity))
    metrics = result.manifest.training.metrics
    if "export.mAP" in metrics:
        echo(
            f"ONNX fp32 on the query/gallery split: rank-1 {100 * metrics['export.rank1']:.1f} %,"
            f" mAP {100 * metrics['export.mAP']:.1f} %"
        )
    echo(f"model folder: {folder}")
    return folder


def parity_line(report: Any) -> str:
    """One line from :class:`export.verify.ParityReport` (the log has the full table)."""
    worst = max(o.max_abs_diff for o in report.outputs)
    cosines = [o.min_cosine for o in report.outputs if o.min_cosine is not None]
    cos = f", embedding min cosine {min(cosines):.6f}" if cosines else ""
    verdict = "all agree" if report.passed else "DISAGREE"
    return (
        f"ONNX Runtime vs PyTorch on {report.images} images: {len(report.outputs)} outputs "
        f"{verdict} (max abs diff {worst:.2g}{cos})"
    )


def check_model_folder(folder: Path) -> Path:
    """``--model`` must be a readable model folder whose model.onnx matches its manifest."""
    from service.errors import ServiceError
    from service.manifest import load_manifest

    try:
        load_manifest(folder)
    except ServiceError as exc:
        raise DemoError(f"--model {folder}: {exc}") from None
    return folder


# --------------------------------------------------------------------------- the job


def prepare_model(data: DemoData, opts: DemoOptions, steps: Steps, echo: Echo) -> Path:
    """Steps 2-3, or the ``--model`` folder."""
    if opts.model is not None:
        echo(f"\nusing the model folder {opts.model}: training and export skipped")
        return opts.model
    with steps.step("train", f"Training a small model on {data.root}"):
        checkpoint = train_model(data, opts, echo)
    validation = data.root if data.fmt == "market" and not data.carved else None
    with steps.step("export", "Exporting to ONNX (parity-checked against PyTorch)"):
        return export_model(checkpoint, validation, opts, echo)


def baseline_row(data: DemoData) -> tuple[str, EvaluationResult]:
    """The camera-centred colour-histogram baseline on the same query/gallery split."""
    from training.data.histogram_baseline import evaluate_histogram_split
    from training.data.types import Sample

    def samples(images: list[GalleryImage]) -> list[Sample]:
        return [Sample(str(i.path), i.pid, i.camid) for i in images]

    result = evaluate_histogram_split(samples(data.query), samples(data.gallery))
    return "colour-histogram baseline (no model)", result


def report(
    run: QueryRun,
    baseline: tuple[str, EvaluationResult],
    client: ReidClient,
    queries: list[GalleryImage],
    opts: DemoOptions,
    echo: Echo,
) -> None:
    """The metrics table, how it was computed, and the example matches."""
    echo(format_results_table([*run.rows, baseline]))
    echo(
        f"{len(queries)} queries, gallery of {run.gallery_size} items. 'service search' rows "
        f"score the ranked lists the search endpoint returned (k={run.k}"
        + (
            "; complete lists: exact)"
            if run.k >= run.gallery_size
            else "; top-k lists: every figure is a lower bound)"
        )
        + "; 'stored embeddings' rows rank the whole gallery from /v1/embed query vectors "
        "and the vectors the gallery stored."
    )
    shown = examples(client, queries, run, opts.examples)
    if shown:
        echo(
            "\nExample matches, re-ranked: ordered by the re-ranked distance; score is the "
            "cosine similarity of the embeddings, so it need not decrease down the list."
        )
    for text in shown:
        echo("\n" + text)


def run_demo(opts: DemoOptions, echo: Echo) -> DemoResult:
    """Run the main job (module docstring); :class:`DemoError` names what is wrong."""
    if opts.model is not None:
        check_model_folder(opts.model)
    data = None  # a bad root fails before the port is taken, and is read once
    if opts.dataset is not None:
        data = demo_data(opts.dataset, opts.fmt, opts)
    sock = bind_port(opts.host, opts.port)
    steps = Steps(echo)
    service: ThreadedServer | None = None
    client: ReidClient | None = None
    try:
        with steps.step("dataset", "Dataset"):
            if data is None:
                data = demo_data(synthetic_dataset(opts, echo), "market", opts)
            for line in describe(data):
                echo(line)
            queries, gallery_images = data.query, data.gallery
        model_dir = check_model_folder(prepare_model(data, opts, steps, echo))
        data_dir = opts.out / "data"
        with steps.step("serve", "Starting the service"):
            shutil.rmtree(data_dir, ignore_errors=True)
            if cleared := opts.engine.clear(data_dir, opts.gallery):
                echo(cleared)
            service = start_service(model_dir, data_dir, sock, opts.top_k, opts.engine)
            client = ReidClient(service.url)
            ready = client.ready()
            echo(
                f"service ready at {service.url}: model {ready['model'].get('name')}/"
                f"{ready['model'].get('version')}, providers {ready['providers']}"
            )
        with steps.step("index", f"Indexing the gallery ({len(gallery_images)} images)"):
            indexed = index_gallery(client, opts.gallery, gallery_images, opts.out)
            echo(
                f"indexed {indexed['added']} images via {indexed['method']}, "
                f"{indexed['failed']} failed"
            )
            for line in indexed["failures"][:5]:
                echo(f"  failed: {line}")
        with steps.step("query", f"Querying ({len(queries)} queries, plain and re-ranked)"):
            stored = opts.engine.open(data_dir)
            try:
                run = run_queries(
                    client, opts.gallery, data_dir, queries, gallery_images, opts.top_k, stored
                )
            finally:
                stored.close()
            report(run, baseline_row(data), client, queries, opts, echo)
        echo(f"gallery engine: {opts.engine.kind} ({describe_engine(opts.engine)})")
        echo("\n" + steps.summary())
        result = DemoResult(model_dir, service.url, indexed, run, steps.seconds)
        if opts.serve:
            serve_until_interrupted(service, opts.gallery, echo)
        return result
    except ServiceCallError as exc:
        raise DemoError(str(exc)) from None
    finally:
        if client is not None:
            client.close()
        if service is not None:
            service.stop()
        sock.close()


def describe_engine(engine: DemoEngine) -> str:
    if engine.kind == "local":
        return "FAISS + SQLite in the data folder"
    return f"Milvus server {engine.milvus_uri}" if engine.milvus_uri else "Milvus Lite in-process"


def sleep_forever() -> None:
    """Block until interrupted."""
    while True:
        time.sleep(3600)


def serve_until_interrupted(
    service: ThreadedServer, gallery: str, echo: Echo, wait: Callable[[], None] = sleep_forever
) -> None:
    """Print where the service is and block (``wait``) until Ctrl-C."""
    echo(f"\nThe service keeps running at {service.url}")
    echo(f"  web page:  {service.url}/   (gallery {gallery!r})")
    echo(f"  API docs:  {service.url}/docs")
    echo("Press Ctrl-C to stop.")
    try:
        wait()
    except KeyboardInterrupt:
        echo("\nstopping the service")
