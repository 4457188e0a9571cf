"""`reid index`: bulk-index a folder (or a tar/zip archive) of camera crops into a gallery.

The same pipeline and storage as the service's bulk-indexing jobs: images decoded in a
thread pool, full model batches, one gallery transaction per batch, and a job row in
``<data>/jobs.sqlite3`` whose counts never run ahead of what the gallery committed. Items are
identified by the sha256 of their bytes, so an interrupted run (Ctrl-C, kill, power loss) is
finished by running the same command again: nothing is added twice.

Running it while ``reid serve`` serves the same data directory is safe (SQLite WAL
transactions, unique external ids), and the running service searches the new items at once.

Files whose names carry no camera take it from their folder (``DIR/<camera>/<file>`` works
with no options; ``--camera-level`` picks another level), and their time from ``--time``
(EXIF, a name pattern, the modification time, or unknown): :mod:`service.jobs.rules`. The
rules are recorded in the job row and printed with the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.gallery import GalleryManager
    from service.jobs.rules import NamingRules
    from service.jobs.shard import Shard
    from service.jobs.sources import Source
    from service.runtime import ModelRuntime
    from service.settings import Settings

HELP = "Bulk-index a folder (or tar/zip archive) of camera crops into a gallery."

TIME_SOURCES = ("auto", "exif", "name", "mtime", "none")
"""``--time`` choices (:data:`service.jobs.rules.TIME_SOURCES`, kept here so that
``reid --help`` does not import the service)."""

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="DIR", nargs="?", help="folder, tar or zip archive of crops"
    )
    parser.add_argument("--gallery", required=True, help="gallery name (created if missing)")
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="instead of indexing DIR, re-embed every crop the gallery keeps with the model "
        "now served, into a new version that replaces it when complete (after a model "
        "upgrade); on the local engine, stop a service using the same data directory first "
        "(or ask it: POST /v1/galleries/G/reindex)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="with --reindex: leave out the items that have no stored crop instead of refusing",
    )
    parser.add_argument("--model", default=None, help="model folder (default REID_MODEL_DIR)")
    parser.add_argument("--data", default=None, help="data directory (default REID_DATA_DIR)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per model run (default 32)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads that each decode a batch and run the model on it (default: one per core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="index only part I (0-based) of N of DIR's files, split by name: N workers on N "
        "machines index one folder into one shared (Milvus) gallery; overlaps add nothing twice",
    )
    rules = parser.add_argument_group(
        "camera and time of names with no convention (no manifest entry, not Market/Duke-style)"
    )
    rules.add_argument(
        "--camera-level",
        type=int,
        default=None,
        metavar="N",
        help="folder level naming the camera, 1 = the top folder under DIR "
        "(default: each file's own folder, as in DIR/<camera>/<file>)",
    )
    rules.add_argument(
        "--time",
        choices=TIME_SOURCES,
        default=None,
        help="where the time comes from: auto (manifest or dataset name, else unknown; the "
        "default), exif (DateTimeOriginal), name (--time-format/--time-regex), mtime, none",
    )
    rules.add_argument(
        "--time-format",
        default=None,
        metavar="STRFTIME",
        help="strftime pattern searched in file names, e.g. %%Y%%m%%d_%%H%%M%%S",
    )
    rules.add_argument(
        "--time-regex",
        default=None,
        metavar="REGEX",
        help="regex whose group 1 (or whole match) holds the time, parsed with --time-format "
        "or as epoch seconds / ISO 8601",
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from reidcore.cli import CommandError
    from service.errors import ServiceError
    from service.jobs.rules import NamingRuleError, NamingRules
    from service.settings import Settings

    overrides: dict[str, object] = {
        k: v
        for k, v in (
            ("model_dir", args.model),
            ("data_dir", args.data),
            ("index_batch_size", args.batch_size),
            ("index_workers", args.workers),
        )
        if v is not None
    }
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise CommandError(f"invalid settings (give --model and --data or REID_*): {exc}") from None
    if args.reindex:
        try:
            return _reindex(args.gallery, settings, not args.no_progress, args.allow_partial)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
    if args.source is None:
        raise CommandError("give the folder or archive to index (DIR), or --reindex")
    try:
        rules = NamingRules.create(
            args.camera_level, args.time, args.time_format, args.time_regex, settings.index_fps
        )
    except NamingRuleError as exc:
        raise CommandError(str(exc)) from None
    from service.jobs.shard import Shard

    try:
        shard = None if args.shard is None else Shard.parse(args.shard)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        return _index(Path(args.source), args.gallery, settings, not args.no_progress, rules, shard)
    except ServiceError as exc:
        raise CommandError(str(exc)) from None


def _index(
    source_path: Path,
    name: str,
    settings: object,
    progress: bool,
    rules: NamingRules,
    shard: Shard | None = None,
) -> int:
    from tqdm import tqdm

    from service.gallery import check_name
    from service.jobs import IndexProgress, JobState, JobStore, index_source, open_source
    from service.jobs.shard import ShardSource
    from service.settings import Settings

    assert isinstance(settings, Settings)
    check_name(name)
    source: Source = open_source(source_path, settings.archive_limits())
    if shard is not None:
        source = ShardSource(source, shard)
    runtime, galleries = _open(settings)
    gallery = galleries.get_or_create(name)
    store = JobStore(Path(settings.data_dir) / "jobs.sqlite3")
    job_id = store.create(
        name, str(source_path.resolve()), state=JobState.RUNNING, naming=rules.to_dict()
    )
    store.start(job_id, len(source.names))
    bar = tqdm(total=len(source.names), unit="img", disable=not progress, file=sys.stderr)

    def report(p: IndexProgress) -> None:
        store.progress(job_id, p.added, p.duplicates, p.failures, p.seconds)
        bar.update(p.added + p.duplicates + len(p.failures))

    try:
        index_source(source, gallery, runtime, settings.index_config(), report, rules=rules)
    except KeyboardInterrupt:
        store.set_state(job_id, JobState.CANCELLED, "interrupted; run the command again")
        raise
    finally:
        bar.close()
    store.set_state(job_id, JobState.SUCCEEDED)
    job = store.get(job_id)
    items = len(gallery)
    store.close()
    galleries.close()
    assert job is not None
    rate = job.images_per_second or 0.0
    print(
        f"job {job.id}: {job.added} added, {job.duplicates} already present, "
        f"{job.failed} failed, {rate:.1f} images/s; gallery {name!r} has {items} items"
    )
    print(f"camera/time rules: {describe_rules(rules)}")
    for f in job.failures[:20]:
        print(f"  failed: {f.member}: {f.reason}")
    if job.failed > 20:
        print(f"  ... and {job.failed - 20} more (GET /v1/jobs/{job.id} lists them all)")
    return 0


def _open(settings: Settings) -> tuple[ModelRuntime, GalleryManager]:
    """The model and the galleries (with their crops) of these settings."""
    from service.gallery import GalleryManager, open_backend
    from service.gallery.blobs import open_blobs
    from service.runtime import ModelRuntime

    runtime = ModelRuntime.load(settings.model_dir, settings.runtime_options())
    index = dataclasses.replace(settings.index_options(), use_gpu=False)
    config = dataclasses.replace(settings.backend_config(), index=index)
    blobs = open_blobs(settings.blob_config()) if settings.crops else None
    galleries = GalleryManager(open_backend(config), runtime.manifest.model_id, runtime.dim, blobs)
    return runtime, galleries


def _reindex(name: str, settings: Settings, progress: bool, allow_partial: bool) -> int:
    """``reid index --reindex``: the service's re-index job, run here (same job record and
    resume: running the command again after an interruption continues where it stopped)."""
    from tqdm import tqdm

    from service.gallery import check_name
    from service.jobs import IndexProgress, JobState, JobStore
    from service.jobs import reindex as rx

    check_name(name)
    runtime, galleries = _open(settings)
    rx.check_reindexable(galleries, name, allow_partial)
    store = JobStore(Path(settings.data_dir) / "jobs.sqlite3")
    job_id = store.create(name, rx.job_source(name), state=JobState.RUNNING)
    bar = tqdm(unit="item", disable=not progress, file=sys.stderr)

    def start(total: int) -> bool:
        bar.reset(total=total)
        return store.start(job_id, total)

    def report(p: IndexProgress) -> None:
        store.progress(job_id, p.added, p.duplicates, p.failures, p.seconds)
        bar.update(p.added + len(p.failures))

    try:
        rx.reindex_gallery(galleries, name, runtime, settings.index_config(), start, report)
    except KeyboardInterrupt:
        store.set_state(job_id, JobState.CANCELLED, "interrupted; run the command again")
        raise
    finally:
        bar.close()
    store.set_state(job_id, JobState.SUCCEEDED)
    job = store.get(job_id)
    store.close()
    galleries.close()
    assert job is not None
    print(
        f"job {job.id}: gallery {name!r} re-indexed with model {runtime.manifest.model_id[:12]}: "
        f"{job.added} items re-embedded, {job.failed} left out"
    )
    for f in job.failures[:20]:
        print(f"  left out: {f.member}: {f.reason}")
    return 0


def describe_rules(rules: NamingRules) -> str:
    """``camera from each file's folder, time auto`` and the like, for the run's summary."""
    camera = (
        "each file's own folder"
        if rules.camera_level is None
        else f"folder level {rules.camera_level}"
    )
    pattern = " ".join(p for p in (rules.time_format, rules.time_regex) if p)
    return f"camera (names with no convention) from {camera}; time {rules.time} {pattern}".rstrip()
