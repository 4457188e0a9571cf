"""service.cpu: the split matrix-vector product and the BLAS thread limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from service import cpu


@pytest.mark.parametrize("rows", [1, 7, 4096, (cpu.SPLIT_MIN_VALUES // 512) + 3, 10_001])
def test_matvec_equals_the_plain_product(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "available_cpus", lambda: 3)  # split even on a 1-core runner
    rng = np.random.default_rng(rows)
    matrix = rng.standard_normal((rows, 512), dtype=np.float32)
    vector = rng.standard_normal(512, dtype=np.float32)
    got = cpu.matvec(matrix, vector)
    assert got.dtype == np.float32 and got.shape == (rows,)
    np.testing.assert_allclose(got, matrix @ vector, rtol=1e-5, atol=1e-4)
    # against an independent float64 reference too
    np.testing.assert_allclose(got, matrix.astype(np.float64) @ vector, rtol=1e-4, atol=1e-3)


def test_matvec_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent callers share the pool; each gets its own answer."""
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((cpu.SPLIT_MIN_VALUES // 256, 256), dtype=np.float32)
    vectors = rng.standard_normal((16, 256), dtype=np.float32)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda v: cpu.matvec(matrix, v), vectors))
    for v, g in zip(vectors, got, strict=True):
        np.testing.assert_allclose(g, matrix @ v, rtol=1e-5, atol=1e-4)


def test_limit_numpy_blas_spares_faiss() -> None:
    import faiss  # noqa: F401  (loads FAISS's own BLAS, if it bundles one)

    def blas() -> dict[str, int]:
        return {
            i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
        }

    before = blas()
    if not any("faiss" not in path for path in before):
        pytest.skip("numpy here uses no BLAS library that threadpoolctl can see")
    limiter = cpu.limit_numpy_blas()
    try:
        during = blas()
        for path, threads in during.items():
            assert threads == (before[path] if "faiss" in path else 1), path
    finally:
        limiter.restore_original_limits()
    assert blas() == before
