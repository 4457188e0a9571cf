"""The gallery storage seam: what a storage engine must do, and nothing above it.

A :class:`GalleryStore` holds one gallery's items and embeddings and answers filtered top-k
searches; a :class:`GalleryBackend` opens, creates, lists and drops the stores of one engine.
Search filtering by score, re-ranking and everything the API does with matches are written
once above this seam (:class:`service.gallery.gallery.Gallery`) and tested against every
implementation: ``local`` (FAISS + SQLite, :mod:`service.gallery.store`) and ``milvus``
(:mod:`service.gallery.milvus_store`). :func:`service.gallery.factory.open_backend` picks one.

Every store records the model (manifest sha256) and embedding dimension it was built with;
opening it for another model raises :class:`ModelMismatch` (:func:`check_model`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from service.errors import ModelMismatch
from service.gallery.types import AddResult, GalleryStats, Hits, Item, NewItem, SearchFilter


class GalleryMissing(LookupError):
    """The engine holds no gallery of this name (or it is still being created)."""


class GalleryStore(abc.ABC):
    """One gallery in one engine; thread-safe. Writes are durable when they return."""

    name: str
    dim: int
    model_id: str
    keeps_crops: bool = True
    """Whether items can name a stored crop (False: a Milvus collection from before crops)."""
    keeps_local: bool = True
    """Whether items' local features are stored (False: a Milvus collection from before them)."""

    @abc.abstractmethod
    def add(self, items: Sequence[NewItem], embeddings: np.ndarray) -> list[AddResult]:
        """Store items with their unit embeddings [M, dim]; searchable when this returns.

        Items whose external id already exists are not written again (idempotent add).
        """

    @abc.abstractmethod
    def find_external(self, external_ids: Sequence[str]) -> dict[str, int]:
        """External id -> item id for those that already exist."""

    @abc.abstractmethod
    def delete(self, item_id: int) -> None:
        """Delete one item durably; raises :class:`service.errors.ItemNotFound`."""

    @abc.abstractmethod
    def fetch(self, item_ids: Sequence[int]) -> dict[int, Item]:
        """The items of these ids that exist."""

    @abc.abstractmethod
    def vectors(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found int64 [m], their embeddings float32 [m, dim]), in the order asked."""

    def local_features(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Item id -> its stored local features, flat float32 [H * c], for the items of these
        ids stored with some (items stored without, or engines keeping none, are absent)."""
        return {}

    @abc.abstractmethod
    def item_ids(self) -> np.ndarray:
        """Every item id, ascending (int64)."""

    def live_ids(self) -> np.ndarray:
        """Every item id, ascending (int64), as searches see them now; engines that hold them
        in memory answer from there (the attribute columns check it on every search)."""
        return self.item_ids()

    def ids_after(self, after: int) -> np.ndarray:
        """Ids above ``after``, ascending: the items added since an id was the largest, where
        an engine can list them without listing every id (ids are never reused)."""
        ids = self.live_ids()
        return ids[ids > after]

    @abc.abstractmethod
    def search(
        self, queries: np.ndarray, k: int, filt: SearchFilter, with_vectors: bool = False
    ) -> list[Hits]:
        """Top-``k`` items by inner product for each row of ``queries`` [Q, dim], restricted
        by the filter's cameras and time range (not its ``min_score``: applied above); with
        ``with_vectors``, each hit's embedding too (re-ranking needs them)."""

    @abc.abstractmethod
    def stats(self) -> GalleryStats:
        """Size, cameras, time range and provenance."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of items."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the store holds (connections, memory)."""

    def exact_rerank(
        self, query: np.ndarray, k: int, shortlist: int, params: tuple[int, int, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(item ids, scores, re-ranked distances) of the full k-reciprocal algorithm on
        query + whole gallery, when the engine keeps what that needs; None otherwise (the
        gallery then re-ranks the query's neighbourhood fetched by a batched search)."""
        return None


class GalleryBackend(abc.ABC):
    """The galleries of one engine (a data directory, a Milvus database)."""

    kind: str
    """``local`` or ``milvus``."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every gallery the engine holds, sorted."""

    @abc.abstractmethod
    def open(self, name: str, model_id: str, dim: int, create: bool = False) -> GalleryStore:
        """Open (or with ``create``, create) gallery ``name`` for this model.

        Raises :class:`GalleryMissing` when it does not exist and ``create`` is false, and
        :class:`ModelMismatch` when it was built with another model or dimension.
        """

    @abc.abstractmethod
    def recorded_model(self, name: str) -> tuple[str, int]:
        """(model id, dim) gallery ``name`` was built with; :class:`GalleryMissing` if none."""

    @abc.abstractmethod
    def drop(self, name: str) -> None:
        """Delete gallery ``name`` and everything stored for it (nothing when absent)."""

    @abc.abstractmethod
    def replace(self, source: str, name: str) -> None:
        """Make gallery ``source`` the gallery ``name``, whose old content is dropped (both
        closed in this process; a re-index's finished new version replacing the old)."""

    def gpus(self) -> int:
        """GPUs this engine uses inside the service process."""
        return 0

    def close(self) -> None:  # noqa: B027 - most engines hold nothing to release
        """Release the engine's connections."""


def check_model(
    name: str, where: str, recorded: tuple[str | None, int | None], model_id: str, dim: int
) -> None:
    """Refuse a gallery whose recorded (model id, dim) is not this model's."""
    rec_model, rec_dim = recorded
    if rec_model != model_id or rec_dim != dim:
        raise ModelMismatch(
            f"gallery {name!r} ({where}) was built with model {(rec_model or '?')[:12]} "
            f"(dim {'?' if rec_dim is None else rec_dim}), but the service runs model "
            f"{model_id[:12]} (dim {dim}); "
            "re-index it with this model or serve the model it was built with"
        )
