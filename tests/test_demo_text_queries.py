"""The demo's text searches with the bundled offline student: each query finds one of the videos a person expects
(`DEMO_TEXT_QUERIES`) first among the demo's videos (the sample clips and the photograph clips).

Computed in PyTorch on the frames the service gives the student (decoded at 1 fps, at most `max_frames` of them
chosen as the training chooses them): tests/test_service_offline_text.py checks that the served ranking and
scores equal this computation, so this is what `make demo` prints, without starting Triton.
"""

from __future__ import annotations

import numpy as np
import torch
from dnsvr.serving.cli.service import DEMO_TEXT_QUERIES, photo_clips
from dnsvr.training import paths
from dnsvr.training.data.clip_frames import select_frame_indices
from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
from dnsvr.training.data.video import decode_video
from dnsvr.training.files import find_videos
from dnsvr.training.networks.efficientnet import load_efficientnet_lite0, normalize_frames
from dnsvr.training.packs.model_pack import ModelPack


def test_each_demo_query_finds_an_expected_video_first() -> None:
    student = ModelPack.bundled().load("text_video")
    cnn = load_efficientnet_lite0()
    videos = {video_id: decode_video(path, min_frames=0)
              for video_id, path in find_videos(paths.sample_video_dirs()).items}
    videos.update(photo_clips())
    assert {v for expected in DEMO_TEXT_QUERIES.values() for v in expected} <= set(videos)
    ids = sorted(videos)
    with torch.no_grad():
        vectors = []
        for video_id in ids:
            frames = videos[video_id]
            chosen = torch.from_numpy(frames[select_frame_indices(len(frames), student.max_frames)])
            pooled = cnn.pooled_features(normalize_frames(chosen))  # [n, 1280]
            vectors.append(student.encode_video(pooled[None])[0])
        tokens, mask = MiniLMTokenizer().encode(list(DEMO_TEXT_QUERIES))
        text = student.encode_text(torch.from_numpy(tokens), torch.from_numpy(mask))  # [Q, D]
        cosine = (text @ torch.stack(vectors).T).numpy()  # [Q, V]
    for (query, expected), row in zip(DEMO_TEXT_QUERIES.items(), cosine, strict=True):
        first = ids[int(np.argmax(row))]
        assert first in expected, (query, first, {v: round(float(s), 3) for v, s in zip(ids, row, strict=True)})
