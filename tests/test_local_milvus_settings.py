"""The settings the local Milvus server runs with (`milvus_servers.SEGMENT_SETTINGS`): 128 MB segments and no
interim index on growing ones reach the server's configuration, a caller's `extra_config` replaces them, and the
server's environment overrides its configuration (how an operator restores the wheel's defaults, and how
`benchmarks/serving_bench.py --server-env` compares settings).  Memory-mapped segments (`MMAP_VARIABLE`) are
refused, and the reason is checked against the wheel's server: it cannot load a mapped segment whose VARCHAR
column holds only empty strings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from dnsvr.serving.cli.main import main as cli
from dnsvr.serving.local.milvus_servers import (
    MMAP_VARIABLE,
    SEGMENT_SETTINGS,
    MilvusStandaloneServer,
    UnsafeServerSetting,
)
from dnsvr.serving.local.service import LocalService


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


def test_memory_mapped_segments_are_refused_before_anything_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(MMAP_VARIABLE, str(tmp_path / "mmap"))
    with pytest.raises(UnsafeServerSetting, match=f"{MMAP_VARIABLE}=.*refused.*empty strings"):
        MilvusStandaloneServer(tmp_path / "data")
    with pytest.raises(UnsafeServerSetting):
        LocalService(tmp_path / "models", store=tmp_path / "milvus-server", engine="server", isolate=False)
    assert cli(["serve", "--repository", str(tmp_path / "models"), "--store", str(tmp_path / "milvus-server"),
                "--engine", "server", "--no-isolation"]) == 2
    assert MMAP_VARIABLE in capsys.readouterr().err
    assert not (tmp_path / "models").exists() and not (tmp_path / "milvus-server").exists()
    LocalService(tmp_path / "models", store=tmp_path / "milvus.db", engine="lite")  # Milvus Lite does not read it
    monkeypatch.setenv(MMAP_VARIABLE, "")  # empty: off
    MilvusStandaloneServer(tmp_path / "data")


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


class MappingServer(MilvusStandaloneServer):
    """The wheel's server with its sealed segments memory-mapped from `<data>/mmap`, past the refusal: to show why."""

    def environment(self) -> dict[str, str]:
        return {**super().environment(), MMAP_VARIABLE: str(self.data_dir / "mmap")}


def test_the_wheels_server_cannot_load_a_mapped_segment_whose_text_column_is_empty(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Why MMAP_VARIABLE is refused (milvus-io/milvus#31418, fixed after 2.3.5): the same 100 rows sealed twice, a
    VARCHAR column all "" in one, "x" in the other; the first segment's mapped load fails ("MAP_FAILED") while its
    rows are still answered from the growing copy, the second's succeeds.  If a newer wheel passes the first
    assertion's opposite, the refusal can go."""
    from pymilvus import DataType, MilvusClient

    monkeypatch.delenv(MMAP_VARIABLE, raising=False)
    with MappingServer(tmp_path / "data") as server:
        client = MilvusClient(uri=server.uri)
        try:
            ids = {}
            for name, text in (("empty", ""), ("filled", "x")):
                schema = client.create_schema(auto_id=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
                schema.add_field("text", DataType.VARCHAR, max_length=8)
                index = client.prepare_index_params()
                index.add_index("vector", index_type="FLAT", metric_type="IP")
                client.create_collection(name, schema=schema, index_params=index)
                client.insert(name, [{"id": i, "vector": [float(i)] * 8, "text": text} for i in range(100)])
                client.flush(name)
                ids[name] = str(client.describe_collection(name)["collection_id"])

            def failed_loads(name: str) -> int:
                log = "\n".join(path.read_text(errors="replace") for path in (server.data_dir / "logs").glob("*.log"))
                return sum("MAP_FAILED" in line and ids[name] in line for line in log.splitlines())

            deadline = time.monotonic() + 90
            while failed_loads("empty") == 0:
                assert time.monotonic() < deadline, "the all-empty column's segment was not refused within 90 s"
                time.sleep(0.5)
            assert failed_loads("filled") == 0
            for name in ids:
                assert len(client.query(name, filter="id >= 0", output_fields=["id"], limit=200,
                                        consistency_level="Strong")) == 100
        finally:
            client.close()
