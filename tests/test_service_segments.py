"""Segment views through the real service: an export with `index_segments` (what `dnsvr export --index-segments
0.25` writes into the manifest) indexes every video by 7 frame windows beside its crop views, embedded by
`dnsvr_index` from `dnsvr_embed`'s features through the ONNX coarse network: the stored windows are the offline
index's (`index_videos(segments=...)`) on the same decoded frames, and the store counts them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from conftest import MAX_FRAMES, VIDEOS
from dnsvr.client import VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.data.video import decode_video
from dnsvr.training.evaluation.tradeoff import fine_scorer, index_videos
from dnsvr.training.packs.model_pack import ModelPack

WINDOWS = SegmentLayout((0.25,))


def test_an_export_with_frame_windows_stores_the_offline_windows(docker_export, tmp_path):
    repository = shutil.copytree(docker_export, tmp_path / "repository", symlinks=True)
    manifest = json.loads((repository / "manifest.json").read_text())
    (repository / "manifest.json").write_text(json.dumps({**manifest, "index_segments": WINDOWS.record()}))
    names = ["pattern-longer-no-bar", "doorknob-hd-no-bar"]
    with LocalService(repository, store=tmp_path / "milvus.db", env={"DNSVR_MAX_FRAMES": MAX_FRAMES}) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=300) as client:
        for name in names:
            client.index(name, VIDEOS / f"{name}.mp4")
        stats = client.stats()
        assert stats["index_segments"] == stats["segments"] == WINDOWS.count == 7
        assert stats["view_rows"] == (1 + 9 + 7) * len(names)
        stores = ServiceStore(repository, {"store_uri": service.store_uri})
        stored = stores.get(create=False).get(names[0])
        stores.close()
    pack = ModelPack.bundled()
    frames = decode_video(VIDEOS / f"{names[0]}.mp4", max_frames=int(MAX_FRAMES))
    with torch.inference_mode():
        features = pack.load_extractor()(torch.from_numpy(frames)).numpy()  # [T, 9, 512]
    offline = index_videos({"clip": features}, pack.load("coarse"), pack.load("selector"),
                           [fine_scorer(pack.load("fine"))], progress=False, segments=WINDOWS)
    assert stored.segments.shape == (7, offline.coarse.shape[1])
    np.testing.assert_allclose(stored.segments, offline.coarse_views[0, 1:].numpy(), atol=1e-4)
    np.testing.assert_allclose(stored.views.shape, (9, offline.coarse.shape[1]))
