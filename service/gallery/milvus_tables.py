"""Small keyed bookkeeping collections in Milvus (id-block claims, gallery summaries, job
records): one VARCHAR primary key, typed scalar fields and an unused 2-d vector, because
Milvus requires a vector field in every collection. Every read and write of them is Strong."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Field = tuple[str, str, dict[str, Any]]
"""``(name, DataType member name, add_field keyword arguments)``."""


def ensure_keyed_collection(client: Any, name: str, key: Field, fields: Iterable[Field]) -> None:
    """Create collection ``name`` once (a replica creating it at the same time is fine) and
    load it. ``key`` is the VARCHAR primary key field."""
    from pymilvus import CollectionSchema, DataType, FieldSchema, MilvusException

    if not client.has_collection(name):
        key_name, key_kind, key_args = key
        schema = CollectionSchema(
            [
                FieldSchema(
                    key_name,
                    getattr(DataType, key_kind),
                    is_primary=True,
                    auto_id=False,
                    **key_args,
                ),
                *(FieldSchema(f, getattr(DataType, kind), **kw) for f, kind, kw in fields),
                FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),  # required, never searched
            ],
            enable_dynamic_field=False,
        )
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        try:
            client.create_collection(
                name, schema=schema, index_params=index, consistency_level="Strong"
            )
        except MilvusException:
            if not client.has_collection(name):
                raise  # not another writer creating it at the same time
    client.load_collection(name)
