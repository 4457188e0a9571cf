from __future__ import annotations

import pytest

from reidcore.attributes import Attribute, AttributeSchema


def test_schema_roundtrip() -> None:
    schema = AttributeSchema(
        (
            Attribute("hat", ("no", "yes")),
            Attribute("upcolor", ("black", "white", "red"), group="up"),
        ),
        source="test",
    )
    again = AttributeSchema.from_dict(schema.to_dict())
    assert again == schema
    assert again.num_classes == [2, 3]
    assert again["hat"].is_binary and not again["upcolor"].is_binary


def test_schema_errors() -> None:
    with pytest.raises(ValueError, match="repeated names"):
        AttributeSchema((Attribute("a", ("no", "yes")), Attribute("a", ("no", "yes"))))
    with pytest.raises(ValueError, match="at least 2"):
        Attribute("a", ("only",))
    with pytest.raises(KeyError, match="no attribute"):
        AttributeSchema.empty()["missing"]
