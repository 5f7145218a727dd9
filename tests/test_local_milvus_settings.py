"""The settings the local Milvus server runs with (`milvus_servers.SEGMENT_SETTINGS`): 128 MB segments and no
interim index on growing ones reach the server's configuration, a caller's `extra_config` replaces them, and the
server's environment overrides its configuration (how an operator restores the wheel's defaults, and how
`benchmarks/serving_bench.py --server-env` compares settings).  With `mmap=True` (off by default) sealed segments
are memory-mapped from `<data>/mmap` (`MMAP_VARIABLE`), unless the operator set the variable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from dnsvr.serving.local.milvus_servers import MMAP_VARIABLE, SEGMENT_SETTINGS, MilvusStandaloneServer


def extra_config(server: MilvusStandaloneServer) -> list[str]:
    """The `--extra-config` values of the server's command line, in order."""
    server.prepare()
    command = server.command()
    return [command[i + 1] for i, word in enumerate(command) if word == "--extra-config"]


def test_segment_settings_are_on_the_command_line_once_and_a_caller_replaces_them(tmp_path: Path) -> None:
    shipped = extra_config(MilvusStandaloneServer(tmp_path / "shipped"))
    for key, value in SEGMENT_SETTINGS.items():
        assert shipped.count(f"{key}={value}") == 1
    replaced = extra_config(MilvusStandaloneServer(tmp_path / "replaced",
                                                   extra_config={"dataCoord.segment.maxSize": "512"}))
    assert [item for item in replaced if item.startswith("dataCoord.segment.maxSize=")] == \
        ["dataCoord.segment.maxSize=512"]


def test_segments_are_memory_mapped_under_the_data_directory_when_asked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MMAP_VARIABLE, raising=False)
    server = MilvusStandaloneServer(tmp_path / "data", mmap=True)
    assert server.environment()[MMAP_VARIABLE] == str(tmp_path / "data" / "mmap")
    assert MMAP_VARIABLE not in MilvusStandaloneServer(tmp_path / "default").environment()
    monkeypatch.setenv(MMAP_VARIABLE, "")  # the operator's choice (empty: off) is passed on untouched
    assert MMAP_VARIABLE not in MilvusStandaloneServer(tmp_path / "operator", mmap=True).environment()


def test_the_server_runs_with_them_and_its_environment_overrides_its_configuration(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    monkeypatch.delenv("PROXY_MAXDIMENSION", raising=False)
    for dimension_limit, accepted in ((None, False), ("64", True)):
        if dimension_limit:
            monkeypatch.setenv("PROXY_MAXDIMENSION", dimension_limit)
        data = tmp_path / f"data-{dimension_limit}"
        with MilvusStandaloneServer(data, extra_config={"proxy.maxDimension": "16"}) as server:
            config = yaml.safe_load((data / "configs" / "milvus.yaml").read_text())
            assert config["dataCoord"]["segment"]["maxSize"] == 128
            assert config["queryNode"]["segcore"]["interimIndex"]["enableIndex"] is False
            assert config["proxy"]["maxDimension"] == 16
            client = MilvusClient(uri=server.uri)
            try:
                if accepted:  # the environment's 64 over the configuration's 16
                    client.create_collection("wide", dimension=32)
                else:
                    with pytest.raises(MilvusException, match="dimension"):
                        client.create_collection("wide", dimension=32)
            finally:
                client.close()


def test_a_sealed_segment_is_memory_mapped(tmp_path: Path, monkeypatch) -> None:
    """The server reads the variable: a flushed (sealed) segment, loaded by the query node, gets its folder under
    `<data>/mmap`."""
    from pymilvus import MilvusClient

    monkeypatch.delenv(MMAP_VARIABLE, raising=False)
    with MilvusStandaloneServer(tmp_path / "data", mmap=True) as server:
        client = MilvusClient(uri=server.uri)
        try:
            client.create_collection("mapped", dimension=8)
            client.insert("mapped", [{"id": i, "vector": [float(i)] * 8} for i in range(100)])
            client.flush("mapped")
            deadline = time.monotonic() + 60
            while not (server.mmap_dir.exists() and any(server.mmap_dir.iterdir())):
                assert time.monotonic() < deadline, "no segment was memory-mapped within 60 s of the flush"
                time.sleep(0.5)
        finally:
            client.close()
