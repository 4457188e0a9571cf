"""APR's attribute-recognition protocol (Lin et al., arXiv 1703.07220v1, Sec. 5.1, Tables 3/4).

The paper scores the **gallery** images of the test set (the caller passes only those; junk
and distractors have no labels) and reports one column per non-colour attribute plus one
column per colour family, "C.up" and "C.low", and their mean. How a colour family is scored
(this module's reading of the paper, the one its Table columns need):

* with binary colour attributes (APR's schema, ``group`` = ``upcolor``/``downcolor``): the
  predicted colour is the family member with the highest "yes" score; the image is right when
  that colour is marked for its identity. An identity with **no colour marked** can never be
  right, so it **counts as wrong** (it is not dropped);
* with a grouped multi-class colour attribute (this project's ``grouped`` variant, ``group``
  = ``up``/``down``): right when the predicted class is the marked one; an unknown target
  (no colour, or several) counts as wrong.

Other attributes are scored on their known labels (``-1`` excluded), as in
:func:`reidcore.evaluation.attribute_accuracy`.
"""

from __future__ import annotations

import numpy as np

from reidcore.attributes import AttributeSchema
from reidcore.evaluation import AttributeAccuracy

FAMILY_COLUMNS = {"upcolor": "C.up", "up": "C.up", "downcolor": "C.low", "down": "C.low"}
"""Colour family (an attribute's ``group``) -> the paper's column name."""


def apr_attribute_accuracy(
    predictions: np.ndarray,
    yes_scores: np.ndarray,
    targets: np.ndarray,
    schema: AttributeSchema,
) -> AttributeAccuracy:
    """APR Tables 3/4 on ``N`` (gallery) images: ``predictions`` int ``[N, M]`` (arg-max
    class of each head), ``yes_scores`` float ``[N, M]`` (probability of class 1 for binary
    heads, anything for the others), ``targets`` int ``[N, M]`` (``-1`` unknown)."""
    pred, score, tgt = np.asarray(predictions), np.asarray(yes_scores), np.asarray(targets)
    m = len(schema)
    if not (pred.shape == score.shape == tgt.shape) or pred.ndim != 2 or pred.shape[1] != m:
        raise ValueError(
            f"predictions {pred.shape}, yes_scores {score.shape} and targets {tgt.shape} must "
            f"all be [N, {m}] for the {m} attributes of the schema"
        )
    names: list[str] = []
    acc: list[float] = []
    known: list[int] = []
    families: dict[str, list[int]] = {}
    for col, attr in enumerate(schema):
        if attr.group in FAMILY_COLUMNS:
            families.setdefault(FAMILY_COLUMNS[attr.group], []).append(col)
            continue
        ok = tgt[:, col] != -1
        names.append(attr.name)
        known.append(int(ok.sum()))
        acc.append(float((pred[ok, col] == tgt[ok, col]).mean()) if ok.any() else np.nan)
    for column, cols in families.items():
        right = _family_right(pred[:, cols], score[:, cols], tgt[:, cols])
        names.append(column)
        known.append(int(tgt.shape[0]))
        acc.append(float(right.mean()) if right.size else np.nan)
    arr = np.asarray(acc, dtype=np.float64)
    has = ~np.isnan(arr)
    mean = float(arr[has].mean()) if has.any() else float("nan")
    return AttributeAccuracy(names=names, accuracy=arr, num_known=np.asarray(known), mean=mean)


def _family_right(pred: np.ndarray, score: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """``[N]`` bool: is the family's colour right (no marked colour: wrong)?"""
    if tgt.shape[1] == 1:  # one grouped multi-class attribute
        return (tgt[:, 0] != -1) & (pred[:, 0] == tgt[:, 0])
    chosen = np.argmax(score, axis=1)  # the member with the highest "yes" score
    return tgt[np.arange(tgt.shape[0]), chosen] == 1


__all__ = ["FAMILY_COLUMNS", "apr_attribute_accuracy"]
