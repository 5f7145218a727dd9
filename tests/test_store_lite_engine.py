"""Milvus Lite's table of open collections under the guard of `lite_engine`: requests that reach a freshly
opened engine at once share one `Collection`, so every acknowledged write is visible to every later request.

Without the guard (milvus-lite 3.2.2 as released) both tests fail in most runs: the threads build several
`Collection`s over one directory and the rows written through all but one are missing until a restart."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dnsvr.serving.local.milvus_servers import MilvusLiteServer
from dnsvr.serving.store.lite_engine import guard_collection_table
from pymilvus import DataType, MilvusClient

WRITERS = 8
NAME = "cold"


def create_collection(client) -> None:
    """A loaded collection of (key VARCHAR primary, vector FLOAT[2]), as the store's per-video one."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection(NAME, schema=schema, index_params=index)


def row(number: int) -> dict:
    return {"key": f"r{number}", "vector": [1.0, float(number)]}


def engine_schema():
    """The same collection in the engine's own types."""
    from milvus_lite.schema.types import CollectionSchema, FieldSchema
    from milvus_lite.schema.types import DataType as LiteType

    return CollectionSchema(fields=[FieldSchema(name="key", dtype=LiteType.VARCHAR, is_primary=True, max_length=16),
                                    FieldSchema(name="vector", dtype=LiteType.FLOAT_VECTOR, dim=2)])


def test_threads_opening_a_cold_collection_at_once_share_it(tmp_path: Path) -> None:
    """The engine itself (as an embedded `.db` runs it, in this process): eight threads open a collection that
    exists on disk but not yet in memory, at once, and each writes a row: one `Collection`, eight rows."""
    from milvus_lite.db import MilvusLite

    guard_collection_table()
    data_dir = str(tmp_path / "engine")
    with MilvusLite(data_dir) as engine:  # the collection exists on disk, closed
        engine.create_collection(NAME, engine_schema())
    with MilvusLite(data_dir) as engine:
        start = threading.Barrier(WRITERS)

        def open_and_write(number: int):
            start.wait()
            collection = engine.get_collection(NAME)
            collection.insert([row(number)])
            return collection

        with ThreadPoolExecutor(WRITERS) as pool:
            opened = list(pool.map(open_and_write, range(WRITERS)))
        assert len({id(collection) for collection in opened}) == 1
        collection = engine.get_collection(NAME)
        assert collection.count() == WRITERS


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_writes_racing_a_listing_on_a_restarted_server_are_all_visible(tmp_path: Path) -> None:
    """The launcher's command (the guarded engine), restarted over an existing collection: eight writers and
    two `list_collections` (which open every collection) reach it at once, before anything else has, as a
    store reconnecting after a restart does beside the launcher's readiness probe; every acknowledged row is
    then returned."""
    server = MilvusLiteServer(tmp_path / "milvus.db")
    with server:  # pymilvus remembers the schema: after the restart an upsert is the first request on it
        client = MilvusClient(uri=server.uri)
        create_collection(client)
        client.upsert(NAME, [row(WRITERS)])
        client.close()
    process = subprocess.Popen(server.command(), start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_open(server.port):
            assert time.monotonic() < deadline and process.poll() is None, "the server did not start"
            time.sleep(0.05)
        clients = [MilvusClient(uri=server.uri) for _ in range(WRITERS + 2)]
        start = threading.Barrier(len(clients))

        def request(number: int) -> None:
            start.wait()
            if number < WRITERS:
                clients[number].upsert(NAME, [row(number)])
            else:
                clients[number].list_collections()

        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(request, range(len(clients))))
        clients[0].load_collection(NAME)
        found = clients[0].query(NAME, filter='key != ""', output_fields=["key"], consistency_level="Strong")
        assert sorted(hit["key"] for hit in found) == sorted(f"r{number}" for number in range(WRITERS + 1))
        for client in clients:
            client.close()
    finally:
        process.kill()
        process.wait(timeout=20)
