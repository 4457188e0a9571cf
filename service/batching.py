"""Dynamic micro-batching: the images of concurrent requests share one model run.

Request threads preprocess their own images (in parallel), then hand the tensor to the
:class:`MicroBatcher` and wait. Its one worker thread takes the oldest request, gathers
whatever else arrives until the batch holds ``max_batch`` images or the oldest request has
waited ``max_wait_s``, runs the model once, and hands each request its rows. Throughput then
grows with concurrency instead of every request paying for a batch of one.

The queue is bounded (``max_queued_images``): past it :class:`Overloaded` is raised at
once, which the API answers with 429 and Retry-After, so latency cannot grow without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from reidcore.preprocess import PreprocessConfig, preprocess_batch
from service.errors import Overloaded
from service.runtime import Inference

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    """One caller's images waiting for the model."""

    batch: np.ndarray
    """[n, 3, H, W] float32."""
    enqueued: float
    future: Future[Inference] = field(default_factory=Future)


def slice_inference(out: Inference, start: int, stop: int) -> Inference:
    """Rows ``start:stop`` of a batch's answer."""
    return Inference(
        out.embeddings[start:stop],
        {k: v[start:stop] for k, v in out.attributes.items()},
        None if out.local is None else out.local[start:stop],
    )


class MicroBatcher:
    """Gathers concurrent requests into batches for ``run_batch``; thread-safe."""

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], Inference],
        max_batch: int,
        max_wait_s: float,
        max_queued_images: int,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued_images = max_queued_images
        self._queue: deque[_Request] = deque()
        self._queued_images = 0
        self._incoming = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_images(self) -> int:
        """Images waiting for the model now."""
        return self._queued_images

    def expect(self) -> None:
        """A caller is preprocessing a request it will :meth:`submit`: worth waiting for.

        Without announced callers a lone request runs at once instead of waiting
        ``max_wait_s`` for company that is not coming.
        """
        with self._cond:
            self._incoming += 1

    def withdraw(self) -> None:
        """An announced caller will not submit after all (its preprocessing failed)."""
        with self._cond:
            self._incoming -= 1
            self._cond.notify()

    def submit(self, batch: np.ndarray, expected: bool = False) -> Future[Inference]:
        """Queue a preprocessed batch; raises :class:`Overloaded` when the queue is full.

        ``expected``: the caller announced itself with :meth:`expect` first.
        """
        req = _Request(batch, time.perf_counter())
        with self._cond:
            if expected:
                self._incoming -= 1
            if self._closed:
                raise Overloaded("the service is shutting down")
            n = len(batch)
            if self._queued_images + n > self.max_queued_images and self._queue:
                raise Overloaded(
                    f"{self._queued_images} images are waiting for the model "
                    f"(limit {self.max_queued_images}); retry later"
                )
            self._queue.append(req)
            self._queued_images += n
            self._cond.notify()
        return req.future

    def run(self, batch: np.ndarray, expected: bool = False) -> Inference:
        """Submit and wait for the answer."""
        return self.submit(batch, expected).result()

    def close(self) -> None:
        """Stop the worker after the queued requests are answered."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _take(self) -> list[_Request] | None:
        """The next batch of requests (None once closed and drained)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            taken = [self._queue.popleft()]
            size = len(taken[0].batch)
            deadline = taken[0].enqueued + self.max_wait_s
            while size < self.max_batch:
                if self._queue:
                    if size + len(self._queue[0].batch) > self.max_batch:
                        break
                    taken.append(self._queue.popleft())
                    size += len(taken[-1].batch)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closed or self._incoming == 0:
                    break  # waited long enough, or nobody else is on the way
                self._cond.wait(left)
            self._queued_images -= size
        return taken

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            batch = taken[0].batch if len(taken) == 1 else np.concatenate([r.batch for r in taken])
            try:
                out = self.run_batch(batch)
            except BaseException as exc:  # every waiting request gets the error
                for r in taken:
                    r.future.set_exception(exc)
                continue
            start = 0
            for r in taken:
                stop = start + len(r.batch)
                r.future.set_result(slice_inference(out, start, stop))
                start = stop


class InferenceEngine:
    """Decoded images -> model answers, through the micro-batcher or directly."""

    def __init__(
        self,
        preprocess: PreprocessConfig,
        run_batch: Callable[[np.ndarray], Inference],
        batcher: MicroBatcher | None,
    ) -> None:
        self.preprocess = preprocess
        self._run_batch = run_batch
        self.batcher = batcher

    def infer(self, images: Sequence[Image.Image]) -> Inference:
        """Preprocess here (in the caller's thread), then one (shared) model run."""
        if self.batcher is None:
            return self._run_batch(preprocess_batch(images, self.preprocess))
        self.batcher.expect()
        try:
            batch = preprocess_batch(images, self.preprocess)  # [N, 3, H, W]
        except BaseException:
            self.batcher.withdraw()
            raise
        return self.batcher.run(batch, expected=True)

    @property
    def queued_images(self) -> int:
        return 0 if self.batcher is None else self.batcher.queued_images

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
