"""APR's attribute protocol (Tables 3/4) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from reidcore.attribute_protocol import apr_attribute_accuracy
from reidcore.attributes import Attribute, AttributeSchema

YN = ("no", "yes")
BINARY = AttributeSchema(
    (
        Attribute("hat", YN),
        Attribute("upred", YN, group="upcolor"),
        Attribute("upblue", YN, group="upcolor"),
        Attribute("downblack", YN, group="downcolor"),
        Attribute("downwhite", YN, group="downcolor"),
    )
)


def test_binary_colours_scored_as_one_column_per_family() -> None:
    # four gallery images; targets: hat, upred, upblue, downblack, downwhite (-1 unknown)
    targets = np.array(
        [
            [1, 1, 0, 1, 0],  # red top, black bottom
            [0, 0, 1, 0, 1],  # blue top, white bottom
            [-1, 0, 0, 1, 1],  # no top colour marked (always wrong), two bottom colours
            [0, 0, 1, 0, 0],  # blue top, no bottom colour (always wrong)
        ]
    )
    yes = np.array(
        [
            [0.9, 0.8, 0.3, 0.6, 0.2],  # red chosen: right; black: right
            [0.2, 0.7, 0.6, 0.1, 0.9],  # red chosen: wrong; white: right
            [0.5, 0.9, 0.1, 0.3, 0.4],  # no colour marked: wrong; white is marked: right
            [0.1, 0.2, 0.4, 0.7, 0.2],  # blue chosen: right; no colour marked: wrong
        ]
    )
    pred = (yes > 0.5).astype(np.int64)
    res = apr_attribute_accuracy(pred, yes, targets, BINARY)
    assert res.names == ["hat", "C.up", "C.low"]
    # hat: rows 0, 1, 3 known; predicted 1, 0, 0 -> right, right, right
    np.testing.assert_allclose(res.accuracy, [3 / 3, 2 / 4, 3 / 4])
    assert res.num_known.tolist() == [3, 4, 4]
    assert res.mean == pytest.approx((1 + 0.5 + 0.75) / 3)


def test_grouped_colour_unknown_counts_as_wrong() -> None:
    schema = AttributeSchema(
        (Attribute("gender", ("male", "female")), Attribute("upcolor", ("red", "blue"), "up"))
    )
    targets = np.array([[0, 1], [1, -1], [1, 0]])
    pred = np.array([[0, 1], [0, 1], [1, 1]])
    res = apr_attribute_accuracy(pred, np.zeros((3, 2)), targets, schema)
    assert res.names == ["gender", "C.up"]
    np.testing.assert_allclose(res.accuracy, [2 / 3, 1 / 3])


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"must all be \[N, 5\]"):
        apr_attribute_accuracy(np.zeros((2, 5)), np.zeros((2, 4)), np.zeros((2, 5)), BINARY)
