"""Micro-batching: concurrent requests share model runs, each gets exactly its own rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import Overloaded
from service.runtime import Inference
from tests.service.conftest import random_image


class FakeModel:
    """Embedding = the first pixel of each image repeated; records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> Inference:
        with self.lock:
            self.sizes.append(len(batch))
        time.sleep(self.delay)
        emb = np.repeat(batch[:, :1, 0, 0], 4, axis=1).astype(np.float32)  # [N, 4]
        return Inference(emb, {"a": emb[:, :2].copy()})


def _request(value: float, n: int) -> np.ndarray:
    return np.full((n, 3, 2, 2), value, dtype=np.float32)


def test_concurrent_requests_are_batched_and_answered_row_for_row() -> None:
    model = FakeModel(delay=0.02)
    batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05, max_queued_images=1000)
    sizes = [1, 2, 3, 1, 2, 1, 1, 3, 2, 1, 1, 1]
    try:
        with ThreadPoolExecutor(len(sizes)) as pool:
            futs = [pool.submit(batcher.run, _request(float(i), n)) for i, n in enumerate(sizes)]
            outs = [f.result(timeout=10) for f in futs]
    finally:
        batcher.close()
    for i, (n, out) in enumerate(zip(sizes, outs, strict=True)):
        assert out.embeddings.shape == (n, 4)
        assert np.all(out.embeddings == i) and np.all(out.attributes["a"] == i)
    assert sum(model.sizes) == sum(sizes)
    assert max(model.sizes) > 1  # really batched
    assert all(s <= 16 for s in model.sizes)
    assert len(model.sizes) < len(sizes)


def test_batch_never_exceeds_max_batch_unless_one_request_is_bigger() -> None:
    model = FakeModel(delay=0.01)
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05, max_queued_images=1000)
    try:
        with ThreadPoolExecutor(8) as pool:
            futs = [pool.submit(batcher.run, _request(1.0, 3)) for _ in range(8)]
            futs.append(pool.submit(batcher.run, _request(2.0, 9)))
            for f in futs:
                f.result(timeout=10)
    finally:
        batcher.close()
    assert sorted(model.sizes)[-1] == 9  # the oversized request ran alone
    assert all(s <= 4 for s in model.sizes if s != 9)


def test_lone_request_waits_at_most_max_wait() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=32, max_wait_s=0.0, max_queued_images=10)
    try:
        out = batcher.run(_request(5.0, 2))
    finally:
        batcher.close()
    assert model.sizes == [2] and np.all(out.embeddings == 5.0)


def test_full_queue_raises_overloaded() -> None:
    model = FakeModel(delay=0.3)
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0, max_queued_images=2)
    try:
        first = batcher.submit(_request(0.0, 1))
        time.sleep(0.05)  # the worker took it; the queue is empty again
        queued = [batcher.submit(_request(1.0, 1)), batcher.submit(_request(2.0, 1))]
        with pytest.raises(Overloaded, match="limit 2"):
            batcher.submit(_request(3.0, 1))
        assert batcher.queued_images == 2
        for f in [first, *queued]:
            f.result(timeout=10)
    finally:
        batcher.close()


def test_model_error_reaches_every_waiting_request() -> None:
    def broken(batch: np.ndarray) -> Inference:
        raise RuntimeError("boom")

    batcher = MicroBatcher(broken, max_batch=8, max_wait_s=0.01, max_queued_images=100)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.run(_request(0.0, 1))
    finally:
        batcher.close()


def _embed_concurrently(client: Any, seeds: list[int]) -> list[list[float]]:
    def one(s: int) -> list[float]:
        r = client.post("/v1/embed", files=[("images", (f"{s}.png", random_image(s)))])
        assert r.status_code == 200, r.text
        return list(r.json()["embeddings"][0]["embedding"])

    with ThreadPoolExecutor(len(seeds)) as pool:
        return list(pool.map(one, seeds))


@pytest.mark.parametrize("micro_batching", [True, False])
def test_runtime_sees_batches_over_http(
    make_client: Callable[..., Any], tmp_path: Path, micro_batching: bool
) -> None:
    c = make_client(tmp_path / "d", micro_batching=micro_batching, batch_max_wait_ms=100.0)
    runtime = c.app.state.runtime
    sizes: list[int] = []
    runtime.observers.append(lambda n, s: sizes.append(n))
    seeds = list(range(12))
    concurrent = _embed_concurrently(c, seeds)
    sequential = [
        c.post("/v1/embed", files=[("images", ("x.png", random_image(s)))]).json()["embeddings"][0][
            "embedding"
        ]
        for s in seeds
    ]
    np.testing.assert_allclose(concurrent, sequential, atol=1e-6)  # each got its own rows
    batched = sizes[: len(sizes) - len(seeds)]
    assert sum(batched) == len(seeds)
    if micro_batching:
        assert max(batched) > 1
    else:
        assert batched == [1] * len(seeds)


def test_announced_callers_are_waited_for_and_lone_ones_are_not() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=5.0, max_queued_images=100)
    try:
        batcher.run(_request(1.0, 1))  # nobody announced: runs at once despite max_wait 5 s
        batcher.expect()
        batcher.expect()
        first = batcher.submit(_request(2.0, 1), expected=True)
        time.sleep(0.05)
        assert not first.done()  # waits for the second announced caller
        second = batcher.submit(_request(3.0, 1), expected=True)
        assert float(first.result(5).embeddings[0, 0]) == 2.0
        assert float(second.result(5).embeddings[0, 0]) == 3.0
        batcher.expect()
        batcher.withdraw()  # preprocessing failed: nobody is waited for
        batcher.run(_request(4.0, 1))
    finally:
        batcher.close()
    assert model.sizes == [1, 2, 1]
