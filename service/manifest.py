"""The model-folder contract: ``<models>/<name>/<version>/{model.onnx, manifest.json}``.

The export step writes the folder with :func:`write_manifest`; the service reads it with
:func:`load_manifest`, which validates every field and checks the sha256 of the model file.
The manifest says everything the service must know and nothing it must guess: the input
preprocessing (the fields of :class:`reidcore.preprocess.PreprocessConfig`), the names and
kinds of the graph's outputs, the embedding dimension, the attribute schema, the training
dataset with its measured metrics, and optional variants (e.g. an int8 model).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import CHANNEL_ORDERS, INTERPOLATIONS, PreprocessConfig
from service.errors import ManifestError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

OutputKind = Literal["embedding", "attribute", "local"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelFile(_Strict):
    """The ONNX file of the folder."""

    file: str = "model.onnx"
    """File name, relative to the model folder."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Lower-case hex sha256 of the file's bytes."""
    opset: int = Field(ge=7)
    """ONNX opset of the default domain."""
    test_time_flip: bool = False
    """Whether the graph averages each image's outputs with its mirror image's (``reid
    export --flip``): it runs the model on 2N images for a batch of N, and serves N rows."""


class InputSpec(_Strict):
    """The graph input and how an image becomes it (PreprocessConfig's fields)."""

    name: str = "images"
    """Name of the graph input, a float32 tensor [N, 3, height, width]."""
    height: int = Field(gt=0)
    """Input height in pixels."""
    width: int = Field(gt=0)
    """Input width in pixels."""
    channel_order: str = "RGB"
    """RGB or BGR."""
    mean: tuple[float, float, float]
    """Per-channel mean subtracted after scaling to [0, 1]."""
    std: tuple[float, float, float]
    """Per-channel standard deviation (positive)."""
    interpolation: str = "bilinear"
    """PIL resampling filter of the resize."""
    dynamic_batch: bool = True
    """Whether the batch dimension is dynamic; if not, the service feeds one image per run."""

    @field_validator("channel_order")
    @classmethod
    def _known_order(cls, v: str) -> str:
        if v not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order {v!r} is not one of {list(CHANNEL_ORDERS)}")
        return v

    @field_validator("interpolation")
    @classmethod
    def _known_interpolation(cls, v: str) -> str:
        if v not in INTERPOLATIONS:
            raise ValueError(f"interpolation {v!r} is not one of {sorted(INTERPOLATIONS)}")
        return v

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"std must be positive, got {v}")
        return v

    def preprocess_config(self) -> PreprocessConfig:
        """The :class:`PreprocessConfig` that feeds this input."""
        return PreprocessConfig(
            height=self.height,
            width=self.width,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            channel_order=self.channel_order,
        )

    @classmethod
    def from_preprocess(
        cls, cfg: PreprocessConfig, name: str = "images", dynamic_batch: bool = True
    ) -> InputSpec:
        """Build the input spec from the preprocessing the model was trained with."""
        return cls(name=name, dynamic_batch=dynamic_batch, **cfg.to_dict())


class EmbeddingSpec(_Strict):
    """Which output is the re-ID embedding."""

    output: str
    """Name of the output holding the embedding [N, dim]."""
    dim: int = Field(gt=0)
    """Embedding dimension."""
    l2_normalized: bool = True
    """Whether the graph already L2-normalises; if not, the service does."""


class OutputSpec(_Strict):
    """One named output of the graph."""

    name: str
    """Output name in the ONNX graph."""
    kind: OutputKind
    """embedding, attribute (one classifier head) or local (part features)."""
    shape: list[int | str]
    """Shape with symbolic names for dynamic axes, e.g. ["N", 512]."""
    attribute: str | None = None
    """For kind=attribute: the schema attribute this head predicts."""
    probabilities: bool = True
    """For kind=attribute: True if the output holds probabilities, False for logits."""

    @model_validator(mode="after")
    def _attribute_named(self) -> OutputSpec:
        if self.kind == "attribute" and not self.attribute:
            raise ValueError(f"attribute output {self.name!r} must name its schema attribute")
        if self.kind != "attribute" and self.attribute is not None:
            raise ValueError(f"output {self.name!r} of kind {self.kind} must not name an attribute")
        return self


class TrainingInfo(_Strict):
    """Where the model came from and how good it measured."""

    dataset: str = ""
    """Training dataset (and split) name."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Measured metrics, e.g. {"mAP": 0.71, "rank1": 0.86}."""
    notes: str = ""
    """Free text: recipe, commit, anything a reader needs."""


class Variant(_Strict):
    """An alternative ONNX file of the same model (e.g. int8), same inputs and outputs."""

    file: str
    """File name, relative to the model folder."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Lower-case hex sha256 of the file's bytes."""
    description: str = ""
    """What differs, e.g. "int8 static QDQ, per-channel"."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Metrics measured with this variant."""


class Manifest(_Strict):
    """Everything the service must know about a model folder."""

    format_version: int = FORMAT_VERSION
    """Version of this manifest format."""
    name: str = Field(min_length=1)
    """Model name (the folder's parent)."""
    version: str = Field(min_length=1)
    """Model version (the folder)."""
    created: dt.datetime
    """When the export ran (UTC)."""
    model: ModelFile
    """The ONNX file and its checksum."""
    input: InputSpec
    """The graph input and its preprocessing."""
    embedding: EmbeddingSpec
    """The embedding output."""
    outputs: list[OutputSpec]
    """Every output the service may read."""
    attributes: dict[str, Any] = Field(default_factory=lambda: AttributeSchema.empty().to_dict())
    """The attribute schema, as ``AttributeSchema.to_dict()`` writes it."""
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    """Training dataset and measured metrics."""
    variants: dict[str, Variant] = Field(default_factory=dict)
    """Optional alternative files by name (e.g. "int8")."""

    @field_validator("format_version")
    @classmethod
    def _supported_format(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(
                f"format_version {v} is not supported (this service reads {FORMAT_VERSION})"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        by_name = {o.name: o for o in self.outputs}
        if len(by_name) != len(self.outputs):
            raise ValueError("outputs have repeated names")
        emb = by_name.get(self.embedding.output)
        if emb is None or emb.kind != "embedding":
            raise ValueError(
                f"embedding.output {self.embedding.output!r} is not an output of kind embedding"
            )
        if isinstance(emb.shape[-1], int) and emb.shape[-1] != self.embedding.dim:
            raise ValueError(f"embedding.dim {self.embedding.dim} != output shape {emb.shape}")
        schema = self.attribute_schema  # raises ValueError when malformed
        heads = [o.attribute for o in self.outputs if o.kind == "attribute"]
        if sorted(h for h in heads if h) != sorted(schema.names):
            raise ValueError(
                f"attribute outputs {heads} do not match the schema's attributes {schema.names}"
            )
        for o in self.outputs:
            n = schema[o.attribute].num_classes if o.attribute else None
            if n is not None and isinstance(o.shape[-1], int) and o.shape[-1] != n:
                raise ValueError(f"output {o.name!r} has shape {o.shape}, expected {n} classes")
        return self

    @property
    def attribute_schema(self) -> AttributeSchema:
        """The attribute schema as an object."""
        return AttributeSchema.from_dict(self.attributes)

    @property
    def attribute_outputs(self) -> list[OutputSpec]:
        """Attribute outputs in schema order."""
        by_attr = {o.attribute: o for o in self.outputs if o.kind == "attribute"}
        return [by_attr[name] for name in self.attribute_schema.names]

    @property
    def local_output(self) -> OutputSpec | None:
        """AlignedReID's stripe features ``[N, H, c]`` (export ``--include-local``), if any."""
        return next((o for o in self.outputs if o.kind == "local"), None)

    @property
    def model_id(self) -> str:
        """Identity of the model for galleries: the sha256 of the default ONNX file."""
        return self.model.sha256


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_path(folder: Path, manifest: Manifest, variant: str | None = None) -> Path:
    """Path of the default ONNX file, or of ``variant``'s; checks the sha256."""
    if variant is None:
        file, expected = manifest.model.file, manifest.model.sha256
    elif variant in manifest.variants:
        file, expected = manifest.variants[variant].file, manifest.variants[variant].sha256
    else:
        raise ManifestError(
            f"{folder / MANIFEST_NAME}: no variant {variant!r}; it has {sorted(manifest.variants)}"
        )
    path = folder / file
    if not path.is_file():
        raise ManifestError(f"{path}: model file named by the manifest does not exist")
    actual = sha256_file(path)
    if actual != expected:
        raise ManifestError(
            f"{path}: sha256 {actual} does not match the manifest's {expected} "
            "(file changed after export, or wrong folder)"
        )
    return path


def load_manifest(folder: str | os.PathLike[str], verify: bool = True) -> Manifest:
    """Read and validate ``folder/manifest.json``; with ``verify``, check the model's sha256.

    Raises :class:`ManifestError` naming the file and the field at fault.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (is {folder} a model folder?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON ({exc})") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ManifestError(f"{path}: invalid manifest: {problems}") from None
    if verify:
        model_path(folder, manifest)
    logger.debug("loaded manifest %s %s from %s", manifest.name, manifest.version, folder)
    return manifest


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically (temp file, fsync, rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = manifest.model_dump_json(indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / MANIFEST_NAME


def utc_now() -> dt.datetime:
    """Current time in UTC, for ``Manifest.created``."""
    return dt.datetime.now(dt.timezone.utc)
