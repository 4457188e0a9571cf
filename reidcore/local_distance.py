"""AlignedReID's test-time distance: global plus aligned local distance (numpy).

Zhang et al., "AlignedReID", arXiv 1711.08184v2. Sec. 3.1 defines the local distance of two
images from their ``H`` stripe features ``[H, c]``: the stripe distances are normalised,
``d_ij = (e^{||f_i - g_j||} - 1) / (e^{||f_i - g_j||} + 1) = tanh(||f_i - g_j|| / 2)``, and
the local distance is the total of the shortest path from ``(1, 1)`` to ``(H, H)`` moving
down or right; "the global and local distance together define the similarity" (their sum).
Sec. 4.3 (last paragraph): using the local distance with the global distance at inference
adds 0.3-0.5 % rank-1 but is "time consuming"; the paper recommends the global feature
alone, so this is an option (``reid evaluate --local-distance``, ``eval.local_distance``).

The stripes are used as the model gives them (see ``ModelConfig.local_normalise``): training
(``training.losses.local``, the torch reference these functions are tested against), export
and serving compute the same distance. Memory is bounded by blocks of query rows.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 64 * 2**20


def _check_local(name: str, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} must be [N, H, c] stripe features, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def stripe_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``tanh(||x[n, i] - y[m, j]|| / 2)`` for ``x [N, H, c]``, ``y [M, W, c]``: ``[N, M, H, W]``."""
    n, h, c = x.shape
    m, w, _ = y.shape
    xf, yf = x.reshape(n * h, c), y.reshape(m * w, c)
    sq = (xf * xf).sum(1)[:, None] + (yf * yf).sum(1)[None, :] - 2.0 * (xf @ yf.T)
    euclid = np.sqrt(np.maximum(sq, 0.0)).reshape(n, h, m, w).transpose(0, 2, 1, 3)
    return np.tanh(euclid / 2.0)


def shortest_path(d: np.ndarray) -> np.ndarray:
    """Length of the shortest down/right path from ``[0, 0]`` to ``[H-1, W-1]`` of
    ``d [..., H, W]`` (the sum of the cells it visits): ``[...]``."""
    h, w = d.shape[-2:]
    row = np.cumsum(d[..., 0, :], axis=-1)  # first row: only moves right
    for i in range(1, h):
        new = np.empty_like(row)
        new[..., 0] = row[..., 0] + d[..., i, 0]
        for j in range(1, w):
            new[..., j] = d[..., i, j] + np.minimum(row[..., j], new[..., j - 1])
        row = new
    return row[..., w - 1]


def local_distance_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Aligned local distance of every ``x [N, H, c]`` to every ``y [M, H, c]``: ``[N, M]``
    float32 (in blocks of rows of ``x``)."""
    x, y = _check_local("x", x), _check_local("y", y)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x stripes {x.shape[1:]} and y stripes {y.shape[1:]} differ")
    n, h, _ = x.shape
    m = y.shape[0]
    out = np.empty((n, m), dtype=np.float32)
    block = max(1, _BLOCK_BYTES // (8 * max(m, 1) * h * h))
    for start in range(0, n, block):
        stop = min(start + block, n)
        out[start:stop] = shortest_path(stripe_distances(x[start:stop], y))
    return out


def global_local_distance(
    global_dist: np.ndarray,
    query_local: np.ndarray,
    gallery_local: np.ndarray,
    local_weight: float = 1.0,
) -> np.ndarray:
    """``global_dist + local_weight * local`` (``[Nq, Ng]`` float32): the paper's sum
    (``local_weight = 1``) of the global distance and the aligned local distance."""
    g = np.asarray(global_dist, dtype=np.float32)
    nq, ng = len(query_local), len(gallery_local)
    if g.shape != (nq, ng):
        raise ValueError(f"global_dist has shape {g.shape}, the local features give ({nq}, {ng})")
    if not np.isfinite(local_weight) or local_weight < 0:
        raise ValueError(f"local_weight must be finite and >= 0, got {local_weight}")
    return g + np.float32(local_weight) * local_distance_matrix(query_local, gallery_local)


__all__ = [
    "global_local_distance",
    "local_distance_matrix",
    "shortest_path",
    "stripe_distances",
]
