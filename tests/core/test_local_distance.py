"""Test-time aligned local distance (numpy) against the training code (torch) and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidcore.local_distance import (
    global_local_distance,
    local_distance_matrix,
    shortest_path,
)
from training.losses.local import local_distance_matrix as torch_local_distance


def test_shortest_path_by_hand() -> None:
    d = np.array([[1.0, 9.0, 1.0], [1.0, 1.0, 9.0], [9.0, 1.0, 1.0]])
    assert shortest_path(d) == pytest.approx(5.0)  # down, right, down, right
    brute = min(  # every monotone path of a 3x3 grid: choose 2 downs among 4 moves
        sum(d[i, j] for i, j in path) for path in _paths(3, 3)
    )
    assert brute == pytest.approx(5.0)


def _paths(h: int, w: int) -> list[list[tuple[int, int]]]:
    if h == 1 and w == 1:
        return [[(0, 0)]]
    out = []
    if h > 1:
        out += [p + [(h - 1, w - 1)] for p in _paths(h - 1, w)]
    if w > 1:
        out += [p + [(h - 1, w - 1)] for p in _paths(h, w - 1)]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_training_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, c = int(rng.integers(1, 9)), int(rng.integers(1, 16))
    x = rng.normal(size=(int(rng.integers(1, 7)), h, c)).astype(np.float32)
    y = rng.normal(size=(int(rng.integers(1, 9)), h, c)).astype(np.float32) * 2
    got = local_distance_matrix(x, y)
    ref = torch_local_distance(torch.from_numpy(x).double(), torch.from_numpy(y).double())
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_global_plus_local_is_the_sum_and_checks_inputs() -> None:
    rng = np.random.default_rng(9)
    q, g = rng.normal(size=(3, 4, 5)), rng.normal(size=(6, 4, 5))
    glob = rng.uniform(size=(3, 6)).astype(np.float32)
    got = global_local_distance(glob, q, g, local_weight=0.5)
    np.testing.assert_allclose(got, glob + 0.5 * local_distance_matrix(q, g), rtol=1e-6)
    with pytest.raises(ValueError, match=r"global_dist has shape \(3, 5\)"):
        global_local_distance(glob[:, :5], q, g)
    with pytest.raises(ValueError, match="stripes"):
        local_distance_matrix(q, rng.normal(size=(2, 3, 5)))
    with pytest.raises(ValueError, match=r"must be \[N, H, c\]"):
        local_distance_matrix(q[0], g)
