from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reidcore.attributes import AttributeSchema
from service.errors import ManifestError
from service.manifest import MANIFEST_NAME, Manifest, load_manifest, model_path, write_manifest
from tests.service.tiny_model import TINY_SCHEMA


@pytest.fixture
def folder(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder, free to damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "m"))


def _edit(folder: Path, edit) -> None:
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_roundtrip_keeps_every_field(folder: Path) -> None:
    m = load_manifest(folder)
    assert m.attribute_schema == TINY_SCHEMA
    assert m.input.preprocess_config().height == 32
    assert [o.attribute for o in m.attribute_outputs] == TINY_SCHEMA.names
    write_manifest(folder, m)
    assert load_manifest(folder) == m
    assert not list(folder.glob(".manifest-*"))  # temp file renamed away


def test_changed_model_file_is_refused(folder: Path) -> None:
    with (folder / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256 .* does not match"):
        load_manifest(folder)
    load_manifest(folder, verify=False)  # the manifest itself is fine


def test_missing_manifest_and_model(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        load_manifest(tmp_path)
    (folder / "model.onnx").unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(folder)


def test_unknown_variant_named(folder: Path) -> None:
    m = load_manifest(folder)
    with pytest.raises(ManifestError, match="no variant 'int8'"):
        model_path(folder, m, "int8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.__setitem__("format_version", 99), "format_version"),
        (lambda r: r["input"].__setitem__("interpolation", "cubic"), "interpolation"),
        (lambda r: r["input"].__setitem__("std", [1, 0, 1]), "std must be positive"),
        (lambda r: r["embedding"].__setitem__("output", "nope"), "embedding.output"),
        (lambda r: r["embedding"].__setitem__("dim", 65), "embedding.dim 65"),
        (lambda r: r["outputs"].pop(), "do not match the schema"),
        (lambda r: r["outputs"][1]["shape"].__setitem__(1, 3), "expected 2 classes"),
        (lambda r: r.__setitem__("colour", 1), "colour"),
        (lambda r: r["model"].pop("sha256"), "model.sha256"),
    ],
)
def test_invalid_manifest_names_the_field(folder: Path, edit, message: str) -> None:
    _edit(folder, edit)
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(folder)
    assert str(folder / MANIFEST_NAME) in str(info.value)


def test_not_json(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text("{broken")
    with pytest.raises(ManifestError, match="not readable JSON"):
        load_manifest(folder)


def test_empty_schema_needs_no_attribute_outputs(folder: Path) -> None:
    m = load_manifest(folder)
    raw = m.model_dump()
    raw["attributes"] = AttributeSchema.empty().to_dict()
    raw["outputs"] = [o for o in raw["outputs"] if o["kind"] == "embedding"]
    assert Manifest.model_validate(raw).attribute_outputs == []
