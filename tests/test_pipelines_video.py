"""The first step of dnsvr_embed (`dnsvr.serving.pipelines.video`): decode while the extractor runs, the same
features as decoding first; given frames checked; the text-video students' inputs; and the background thread
that makes the overlap (`dnsvr.serving.pipelines.background`)."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from dnsvr.client import spec
from dnsvr.serving.pipelines import video as video_pipeline
from dnsvr.serving.pipelines.background import in_background
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.video import ClipCrops, Decoding, FramePositions, text_frames, video_features
from dnsvr.training.data.clip_frames import resize_and_crop, select_frame_indices
from dnsvr.training.data.video import decode_video, decode_video_with_crops

DNS = Decoding(fps=1.0, max_frames=40)


def request(**inputs) -> RequestInputs:
    return RequestInputs({name: value for name, value in inputs.items()})


def video(path) -> np.ndarray:
    return np.array([path.read_bytes()], object)


class Extractor:
    """A stand-in extractor: each frame's features (and pooled features) are its mean grey level; it records
    the frames of every call and whether the decoding thread was alive during it."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.decoding_alongside = False

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(len(frames))
        self.decoding_alongside |= any(thread.name == "decode" for thread in threading.enumerate())
        means = frames.reshape(len(frames), -1).mean(axis=1).astype(np.float32)  # [n]
        return {"features": means[:, None, None] * np.ones((1, spec.REGIONS, spec.FEATURE_DIMS), np.float32),
                "pooled": means[:, None] * np.ones((1, spec.POOLED_DIMS), np.float32)}


def means(frames: np.ndarray) -> list[float]:
    return frames.reshape(len(frames), -1).mean(axis=1).astype(np.float32).tolist()


def test_a_decoded_video_gives_the_features_of_decoding_first_in_chunks(videos_dir):
    path = videos_dir / "pattern-longer-no-bar.mp4"
    extract = Extractor()
    out = video_features(request(video=video(path)), Decoding(1.0, 40, chunk=3), extract)
    decoded = decode_video(path, max_frames=40)  # 8 frames
    assert out["features"].shape == (1, len(decoded), spec.REGIONS, spec.FEATURE_DIMS)
    assert out["features"][0, :, 0, 0].tolist() == means(decoded)
    assert extract.calls == [3, 3, 2] and extract.decoding_alongside
    assert out["frame_count"].tolist() == [len(decoded)] and out["mask"].tolist() == [[True] * len(decoded)]
    assert not any(thread.name == "decode" for thread in threading.enumerate())  # the thread is gone


def test_decoding_yields_the_cores_to_the_extractor(videos_dir, monkeypatch):
    """The decoding thread (and so the FFmpeg threads it starts) runs DECODE_NICENESS below the caller's thread,
    which runs the extractor and keeps its own priority."""
    decoding_priority = []

    def sampled_frames(*args, **kwargs):
        decoding_priority.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        yield from decoded(*args, **kwargs)

    decoded = video_pipeline.sampled_frames
    monkeypatch.setattr(video_pipeline, "sampled_frames", sampled_frames)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    out = video_features(request(video=video(videos_dir / "pattern-longer-no-bar.mp4")), DNS, Extractor())
    assert out["frame_count"].tolist() == [8]
    assert decoding_priority == [min(own + video_pipeline.DECODE_NICENESS, 19)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_a_short_clip_is_repeated_and_max_frames_cuts_a_long_one(videos_dir):
    path = videos_dir / "pattern-longer-no-bar.mp4"
    two = video_features(request(video=video(path)), Decoding(1.0, 2), Extractor())
    first = decode_video(path, max_frames=2, min_frames=0)
    assert two["frame_count"].tolist() == [4] and two["features"][0, :, 0, 0].tolist() == means(first) * 2


def test_given_frames_are_checked_and_run_a_batch_at_a_time():
    extract = Extractor()
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 224, 224, 3), np.uint8)
    out = video_features(request(frames=frames), Decoding(1.0, 10), extract, batch=4)
    assert extract.calls == [4, 4, 2] and out["features"][0, :, 0, 0].tolist() == list(range(10))
    short = video_features(request(frames=frames[:2]), Decoding(1.0, 10), Extractor())
    assert short["features"].shape == (1, 4, 9, 512) and short["mask"].shape == (1, 4)  # repeated to 4
    assert short["frame_count"].tolist() == [4] and short["features"][0, :, 0, 0].tolist() == [0, 1, 0, 1]
    for inputs, message in [({"frames": np.zeros((0, 224, 224, 3), np.uint8)}, "0 frames"),
                            ({"frames": np.zeros((11, 224, 224, 3), np.uint8)}, "maximum is 10"),
                            ({"video": np.array([b""], object)}, "empty"),
                            ({"video": np.array([b"not a video"], object)}, "not a readable video"),
                            ({}, "exactly one")]:
        with pytest.raises(BadRequest, match=message):
            video_features(RequestInputs(inputs), Decoding(1.0, 10), Extractor())


def test_an_extractor_failure_stops_the_decoding(videos_dir):
    def fail(frames: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("feature_extractor: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        video_features(request(video=video(videos_dir / "pattern-longer-no-bar.mp4")), DNS, fail)
    assert not any(thread.name == "decode" for thread in threading.enumerate())


def test_the_thumbnail_is_the_middle_frame():
    from PIL import Image

    frames = np.stack([np.full((224, 224, 3), 40 * i, np.uint8) for i in range(5)])
    out = video_features(request(frames=frames), Decoding(1.0, 10), Extractor())
    image = Image.open(io.BytesIO(out["thumbnail"][0]))
    assert image.size == (112, 112) and abs(np.asarray(image).mean() - 80) < 2  # frame 2 of 0..4
    two = video_features(request(frames=frames[:2]), Decoding(1.0, 10), Extractor())  # repeated: 0 1 0 1
    assert abs(np.asarray(Image.open(io.BytesIO(two["thumbnail"][0]))).mean() - 0) < 2  # frame 2 of those


def test_teachclip_gets_crops_of_the_native_frames_it_chooses(videos_dir):
    data = (videos_dir / "pattern-longer-no-bar.mp4").read_bytes()
    frames, crops = decode_video_with_crops(data, clip_size=96, clip_max_frames=5, max_frames=40)
    np.testing.assert_array_equal(frames, decode_video(data, max_frames=40))
    native = decode_video(data, size=None, full_frames=True, max_frames=40, min_frames=0)
    chosen = select_frame_indices(len(native), 5)
    np.testing.assert_array_equal(crops, np.stack([resize_and_crop(native[i], 96) for i in chosen]))
    out = video_features(request(video=np.array([data], object)), Decoding(1.0, 40, ClipCrops(96, 5)), Extractor())
    assert out["clip_frames"].shape == (1, 5, 96, 96, 3) and out["clip_mask"].tolist() == [[True] * 5]
    np.testing.assert_array_equal(out["clip_frames"][0], crops)
    assert "clip_frames" not in video_features(request(video=np.array([data], object)), DNS, Extractor())


def test_given_frames_give_crops_of_the_frames_before_repetition():
    frames = np.random.default_rng(0).integers(0, 256, (2, spec.FRAME_SIZE, spec.FRAME_SIZE, 3), dtype=np.uint8)
    out = video_features(request(frames=frames), Decoding(1.0, 100, ClipCrops(96, 12)), Extractor())
    assert out["features"].shape[1] == 4 and out["clip_frames"].shape == (1, 2, 96, 96, 3)  # 2 frames, not 4
    np.testing.assert_array_equal(out["clip_frames"][0, 1], resize_and_crop(frames[1], 96))


def test_the_offline_student_gets_the_pooled_features_of_the_frames_it_chooses(videos_dir):
    data = (videos_dir / "pattern-longer-no-bar.mp4").read_bytes()
    out = video_features(request(video=np.array([data], object)), Decoding(1.0, 40, FramePositions(5)), Extractor())
    decoded = decode_video(data, max_frames=40, min_frames=0)  # 8 frames: none repeated
    chosen = select_frame_indices(len(decoded), 5)
    assert out["text_features"].shape == (1, 5, spec.POOLED_DIMS) and out["text_mask"].tolist() == [[True] * 5]
    assert out["text_features"][0, :, 0].tolist() == [means(decoded)[i] for i in chosen]
    frames = np.arange(2, dtype=np.uint8)[:, None, None, None] * np.ones((1, 224, 224, 3), np.uint8)
    given = video_features(request(frames=frames), Decoding(1.0, 100, FramePositions(12)), Extractor())
    assert given["features"].shape[1] == 4 and given["text_features"][0, :, 0].tolist() == [0.0, 1.0]  # not 4
    assert text_frames({}) is None
    assert text_frames({"text_kind": "offline_minilm_effnet", "text_max_frames": "12"}) == FramePositions(12)
    assert text_frames({"text_kind": "teachclip", "clip_size": "96", "text_max_frames": "6"}) == ClipCrops(96, 6)


def test_in_background_keeps_order_and_runs_ahead_at_most_depth():
    produced: list[int] = []

    def numbers():
        for number in range(10):
            produced.append(number)
            yield number

    with in_background(numbers(), depth=2) as items:
        first = next(items)
        time.sleep(0.2)  # the producer fills the queue (2) and holds one more, blocked on the full queue
        assert first == 0 and len(produced) <= 1 + 2 + 1
        assert [first, *items] == list(range(10))
    with pytest.raises(ValueError, match="depth"), in_background(iter([]), depth=0):
        pass


def test_in_background_hands_errors_over_and_stops_when_left():
    def failing():
        yield 1
        raise OSError("disk gone")

    with in_background(failing()) as items, pytest.raises(OSError, match="disk gone"):
        list(items)
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    with pytest.raises(KeyError), in_background(endless(), depth=1, name="endless") as items:
        next(items)
        raise KeyError("the consumer failed")
    assert closed.is_set() and not any(thread.name == "endless" for thread in threading.enumerate())
