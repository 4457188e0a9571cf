"""Gallery test helpers that read galleries through the storage interface only."""

from __future__ import annotations

import numpy as np

from service.gallery import Gallery


def stored(gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """(item ids ascending, their embeddings) of everything the gallery's engine stores."""
    return gallery.store.vectors(gallery.store.item_ids().tolist())


def stored_by_external(gallery: Gallery) -> dict[str | None, np.ndarray]:
    """External id -> embedding of every stored item."""
    ids, emb = stored(gallery)
    items = gallery.store.fetch(ids.tolist())
    return {items[i].external_id: emb[r] for r, i in enumerate(ids.tolist())}
