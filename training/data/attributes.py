"""Identity-level attribute annotations in the format the APR authors released them.

``market_attribute.mat`` / ``duke_attribute.mat`` hold one struct (``market_attribute``)
with one sub-struct per split (``train``, ``test``); each has one ``1 x N`` field per
annotation plus ``image_index`` (the identity, e.g. ``'0002'``). Field order differs
between the splits, so everything is matched by name.

Two schemas (``colours=``):

* ``binary`` (the default, APR's formulation, arXiv 1703.07220v1 Sec. 3: "the color
  attributes are binary ones"): every field is its own attribute, Market 27 / Duke 23;
  each colour field ``up<colour>``/``down<colour>`` is a binary no/yes attribute whose
  ``group`` names its family (``upcolor``/``downcolor``, reported as one column "C.up" /
  "C.low" by :func:`reidcore.attribute_protocol.apr_attribute_accuracy`). An identity with
  no colour or several colours marked keeps a label on every colour field.
* ``grouped`` (a variant of this project, not the paper's): upper and lower colour become
  one multi-class attribute each, Market 12 / Duke 10 attributes, as described next.

Conversion (both schemas, colours aside):

* binary fields, coded 1 = first class / 2 = second class, become classes 0 / 1
  (``gender``: male/female, ``hat``: no/yes...; see :data:`BINARY_CLASSES`);
* ``age`` (Market, 1..4) becomes one 4-class attribute (young, teenager, adult, old);
* the colour fields ``up<colour>`` and ``down<colour>`` become one multi-class attribute
  each, ``upcolor`` and ``downcolor``, with the colours as classes (in the order of the
  reference split's fields);
* 0 (Duke's ``top`` has two) becomes -1 = unknown, ignored by the loss.

Colours on the real files: Market marks exactly one upper colour for 673 of 751 train
identities and none for 78 (test: 681 one, 69 none); lower 721 one / 30 none (test 706 / 44).
Duke train: one colour for all but one identity's upper colour; Duke test marks no upper
colour for 14 identities, and 0 / 2 / 3 lower colours for 11 / 22 / 1. **An identity with no
colour or several colours marked gets -1 (unknown) for that attribute**: no single class
is right, and masking is safer than inventing an "other" class the annotators never used.

Resulting grouped schemas: Market 27 fields -> 12 attributes (the 12 columns of APR's
Table 3), Duke 23 fields -> 10.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from reidcore.attributes import Attribute, AttributeSchema
from training.data.errors import DatasetError, first_few
from training.data.types import Sample

logger = logging.getLogger(__name__)

UNKNOWN = -1
"""Label of an attribute whose value is not annotated (or ambiguous); losses ignore it."""

IDENTITY_FIELD = "image_index"
"""The field of each split struct that holds the identities."""

COLOUR_GROUPS = {"up": "upcolor", "down": "downcolor"}
"""Field-name prefix -> name of the multi-class colour attribute built from ``<prefix><colour>``."""

COLOUR_MODES = ("binary", "grouped")
"""``binary``: one no/yes attribute per colour field (APR's); ``grouped``: one multi-class
attribute per colour family (this project's variant)."""

CATEGORICAL_CLASSES: dict[str, tuple[str, ...]] = {
    "age": ("young", "teenager", "adult", "old"),  # the paper: child, teenager, adult, old
}
"""Fields coded 1..K with their class names (value k -> class k-1)."""

DEFAULT_BINARY = ("no", "yes")
"""Class names of a binary field that :data:`BINARY_CLASSES` does not list."""

BINARY_CLASSES: dict[str, tuple[str, str]] = {
    "gender": ("male", "female"),
    "hair": ("short", "long"),
    "up": ("long sleeve", "short sleeve"),
    "down": ("long", "short"),
    "clothes": ("dress", "pants"),
    "top": ("short", "long"),
    "shoes": ("dark", "light"),
    **{f: DEFAULT_BINARY for f in ("hat", "backpack", "bag", "handbag", "boots")},
}
"""The APR files' binary fields (coded 1/2) and their class names. A listed field is always
binary (a value 3 is an error); an unlisted field is binary (no/yes) when its values stay
within 0..2 and categorical with classes ``'1'..'K'`` otherwise."""


@dataclass
class AttributeTable:
    """Identity-level attribute labels under one schema."""

    schema: AttributeSchema
    """The attributes, in the order of the label columns and the model's heads."""
    labels: dict[int, np.ndarray]
    """Identity -> int64 array [M] (M = ``len(schema)``), class index or -1 = unknown."""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def identities(self) -> list[int]:
        """The annotated identities, sorted."""
        return sorted(self.labels)

    def unknown_counts(self) -> dict[str, int]:
        """Attribute name -> number of identities with an unknown (-1) value."""
        if not self.labels:
            return {n: 0 for n in self.schema.names}
        mat = np.stack(list(self.labels.values()))
        return {n: int(c) for n, c in zip(self.schema.names, (mat == UNKNOWN).sum(0), strict=True)}


def colour_group(field: str) -> tuple[str, str] | None:
    """``'upblack'`` -> ``('upcolor', 'black')``; None for fields that are not colours."""
    for prefix, attr in COLOUR_GROUPS.items():
        if field.startswith(prefix) and len(field) > len(prefix):
            return attr, field[len(prefix) :]
    return None


@dataclass(frozen=True)
class _Column:
    """How one attribute is computed from the annotation fields."""

    attribute: Attribute
    fields: tuple[str, ...]
    """One field for binary/categorical attributes, the member fields for a colour group."""


def _plain_attribute(field: str, max_value: int) -> Attribute:
    """The attribute of a non-colour field, given the largest value it takes anywhere."""
    if field in CATEGORICAL_CLASSES:
        return Attribute(field, CATEGORICAL_CLASSES[field])
    if field in BINARY_CLASSES:
        return Attribute(field, BINARY_CLASSES[field])
    if max_value <= 2:
        return Attribute(field, DEFAULT_BINARY)
    return Attribute(field, tuple(str(k) for k in range(1, max_value + 1)))


def build_columns(
    field_order: Sequence[str], max_values: Mapping[str, int], colours: str = "binary"
) -> list[_Column]:
    """The schema's columns: one per plain field; colours as ``colours`` says (one binary
    attribute per field, or one per colour group placed at its first member)."""
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES}, got {colours!r}")
    if colours == "binary":
        return [_binary_column(f, max_values[f]) for f in field_order]
    members: dict[str, list[tuple[str, str]]] = {}  # group attribute -> [(field, colour)]
    for field in field_order:
        group = colour_group(field)
        if group is not None:
            members.setdefault(group[0], []).append((field, group[1]))
    columns: list[_Column] = []
    for field in field_order:
        group = colour_group(field)
        if group is None:
            columns.append(_Column(_plain_attribute(field, max_values[field]), (field,)))
        elif members[group[0]][0][0] == field:
            member_fields, names = zip(*members[group[0]], strict=True)
            prefix = field[: len(field) - len(group[1])]
            attribute = Attribute(group[0], tuple(names), group=prefix)
            columns.append(_Column(attribute, tuple(member_fields)))
    return columns


def _binary_column(field: str, max_value: int) -> _Column:
    """APR's column of one field: colour fields are binary, tagged with their family."""
    group = colour_group(field)
    if group is None:
        return _Column(_plain_attribute(field, max_value), (field,))
    return _Column(Attribute(field, DEFAULT_BINARY, group=group[0]), (field,))


def _binary_labels(values: np.ndarray) -> np.ndarray:
    """1 -> 0, 2 -> 1, 0 -> unknown."""
    return np.where(values == 0, UNKNOWN, values - 1).astype(np.int64)


def _colour_labels(members: np.ndarray) -> np.ndarray:
    """[N, C] member fields (2 = marked) -> the marked colour's index, -1 unless exactly one."""
    marked = members == 2
    idx = np.argmax(marked, axis=1).astype(np.int64)
    return np.where(marked.sum(1) == 1, idx, UNKNOWN)


def column_labels(col: _Column, fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """int64 [N] labels of one attribute from one split's raw fields."""
    if col.attribute.group is not None and len(col.fields) > 1:
        return _colour_labels(np.stack([fields[f] for f in col.fields], axis=1))
    values = fields[col.fields[0]]
    if col.attribute.is_binary:
        return _binary_labels(values)
    return np.where(values == 0, UNKNOWN, values - 1).astype(np.int64)


def _identity(value: Any, where: str) -> int:
    """An ``image_index`` entry ('0002', 2, array(['0002'])) -> 2."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise DatasetError(f"{where}: identity entry {value!r} is not a single value")
        value = value.reshape(-1)[0]
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetError(f"{where}: identity {value!r} is not an integer") from None


def _read_split(struct: Any, where: str) -> tuple[list[str], list[int], dict[str, np.ndarray]]:
    """(field order, identities, field -> int64 [N]) of one split struct."""
    names = list(getattr(struct, "_fieldnames", []))
    if IDENTITY_FIELD not in names:
        raise DatasetError(f"{where} has no {IDENTITY_FIELD!r} field (fields: {names})")
    raw_ids = np.atleast_1d(np.asarray(getattr(struct, IDENTITY_FIELD), dtype=object))
    ids = [_identity(v, where) for v in raw_ids]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{where}: repeated identities in {IDENTITY_FIELD}")
    fields: dict[str, np.ndarray] = {}
    for name in names:
        if name == IDENTITY_FIELD:
            continue
        arr = np.atleast_1d(np.asarray(getattr(struct, name))).reshape(-1)
        if arr.shape[0] != len(ids):
            raise DatasetError(
                f"{where}.{name} has {arr.shape[0]} values for {len(ids)} identities"
            )
        fields[name] = arr.astype(np.int64)
    return [n for n in names if n != IDENTITY_FIELD], ids, fields


def _check_values(field: str, values: np.ndarray, col: _Column, where: str) -> None:
    """Raise unless ``values`` fit the attribute's coding (0 = unknown, 1..K)."""
    top = 2 if col.attribute.group is not None else col.attribute.num_classes  # colours: 1/2
    bad = sorted({int(v) for v in values if v < 0 or v > top})
    if bad:
        raise DatasetError(f"{where}.{field} has values {bad}; expected 0 (unknown) or 1..{top}")


def read_attribute_mat(path: Path | str) -> dict[str, Any]:
    """Split name -> split struct of an APR attribute file (one top-level struct)."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DatasetError(f"cannot read attribute file {path}: {exc}") from None
    keys = [k for k in mat if not k.startswith("__")]
    if len(keys) != 1:
        raise DatasetError(f"{path}: expected one top-level struct, found {keys}")
    top = mat[keys[0]]
    splits = list(getattr(top, "_fieldnames", []))
    if not splits:
        raise DatasetError(f"{path}: {keys[0]!r} is not a struct of splits (train, test)")
    return {s: getattr(top, s) for s in splits}


def load_attribute_tables(path: Path | str, colours: str = "binary") -> dict[str, AttributeTable]:
    """Every split of an APR attribute file as an :class:`AttributeTable`, one shared schema
    (``colours``: see :data:`COLOUR_MODES`).

    The schema's order follows the ``train`` split's fields (the first split without one);
    every split must have the same set of fields.
    """
    path = Path(path)
    structs = read_attribute_mat(path)
    ref = "train" if "train" in structs else next(iter(structs))
    parsed = {s: _read_split(st, f"{path.name}:{s}") for s, st in structs.items()}
    order = parsed[ref][0]
    for s, (names, _, _) in parsed.items():
        if set(names) != set(order):
            diff = sorted(set(names) ^ set(order))
            raise DatasetError(f"{path}: split {s!r} and {ref!r} differ in fields {diff}")
    max_values = {f: max(int(p[2][f].max(initial=0)) for p in parsed.values()) for f in order}
    try:
        columns = build_columns(order, max_values, colours)
    except ValueError as exc:  # e.g. a colour group with a single colour field
        raise DatasetError(f"{path}: cannot build the attribute schema: {exc}") from None
    schema = AttributeSchema(tuple(c.attribute for c in columns), source=path.name)
    return {s: _make_table(schema, columns, parsed[s], f"{path.name}:{s}") for s in parsed}


def _make_table(
    schema: AttributeSchema,
    columns: Sequence[_Column],
    split: tuple[list[str], list[int], dict[str, np.ndarray]],
    where: str,
) -> AttributeTable:
    """The table of one parsed split."""
    _, ids, fields = split
    for col in columns:
        for f in col.fields:
            _check_values(f, fields[f], col, where)
    mat = np.stack([column_labels(c, fields) for c in columns], axis=1)  # [N, M]
    table = AttributeTable(schema, {pid: mat[i].copy() for i, pid in enumerate(ids)})
    unknown = {k: v for k, v in table.unknown_counts().items() if v}
    logger.info(
        "%s: %d identities, %d attributes, unknown: %s", where, len(ids), len(schema), unknown
    )
    return table


def load_attributes(
    path: Path | str, split: str = "train", colours: str = "binary"
) -> AttributeTable:
    """One split (``'train'``, ``'test'``...) of an APR attribute file, or ``'all'`` merged.

    Merging refuses an identity annotated differently in two splits.
    """
    tables = load_attribute_tables(path, colours)
    if split != "all":
        if split not in tables:
            raise DatasetError(f"{path} has no split {split!r}; it has {sorted(tables)} (or 'all')")
        return tables[split]
    merged: dict[int, np.ndarray] = {}
    for name, t in tables.items():
        for pid, row in t.labels.items():
            if pid in merged and not np.array_equal(merged[pid], row):
                raise DatasetError(
                    f"{path}: identity {pid} annotated differently in split {name!r}"
                )
            merged[pid] = row
    return AttributeTable(next(iter(tables.values())).schema, merged)


def join_attributes(
    samples: Sequence[Sample], table: AttributeTable
) -> tuple[np.ndarray, list[int]]:
    """Per-sample labels int64 [N, M] by (original) identity, and the unannotated identities.

    Samples whose identity has no annotation keep their row, filled with -1 (unknown);
    their identities are returned sorted (junk/distractor ids included) and logged.
    """
    m = len(table.schema)
    out = np.full((len(samples), m), UNKNOWN, dtype=np.int64)
    missing: set[int] = set()
    for i, s in enumerate(samples):
        row = table.labels.get(s.pid)
        if row is None:
            missing.add(s.pid)
        else:
            out[i] = row
    if missing:
        ids = sorted(missing)
        n = sum(1 for s in samples if s.pid in missing)
        logger.warning(
            "%d identities (%d images) have no attribute annotation: %s",
            len(ids),
            n,
            first_few(ids),
        )
    return out, sorted(missing)
