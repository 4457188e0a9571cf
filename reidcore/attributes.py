"""The pedestrian attribute schema: data that flows from the annotation files into the
model's heads, the export manifest and the service. Nothing downstream hard-codes
attribute names; everything takes an :class:`AttributeSchema`.

Each attribute is one classifier: binary attributes have two classes (``no``, ``yes``),
grouped ones (upper-body colour, lower-body colour, age) are one multi-class attribute.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attribute:
    """One classifier head: ``name`` predicts one of ``classes``.

    ``group`` names the annotation fields it was built from when several binary
    fields were merged into one multi-class attribute (e.g. the ``up*`` colour fields);
    ``None`` for a plain binary or ordinal field.
    """

    name: str
    classes: tuple[str, ...]
    group: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("attribute name must not be empty")
        if len(self.classes) < 2:
            raise ValueError(
                f"attribute {self.name!r} needs at least 2 classes, got {self.classes}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"attribute {self.name!r} has repeated class names {self.classes}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "group": self.group}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Attribute:
        try:
            return cls(name=str(d["name"]), classes=tuple(d["classes"]), group=d.get("group"))
        except KeyError as exc:
            raise ValueError(f"attribute entry {dict(d)!r} lacks field {exc}") from None


@dataclass(frozen=True)
class AttributeSchema:
    """An ordered list of attributes; the order is the order of the model's heads."""

    attributes: tuple[Attribute, ...] = field(default_factory=tuple)
    source: str = ""

    def __post_init__(self) -> None:
        names = [a.name for a in self.attributes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"attribute schema has repeated names: {dup}")

    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.attributes)

    def __getitem__(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"no attribute {name!r}; the schema has {self.names}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def num_classes(self) -> list[int]:
        return [a.num_classes for a in self.attributes]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "attributes": [a.to_dict() for a in self.attributes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttributeSchema:
        entries: Sequence[Mapping[str, Any]] = d.get("attributes", [])
        return cls(tuple(Attribute.from_dict(e) for e in entries), source=str(d.get("source", "")))

    @classmethod
    def empty(cls) -> AttributeSchema:
        return cls(())
