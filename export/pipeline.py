"""``export_model_folder``: checkpoint -> verified ``<out>/{model.onnx, manifest.json}``.

Steps, all inside a hidden staging folder next to ``out`` (nothing lands in ``out`` unless
every step passed, and the manifest is moved last):

1. read the checkpoint (:mod:`export.checkpoint`) and export the ONNX graph
   (:mod:`export.onnx_export`, checked by ``onnx.checker``);
2. write the manifest, then reload the folder with the **service's** runtime
   (:class:`service.runtime.ModelRuntime`: manifest, sha256, preprocessing from the manifest)
   and compare it against PyTorch on the checkpoint's preprocessing (:mod:`export.verify`)
   on real images (``--calibration-images``, else the validation split), or on generated
   pedestrian crops when neither was given (:mod:`export.generated`; the log and the
   manifest's ``training.notes`` say which); a disagreement raises :class:`ExportError` and
   nothing is written;
3. with a validation folder: measure the fp32 file's mAP, build the requested variants and
   keep each one whose mAP stays within ``max_map_drop_points`` (:mod:`export.variants`);
4. move the files into ``out``.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from export.checkpoint import LoadedCheckpoint, load_for_export
from export.generated import generated_images
from export.onnx_export import INPUT_NAME, OnnxExportConfig, export_onnx, graph_opset
from export.validation import ValidationSet, list_images, load_images, load_validation_set
from export.variants import (
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_INT8,
    MAX_MAP_DROP_POINTS,
    Int8Config,
    Measured,
    VariantOutcome,
    make_variant,
    measure,
)
from export.verify import (
    ParityReport,
    ParityTolerance,
    compare_outputs,
    ort_outputs,
    require_parity,
    torch_outputs,
)
from reidcore.preprocess import preprocess_batch
from service.manifest import (
    MANIFEST_NAME,
    EmbeddingSpec,
    InputSpec,
    Manifest,
    ModelFile,
    OutputSpec,
    TrainingInfo,
    Variant,
    sha256_file,
    utc_now,
    write_manifest,
)
from service.runtime import ModelRuntime, RuntimeOptions

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
T = TypeVar("T")


class ExportError(RuntimeError):
    """Export refused to write the model folder; the message says why."""


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``reid export`` can be told."""

    checkpoint: Path
    """Trainer checkpoint (``reid-checkpoint/1``) or torchreid OSNet weights."""
    out: Path
    """Model folder to write, conventionally ``models/<name>/<version>``."""
    name: str = ""
    """Model name for the manifest; default: the parent folder of ``out``."""
    version: str = ""
    """Model version for the manifest; default: the last component of ``out``."""
    calibration_images: Path | None = None
    """Folder of real images for the parity check and int8 calibration. Without it and
    without ``validation`` the parity check runs on generated crops."""
    validation: Path | None = None
    """Market-1501-style folder: query/ + bounding_box_test/, or bounding_box_train/ only
    (then ``validation_ids`` identities are held out). Needed for variants."""
    validation_ids: int = 100
    """Identities carved out of a train-only validation folder."""
    validation_seed: int = 0
    """Seed of that carve-out."""
    variants: tuple[str, ...] = ()
    """Variants to try: ``optimized``, ``fp16``, ``int8``."""
    include_local: bool = False
    """Also export the ``local`` stripe features (needs a model with a local branch)."""
    flip: bool = False
    """Bake test-time flip into the graph (:mod:`export.flip`); recorded in the manifest."""
    parity_images: int = 32
    """Images compared between PyTorch and ONNX Runtime."""
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    """Images used to calibrate int8 (spread evenly over the calibration source)."""
    int8: Int8Config = DEFAULT_INT8
    """How the int8 variant is quantised."""
    max_map_drop_points: float = MAX_MAP_DROP_POINTS
    """Largest accepted mAP fall of a variant vs fp32, in percentage points."""
    onnx: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    """Opset and exporter (``include_local`` is taken from this class)."""
    tolerance: ParityTolerance = field(default_factory=ParityTolerance)
    """Parity thresholds."""
    overwrite: bool = False
    """Replace an existing model folder."""


@dataclass
class ExportResult:
    """What export wrote and measured."""

    folder: Path
    """The model folder."""
    manifest: Manifest
    """The manifest written."""
    parity: ParityReport
    """PyTorch vs ONNX Runtime (through the service runtime) on real images."""
    variants: list[VariantOutcome] = field(default_factory=list)
    """Every variant tried, kept or not."""
    parity_source: str = ""
    """Which images the parity check ran on (also in the manifest's ``training.notes``)."""


def export_model_folder(opts: ExportOptions) -> ExportResult:
    """Run the export described in the module docstring; raises :class:`ExportError`."""
    _check_destination(opts)
    loaded = load_for_export(opts.checkpoint)
    if opts.include_local and loaded.model.local_branch is None:
        raise ExportError(f"{opts.checkpoint}: --include-local but the model has no local branch")
    vs = _validation_set(opts, loaded)
    parity = _parity_images(opts, vs)
    calibration = _calibration_batch(opts, loaded, vs)
    staging = opts.out.parent / f".{opts.out.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        result = _export_in(staging, opts, loaded, vs, parity, calibration)
        _publish(staging, opts.out, opts.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.folder = opts.out
    logger.info(
        "model folder %s written (variants kept: %s)", opts.out, sorted(result.manifest.variants)
    )
    return result


def _check_destination(opts: ExportOptions) -> None:
    if (opts.out / MANIFEST_NAME).exists() and not opts.overwrite:
        raise ExportError(f"{opts.out} already holds a model (manifest.json); pass --overwrite")
    if opts.variants and opts.validation is None:
        raise ExportError(
            f"variants {list(opts.variants)} need --validation: each is kept only if its "
            f"mAP stays within {opts.max_map_drop_points} points of fp32"
        )


def _validation_set(opts: ExportOptions, loaded: LoadedCheckpoint) -> ValidationSet | None:
    if opts.validation is None:
        return None
    try:
        return load_validation_set(
            opts.validation, loaded.preprocess, opts.validation_ids, opts.validation_seed
        )
    except (OSError, ValueError) as exc:
        raise ExportError(f"validation folder {opts.validation}: {exc}") from exc


@dataclass(frozen=True)
class ParityImages:
    """The decoded images PyTorch and the service runtime are compared on."""

    images: list[Image.Image]
    """Decoded RGB images."""
    source: str
    """Where they came from, for the log and the manifest."""


def _parity_images(opts: ExportOptions, vs: ValidationSet | None) -> ParityImages:
    """``--calibration-images``, else the validation split, else generated crops.

    Parity compares two runtimes and fits nothing, so any image checks the graph and the
    manifest's preprocessing; real ones also cover the value ranges the model will see.
    """
    if opts.calibration_images is None and vs is None:
        source = (
            f"{opts.parity_images} generated pedestrian crops (no --calibration-images or "
            "--validation given)"
        )
        logger.info("parity check on %s", source)
        return ParityImages(generated_images(opts.parity_images), source)
    try:
        if opts.calibration_images is not None:
            paths = list_images(opts.calibration_images, opts.parity_images)
            where = str(opts.calibration_images)
        else:
            assert vs is not None
            paths = [Path(p) for p in vs.paths[: opts.parity_images]]
            where = f"the validation split ({vs.name})"
        return ParityImages(load_images(paths), f"{len(paths)} images of {where}")
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the real images for the parity check: {exc}") from exc


def _calibration_batch(
    opts: ExportOptions, loaded: LoadedCheckpoint, vs: ValidationSet | None
) -> np.ndarray:
    """The preprocessed int8 calibration batch: real images only (empty without int8).

    Static int8 fits activation ranges to its calibration images, so generated images are
    never used for it: see :func:`calibration_paths`.
    """
    shape = (0, 3, loaded.preprocess.height, loaded.preprocess.width)
    if "int8" not in opts.variants:
        return np.empty(shape, np.float32)
    paths = calibration_paths(opts, vs)
    try:
        batch = preprocess_batch(load_images(paths), loaded.preprocess)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the int8 calibration images: {exc}") from exc
    logger.info("int8 calibration: %d images of %s", len(paths), paths[0].parent)
    return batch


def calibration_paths(opts: ExportOptions, vs: ValidationSet | None) -> list[Path]:
    """Up to ``opts.calibration_count`` int8 calibration images, evenly spread over the source.

    The source is ``--calibration-images`` when given, else the validation folder's
    ``bounding_box_train/`` (for a carved split: the identities that were not held out).
    Images of the validation split are always left out: ranges fitted on the very images
    the mAP rule then scores would flatter the int8 model. :class:`ExportError` when no
    image remains.
    """
    if opts.calibration_images is not None:
        source = opts.calibration_images
    elif opts.validation is not None:
        source = opts.validation / "bounding_box_train"
    else:
        raise ExportError(
            "int8 calibration needs real images: pass --calibration-images DIR (and "
            "--validation DIR, which every variant needs)"
        )
    if not source.is_dir():
        raise ExportError(
            f"int8 calibration: {source} does not exist and no --calibration-images was given; "
            "pass a folder of images that are not in the validation split"
        )
    held_out = {Path(p).resolve() for p in (vs.paths if vs is not None else [])}
    pool = [p for p in list_images(source) if p.resolve() not in held_out]
    if not pool:
        raise ExportError(
            f"int8 calibration: every image of {source} is in the validation split; "
            "pass --calibration-images with other images"
        )
    return evenly_spaced(pool, opts.calibration_count)


def evenly_spaced(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    n = len(items)
    if count >= n:
        return list(items)
    return [items[i * n // count] for i in range(count)]


def _export_in(
    staging: Path,
    opts: ExportOptions,
    loaded: LoadedCheckpoint,
    vs: ValidationSet | None,
    parity: ParityImages,
    calibration: np.ndarray,
) -> ExportResult:
    """Steps 1-3 of the module docstring inside ``staging``."""
    onnx_cfg = OnnxExportConfig(opts.onnx.opset, opts.onnx.exporter, opts.include_local, opts.flip)
    model_path = staging / MODEL_FILE
    try:
        export_onnx(
            loaded.model, model_path, loaded.preprocess.height, loaded.preprocess.width, onnx_cfg
        )
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    batch = preprocess_batch(parity.images, loaded.preprocess)
    reference = torch_outputs(loaded.model, batch, opts.include_local, flip=opts.flip)
    manifest = build_manifest(opts, loaded, model_path, reference, parity.source)
    write_manifest(staging, manifest)
    report = service_parity(staging, parity.images, reference, opts.tolerance)
    try:
        require_parity(report, f"export of {opts.checkpoint}")
    except ValueError as exc:
        raise ExportError(f"{exc}\nmanifest not written to {opts.out}") from exc
    outcomes: list[VariantOutcome] = []
    if vs is not None:
        base = measure(model_path, vs)
        outcomes = [
            make_variant(
                name,
                model_path,
                staging,
                vs,
                base,
                calibration,
                opts.max_map_drop_points,
                opts.int8,
            )
            for name in opts.variants
        ]
        manifest = with_measurements(manifest, base, vs, outcomes)
        write_manifest(staging, manifest)
    return ExportResult(staging, manifest, report, outcomes, parity.source)


def service_parity(
    folder: Path,
    images: list[Image.Image],
    reference: Mapping[str, np.ndarray],
    tol: ParityTolerance,
) -> ParityReport:
    """Compare ``reference`` (PyTorch) with the service runtime loading ``folder``.

    The runtime checks the sha256, builds its preprocessing from the manifest and decodes
    nothing more (``images`` are decoded already); ``local`` is read from its session.
    """
    runtime = ModelRuntime.load(folder, RuntimeOptions(device="cpu"))
    inference = runtime.infer(images)
    candidate = {"embedding": inference.embeddings}
    candidate.update({f"attr_{k}": v for k, v in inference.attributes.items()})
    if "local" in reference:
        batch = preprocess_batch(images, runtime.preprocess)
        candidate["local"] = ort_outputs(runtime.session, batch, ["local"])["local"]
    return compare_outputs(reference, candidate, tol)


def build_manifest(
    opts: ExportOptions,
    loaded: LoadedCheckpoint,
    model_path: Path,
    reference: Mapping[str, np.ndarray],
    parity_source: str = "",
) -> Manifest:
    """The manifest of the fp32 model; output shapes from the PyTorch ``reference``."""
    outputs = []
    for name, arr in reference.items():
        shape: list[int | str] = ["N", *(int(d) for d in arr.shape[1:])]
        if name.startswith("attr_"):
            outputs.append(OutputSpec(name=name, kind="attribute", shape=shape, attribute=name[5:]))
        else:
            outputs.append(
                OutputSpec(
                    name=name, kind="embedding" if name == "embedding" else "local", shape=shape
                )
            )
    return Manifest(
        name=opts.name or opts.out.parent.name or "model",
        version=opts.version or opts.out.name,
        created=utc_now(),
        model=ModelFile(
            file=MODEL_FILE,
            sha256=sha256_file(model_path),
            opset=graph_opset(model_path),
            test_time_flip=opts.flip,
        ),
        input=InputSpec.from_preprocess(loaded.preprocess, name=INPUT_NAME, dynamic_batch=True),
        embedding=EmbeddingSpec(
            output="embedding", dim=loaded.model.embedding_dim, l2_normalized=True
        ),
        outputs=outputs,
        attributes=loaded.schema.to_dict(),
        training=TrainingInfo(
            dataset=loaded.dataset,
            metrics=loaded.metrics,
            notes=export_notes(opts, loaded, parity_source),
        ),
    )


def export_notes(opts: ExportOptions, loaded: LoadedCheckpoint, parity_source: str) -> str:
    """``training.notes``: the checkpoint, test-time flip, and what parity was checked on."""
    notes = f"exported from {opts.checkpoint.name} ({loaded.source})"
    if opts.flip:
        notes += "; test-time flip: outputs averaged with the mirror image's"
    return notes + (f"; parity checked on {parity_source}" if parity_source else "")


def with_measurements(
    manifest: Manifest, base: Measured, vs: ValidationSet, outcomes: list[VariantOutcome]
) -> Manifest:
    """``manifest`` plus the fp32 validation mAP (``export.*`` metrics) and the kept variants."""
    metrics = {**manifest.training.metrics, "export.mAP": base.mAP, "export.rank1": base.rank1}
    notes = f"{manifest.training.notes}; export.* metrics measured on {vs.name}"
    variants = {
        o.name: Variant(
            file=o.path.name,
            sha256=sha256_file(o.path),
            description=o.description,
            metrics=o.metrics,
        )
        for o in outcomes
        if o.kept
    }
    training = manifest.training.model_copy(update={"metrics": metrics, "notes": notes})
    return manifest.model_copy(update={"training": training, "variants": variants})


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the staged files into ``out``; the manifest goes last so readers never see a half folder."""
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for old in out.glob("model*.onnx"):
            old.unlink()
    files = sorted(staging.glob("model*.onnx"))
    for path in files:
        os.replace(path, out / path.name)
    os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)
