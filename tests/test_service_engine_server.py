"""`dnsvr serve --engine server`: the service over the local Milvus 2.3.5 server instead of Milvus Lite.

The same pipelines, the same rankings: a sample video finds its near-copies first, deletes and stats work,
and nothing is left running after stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dnsvr.client import VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.training import paths

VIDEOS = paths.shared_videos_dir()
COPIES = ["pattern-hd-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-small-logo-bar"]
DISTRACTOR = "doorknob-hd-no-bar"


def test_an_unknown_engine_is_refused(docker_export) -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        LocalService(docker_export, engine="sqlite")


def test_the_service_on_the_local_milvus_server_ranks_like_on_lite(docker_export, tmp_path: Path) -> None:
    items = [(name, VIDEOS / f"{name}.mp4") for name in [*COPIES, DISTRACTOR]]
    rankings = {}
    for engine in ("server", "lite"):
        store = tmp_path / engine
        with LocalService(docker_export, store=store, engine=engine, env={"DNSVR_MAX_FRAMES": "8"}) as service, \
                VideoSearchClient(service.grpc_url, timeout_s=300) as client:
            assert all(outcome.ok for outcome in client.index_many(items, concurrency=2))
            result = client.search(video_id=COPIES[0], top_k=3, rerank=1.0)
            rankings[engine] = [(hit.video_id, round(hit.score, 4)) for hit in result]
            stats = client.stats()
            assert stats["videos"] == 4
            assert stats["milvus_version"].startswith("milvus_lite") == (engine == "lite")
            assert client.delete(DISTRACTOR) and client.stats()["videos"] == 3
            milvus = service.milvus
        assert not milvus.running
    assert sorted(video_id for video_id, _ in rankings["server"][:2]) == sorted(COPIES[1:])
    assert rankings["server"] == rankings["lite"]
