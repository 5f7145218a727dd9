"""A Milvus vector search's hits as columns: their scores and one list per output field, read from the response at
once instead of hit by hit.

pymilvus 3.0.2 turns every hit of a search into a `Hit` dict as the result arrives (~3.7 µs a hit, whatever the
caller reads of it): the 2,000-6,000 view rows a best-view search reads at K' = 1000 cost 7-22 ms of Python
(`benchmarks/view_search_bench.py`), 14,000 rows ~50 ms, more than the server takes to find them.
`search_columns` asks pymilvus for the search's future and reads the gRPC response it wraps,
`SearchResults.results`: the scores and each scalar field's values are protobuf repeated fields, turned into a
numpy array and lists in one step each.  Where pymilvus no longer gives that response (another pymilvus, another
result type), the hits it decodes are turned into the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus.client.utils import check_status


@dataclass(frozen=True)
class SearchColumns:
    """One query's hits, best first: `scores` [n] float32 (inner products), `fields` {output field: [n] values}."""

    scores: np.ndarray
    fields: dict[str, list]

    def __len__(self) -> int:
        return len(self.scores)

    def column(self, name: str) -> list:
        """The `name` values of the hits, [n] (a field the search did not ask for: KeyError)."""
        return self.fields[name]

    def rows(self, key: str) -> dict[Any, dict]:
        """{hit's `key` value: {field: value} of its hit}: the first hit of each key value, when it repeats."""
        names = list(self.fields)
        rows: dict[Any, dict] = {}
        for values in zip(*(self.fields[name] for name in names), strict=True):
            row = dict(zip(names, values, strict=True))
            rows.setdefault(row[key], row)
        return rows


def search_columns(client: Any, collection: str, query: np.ndarray, limit: int, anns_field: str, params: dict,
                   output_fields: list[str], filter: str, consistency: str) -> SearchColumns:
    """One query's search of `collection` (`MilvusClient.search` arguments; `query` [D] float32) -> its hits as
    columns.  Errors are pymilvus's or gRPC's, as a plain `client.search` raises them."""
    future = client.search(collection, data=[query.astype(np.float32).tolist()], limit=limit, filter=filter,
                           anns_field=anns_field, search_params=params, output_fields=output_fields,
                           consistency_level=consistency, _async=True)
    call = getattr(future, "_future", None)
    if call is None or not hasattr(call, "result"):  # not the future of pymilvus 3.0.2: its decoded hits
        result = future if isinstance(future, list) else future.result()
        return columns_from_hits(list(result[0]), output_fields)
    response = call.result()
    check_status(response.status)
    return _from_response(response.results, output_fields)


def _from_response(results: Any, output_fields: list[str]) -> SearchColumns:
    """`SearchResultData` of one query -> its columns (a field whose values are not scalars: ValueError)."""
    count = len(results.scores)
    fields: dict[str, list] = {}
    for field in results.fields_data:
        if field.field_name not in output_fields:
            continue
        kind = field.scalars.WhichOneof("data") if field.HasField("scalars") else None
        if kind is None and not count:  # a search without hits: the server sends its fields without values
            fields[field.field_name] = []
            continue
        if kind is None or kind in ("array_data", "json_data"):
            raise ValueError(f"search output field {field.field_name!r} is not a scalar column ({kind})")
        fields[field.field_name] = list(getattr(field.scalars, kind).data)
    missing = [name for name in output_fields if name not in fields]
    if missing or any(len(values) != count for values in fields.values()):
        raise ValueError(f"search response lacks columns {missing} or has columns of another length than its "
                         f"{count} scores")
    return SearchColumns(np.asarray(results.scores, np.float32), fields)


def columns_from_hits(hits: list, output_fields: list[str]) -> SearchColumns:
    """pymilvus's decoded hits (dicts with "distance" and "entity") -> their columns."""
    return SearchColumns(np.array([hit["distance"] for hit in hits], np.float32),
                         {name: [hit["entity"][name] for hit in hits] for name in output_fields})
