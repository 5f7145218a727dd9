"""`search_columns` against real Milvus (Lite server and the 2.3.5 standalone server): the columns read from the
search response equal, hit by hit, what pymilvus's own `search` decodes (plain, filtered, range and empty
searches; video and view collections); a pymilvus that gives no future, or a response without the asked columns,
is handled or refused by name."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from conftest import unit_vectors
from dnsvr.serving.store.expressions import greater, is_in
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.serving.store.search_columns import SearchColumns, search_columns
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.networks.codes import pack_codes
from pymilvus.grpc_gen import schema_pb2

DIM, VIEWS = 16, 3
FIELDS = ["video_id", "selector", "generation", "frame_count"]


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return unit_vectors(rng, *shape, dim=DIM)


def filled_store(uri: str, count: int = 40) -> VideoStore:
    store = VideoStore(StoreSettings(uri=uri, prefix="c" + uuid.uuid4().hex[:12]), model_version="columns-1",
                       coarse_dim=DIM, representation="binary", text_dim=0, views=VIEWS)
    rng = np.random.default_rng(7)
    store.upsert_many([
        IndexedVideo(f"v{i:03d}", unit(rng), float(rng.uniform()),
                     pack_codes(rng.choice([-1.0, 1.0], size=(1 + i % 4, 9, 512))), views=unit(rng, VIEWS))
        for i in range(count)])
    return store


def public_hits(store: VideoStore, collection: str, field: str, query: np.ndarray, limit: int, fields: list[str],
                filter: str = "", radius: float | None = None) -> list:
    params = {"metric_type": "IP", "params": {"ef": 64, **({} if radius is None else {"radius": radius})}}
    result = store._connect().search(collection, data=[query.tolist()], limit=limit, filter=filter,
                                     anns_field=field, search_params=params, output_fields=fields,
                                     consistency_level="Strong")
    return list(result[0])


def columns(store: VideoStore, collection: str, field: str, query: np.ndarray, limit: int, fields: list[str],
            filter: str = "", radius: float | None = None) -> SearchColumns:
    params = {"metric_type": "IP", "params": {"ef": 64, **({} if radius is None else {"radius": radius})}}
    return search_columns(store._connect(), collection, query, limit, field, params, fields, filter, "Strong")


def assert_same(found: SearchColumns, hits: list, fields: list[str]) -> None:
    assert len(found) == len(hits)
    # each search is computed anew: two identical searches on Milvus Lite once scored a hit 1 ulp apart (CI)
    np.testing.assert_allclose(found.scores, np.array([hit["distance"] for hit in hits], np.float32), rtol=1e-6, atol=0)
    for name in fields:
        assert found.column(name) == [hit["entity"][name] for hit in hits], name


def test_the_columns_equal_pymilvus_decoded_hits(backend_uri: str) -> None:
    store = filled_store(backend_uri)
    try:
        query = unit(np.random.default_rng(1))
        cases = [
            (store.video_collection, "coarse", 10, FIELDS, "", None),
            (store.video_collection, "coarse", 40, FIELDS, is_in("video_id", ["v001", "v017", "v030"]), None),
            (store.view_collection, "vector", 100, ["video_id", "generation", "view"], greater("view", 0), None),
            (store.view_collection, "vector", 100, ["video_id", "view"], "", 0.2),
            (store.video_collection, "coarse", 5, FIELDS, is_in("video_id", ["absent"]), None),
            (store.view_collection, "vector", 5, ["video_id", "generation", "view"], "", 1.5),
        ]
        for collection, field, limit, fields, filter, radius in cases:
            found = columns(store, collection, field, query, limit, fields, filter, radius)
            assert_same(found, public_hits(store, collection, field, query, limit, fields, filter, radius), fields)
        plain = columns(store, store.video_collection, "coarse", query, 10, FIELDS)
        assert len(plain) == 10 and plain.scores.dtype == np.float32
        assert list(plain.rows("video_id")) == plain.column("video_id")
        assert plain.rows("video_id")[plain.column("video_id")[0]]["frame_count"] == plain.column("frame_count")[0]
    finally:
        store.close()


class FutureLessClient:
    """A pymilvus whose `search` ignores `_async` and returns its decoded hits (one list per query)."""

    def search(self, collection: str, **kwargs) -> list:
        return [[{"id": 3, "distance": 0.5, "entity": {"video_id": "a", "view": 2}},
                 {"id": 4, "distance": 0.25, "entity": {"video_id": "b", "view": 0}}]]


def test_a_pymilvus_without_the_future_gives_the_same_columns_from_its_hits() -> None:
    found = search_columns(FutureLessClient(), "views", np.zeros(4, np.float32), 2, "vector", {}, ["video_id", "view"],
                           "", "Strong")
    np.testing.assert_array_equal(found.scores, np.array([0.5, 0.25], np.float32))
    assert found.fields == {"video_id": ["a", "b"], "view": [2, 0]}


def test_a_response_without_an_asked_column_or_with_a_vector_column_is_refused() -> None:
    from dnsvr.serving.store import search_columns as module

    results = schema_pb2.SearchResultData(num_queries=1, top_k=1, scores=[0.5], topks=[1])
    results.ids.int_id.data.append(9)
    with pytest.raises(ValueError, match="lacks columns \\['video_id'\\]"):
        module._from_response(results, ["video_id"])
    field = results.fields_data.add(field_name="vector")
    field.vectors.dim = 2
    field.vectors.float_vector.data.extend([0.0, 1.0])
    with pytest.raises(ValueError, match="'vector' is not a scalar column"):
        module._from_response(results, ["vector"])
