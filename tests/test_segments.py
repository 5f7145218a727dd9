"""Segment views (`dnsvr.training.data.segments`): a fixed number of frame windows whatever a video's length, their
record in a pack and a manifest, and the served S^c vectors of the windows (`views.segment_vectors`) equal to the
offline index's (`tradeoff.index_videos(segments=...)`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.export.manifest import ManifestError, index_segments
from dnsvr.serving.pipelines.views import segment_vectors
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.evaluation.tradeoff import fine_scorer, index_videos
from dnsvr.training.packs.model_pack import ModelPack
from hypothesis import given, settings
from hypothesis import strategies as st


@given(frames=st.integers(1, 400), lengths=st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_every_video_gets_the_same_windows_in_range(frames: int, lengths: list[float]):
    layout = SegmentLayout(tuple(lengths))
    windows = layout.windows(frames)
    assert len(windows) == layout.count
    position = 0
    for length in lengths:
        mine = windows[position:position + layout.count_of(length)]
        position += layout.count_of(length)
        size = max(1, round(length * frames))
        assert all(0 <= start < stop <= frames and stop - start == size for start, stop in mine)
        if len(mine) == 1:
            assert mine[0][0] == (frames - size) // 2  # centred
        else:
            assert mine[0][0] == 0 and mine[-1][1] == frames  # the first starts the video, the last ends it
        assert [start for start, _ in mine] == sorted(start for start, _ in mine)


def test_a_quarter_of_thirty_frames():
    assert SegmentLayout((0.25,)).windows(30) == [(0, 8), (4, 12), (7, 15), (11, 19), (15, 23), (18, 26), (22, 30)]
    assert SegmentLayout((0.5, 1 / 3)).count == 3 + 5


@pytest.mark.parametrize("lengths", [(), (0.0,), (1.0,), (-0.2,), (0.5, 1.5)])
def test_bad_lengths_are_refused(lengths):
    with pytest.raises(ValueError, match="window lengths in"):
        SegmentLayout(lengths)


def test_parse_and_records():
    layout = SegmentLayout.parse("0.5,0.25")
    assert layout == SegmentLayout((0.5, 0.25)) == SegmentLayout.from_record(layout.record())
    with pytest.raises(ValueError, match="LENGTH"):
        SegmentLayout.parse("half")
    with pytest.raises(ValueError, match="lengths"):
        SegmentLayout.from_record({"length": 0.5})
    assert index_segments({}) is None
    assert index_segments({"index_segments": layout.record()}) == layout
    with pytest.raises(ManifestError, match="re-export"):
        index_segments({"index_segments": {"lengths": [2.0]}})


def test_the_bundled_pack_has_no_frame_windows():  # an export's choice (`--index-segments 0.25`): they cost speed
    assert ModelPack.bundled().index_segments is None and ModelPack.bundled().indexes_views


@pytest.mark.parametrize("frames", [30, 9, 3])
def test_served_segment_vectors_equal_the_offline_index(frames: int):
    pack = ModelPack.bundled()
    coarse, selector, fine = pack.load("coarse"), pack.load("selector"), fine_scorer(pack.load("fine"))
    rng = np.random.default_rng(frames)
    features = rng.normal(size=(frames, 9, 512)).astype(np.float32)
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    layout = SegmentLayout((0.25, 0.5))
    calls = []

    @torch.inference_mode()
    def coarse_embed(batch: np.ndarray, mask: np.ndarray) -> np.ndarray:  # coarse_embed: [n, L, 9, 512], [n, L]
        calls.append(batch.shape)
        assert mask.all() and len(batch) <= 2
        return coarse.index_video(torch.from_numpy(batch)).numpy()

    served = segment_vectors(features, layout, coarse_embed, batch=2)
    offline = index_videos({"clip": features}, coarse, selector, [fine], progress=False, segments=layout)
    assert served.shape == (layout.count, offline.coarse.shape[1]) and served.dtype == np.float32
    assert offline.coarse_views.shape == (1, 1 + layout.count, offline.coarse.shape[1])
    np.testing.assert_allclose(served, offline.coarse_views[0, 1:].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert all(shape[1] >= 4 for shape in calls)  # windows shorter than the networks' 4 frames are repeated
