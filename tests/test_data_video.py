"""Video decoding with PyAV: real sample clips, timestamp sampling on generated VFR files, clear errors."""

from __future__ import annotations

import io
import math
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from dnsvr.training.data import video
from dnsvr.training.data.video import (
    VideoDecodeError,
    _packets_needed,
    _Targets,
    decode_video,
    pad_frames,
    probe_video,
)


def write_video(
    path: Path, times: list[float], values: list[int] | None = None, size=(64, 48), fmt: str | None = None
) -> Path:
    """Encode uniform grey frames (grey `values[i]`) shown at `times[i]` seconds (H.264, ms timestamps)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, time in enumerate(times):
            image = np.full((size[1], size[0], 3), 128 if values is None else values[i], np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def write_audio(path: Path, with_empty_video: bool = False) -> Path:
    """One second of a tone; `with_empty_video` also declares a video stream that gets no frame."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25) if with_empty_video else None
        if video is not None:
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=8000)
        samples = (1000 * np.sin(np.arange(8000) / 5)).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(audio.encode(frame))
        out.mux(audio.encode())
        if video is not None:
            out.mux(video.encode())
    return path


def grey_levels(frames: np.ndarray) -> list[int]:
    return [int(round(v)) for v in frames[:, 100:124, 100:124].mean(axis=(1, 2, 3))]


def first_at_or_after(times: list[float], fps: float = 1.0) -> list[int]:
    """Indices the documented rule picks: for k = 0, 1, ... the first frame with time - times[0] >= k/fps."""
    picks, k = [], 0
    for i, time in enumerate(times):
        while time - times[0] >= k / fps - 1e-9:
            picks.append(i)
            k += 1
    return picks


def test_every_sample_video_decodes_to_one_frame_per_second(videos_dir: Path, sample_frames: dict) -> None:
    for path in sorted(videos_dir.glob("*.mp4")):
        info = probe_video(path)
        frames = sample_frames[path.stem]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3), path.name
        assert len(frames) == math.ceil(info.duration), (path.name, len(frames), info.duration)
        assert info.codec == "h264" and info.fps == pytest.approx(30.0)
        assert frames.std() > 5, f"{path.name} decoded to a flat image"


def test_full_frames_and_native_size_keep_aspect(videos_dir: Path) -> None:
    portrait = videos_dir / "pattern-sd-grey-bar.mp4"
    frames = decode_video(portrait, full_frames=True, max_frames=2)
    info = probe_video(portrait)
    assert frames.shape[0] == 4 and frames.shape[2] == 256
    assert frames.shape[1] == round(256 * info.height / info.width)
    odd = videos_dir / "test-padded-dimensions.mp4"
    native = decode_video(odd, size=None, full_frames=True, max_frames=1, min_frames=0)
    info = probe_video(odd)
    assert native.shape == (1, info.height, info.width, 3)
    assert decode_video(odd, size=None, max_frames=1, min_frames=0).shape == (1, 224, 224, 3)


def test_bytes_and_file_objects_decode_like_paths(videos_dir: Path) -> None:
    path = videos_dir / "doorknob-hd-no-bar.mp4"
    expected = decode_video(path, max_frames=2)
    data = path.read_bytes()
    np.testing.assert_array_equal(decode_video(data, max_frames=2), expected)
    np.testing.assert_array_equal(decode_video(io.BytesIO(data), max_frames=2), expected)


def test_sampling_follows_timestamps_on_variable_frame_rate(tmp_path: Path) -> None:
    times = [i * 0.04 for i in range(25)] + [1.5, 4.0, 6.5, 9.2, 10.0]
    values = [20 + 7 * i for i in range(len(times))]
    frames = decode_video(write_video(tmp_path / "vfr.mkv", times, values), min_frames=0)
    picks = first_at_or_after(times)
    assert len(frames) == 11 == len(picks) != len(times)
    assert np.abs(np.array(grey_levels(frames)) - np.array([values[i] for i in picks])).max() <= 3
    two_fps = decode_video(tmp_path / "vfr.mkv", fps=2.0, min_frames=0)
    assert len(two_fps) == len(first_at_or_after(times, fps=2.0)) == 21


def test_start_offset_and_missing_timestamps(tmp_path: Path) -> None:
    times = [5 + i / 10 for i in range(40)]
    values = [20 + 5 * i for i in range(40)]
    frames = decode_video(write_video(tmp_path / "offset.mkv", times, values), min_frames=0)
    assert np.abs(np.array(grey_levels(frames)) - np.array([20, 70, 120, 170])).max() <= 3
    raw = write_video(tmp_path / "raw.h264", [i / 25 for i in range(60)], fmt="h264")
    with av.open(str(raw)) as container:
        assert all(frame.pts is None for frame in container.decode(video=0))
    assert len(decode_video(raw, min_frames=0)) == 3


def write_moving_clip(path: Path, codec: str, options: dict[str, str], times: list[float] | None = None,
                      count: int = 90) -> Path:
    """`count` frames of a moving pattern (25 fps, or shown at `times` seconds), encoded by `codec` with
    `options` (keyframe interval, B-frames, open GOP) into the container that `path`'s suffix names."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height = 96, 64
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(count):
            image = np.zeros((64, 96, 3), np.uint8)
            image[:, (5 * i) % 96:] = (37 * i) % 256
            image[(3 * i) % 64] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def every_frame_sampled(path: Path, fps: float) -> list[np.ndarray]:
    """The oracle: every frame decoded in order, the first at or after each k / fps kept (native RGB)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        timed = [(float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24"))
                 for frame in container.decode(stream)]
    return [timed[i][1] for i in first_at_or_after([time for time, _ in timed], fps)]


CLIPS = {  # name: (codec, encoder options, variable frame times)
    "short-gop-b-frames.mp4": ("libx264", {"g": "5", "bf": "3"}, False),
    "open-gop.mp4": ("libx264", {"g": "12", "bf": "3", "x264-params": "open-gop=1"}, False),
    "vfr-b-frames.mkv": ("libx264", {"g": "8", "bf": "2"}, True),
    "transport-stream.ts": ("libx264", {"g": "9", "bf": "2"}, False),
    "mpeg4-b-frames.avi": ("mpeg4", {"g": "10", "bf": "2"}, False),
    "all-keyframes.avi": ("mjpeg", {}, False),
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_groups_of_pictures_left_undecoded_change_no_sampled_frame(tmp_path: Path, name: str) -> None:
    """decode_video decodes only the groups of pictures a sampled time falls in: the frames it takes are
    exactly those of a decode of every frame, whatever the keyframe interval, B-frames, open GOPs, variable
    frame rate or container, and at several sampling rates."""
    codec, options, variable = CLIPS[name]
    times = list(np.cumsum(np.random.default_rng(3).integers(10, 200, 90)) / 1000) if variable else None
    path = write_moving_clip(tmp_path / name, codec, options, times)
    for fps in (0.5, 1.0, 2.0, 5.0):
        expected = every_frame_sampled(path, fps)
        frames = decode_video(path, fps=fps, size=None, full_frames=True, min_frames=0)
        assert len(frames) == len(expected) > 1, (name, fps)
        for index, (got, want) in enumerate(zip(frames, expected, strict=True)):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} at {fps} fps, sample {index}")


def clock(origin: float, fps: float, index: int) -> _Targets:
    targets = _Targets(fps)
    targets.origin, targets.index = origin, index
    return targets


def test_only_the_packets_up_to_the_last_frame_taken_are_decoded() -> None:
    """A group of pictures in decoding order (keyframe first, B-frames after the picture they display before)."""
    group = [1.0, 1.12, 1.04, 1.08]
    assert _packets_needed(group, clock(0.0, 1.0, 1)) == (1, False)  # the keyframe is the sampled frame
    assert _packets_needed(group, clock(0.0, 1.0, 2)) == (0, False)  # no sampled time falls in the group
    assert _packets_needed(group, clock(0.04, 1.0, 1)) == (3, False)  # 1.04 is the third packet
    assert _packets_needed(group, clock(0.0, 20.0, 21)) == (4, False)  # 1.05 takes 1.08, the last packet
    assert _packets_needed(group, clock(0.5, 1.0, 0)) == (1, False)  # 0.5 is before the group: the keyframe
    open_group = [2.0, 1.92, 1.96, 2.12]  # leading pictures shown before their keyframe
    assert _packets_needed(open_group, clock(0.0, 1.0, 2)) == (1, False)  # 1.92, 1.96: before the target
    assert _packets_needed(open_group, clock(0.0, 20.0, 39)) == (4, True)  # 1.95 takes 1.96, 2.05 takes 2.12


@pytest.mark.parametrize("name", ["short-gop-b-frames.mp4", "open-gop.mp4", "vfr-b-frames.mkv"])
def test_keyframes_decoded_ahead_give_the_frames_of_one_decoder(tmp_path: Path, name: str, monkeypatch) -> None:
    """Keyframes decoded alone on decoders of their own, ahead of the decode, are used, and the sampled frames
    are those of one decoder, from a path or from bytes, at several rates."""
    codec, options, variable = CLIPS[name]
    times = list(np.cumsum(np.random.default_rng(3).integers(10, 200, 90)) / 1000) if variable else None
    path = write_moving_clip(tmp_path / name, codec, options, times)
    taken = []
    result = video.KeyframeDecoders.result
    monkeypatch.setattr(video.KeyframeDecoders, "result", lambda self, key: taken.append(key) or result(self, key))
    ahead = {(fps, kind): decode_video(source, fps=fps, size=None, full_frames=True, min_frames=0)
             for fps in (0.5, 1.0, 2.0) for kind, source in (("path", path), ("bytes", path.read_bytes()))}
    assert taken  # some groups were decoded as their keyframe alone, ahead
    monkeypatch.setattr(video, "_keyframe_decoders", lambda source, stream: None)
    for (fps, kind), frames in ahead.items():
        alone = decode_video(path, fps=fps, size=None, full_frames=True, min_frames=0)
        np.testing.assert_array_equal(frames, alone, err_msg=f"{name} from {kind} at {fps} fps")


def test_keyframes_are_decoded_ahead_only_from_sources_opened_again_with_parameter_sets(tmp_path: Path) -> None:
    """A file object cannot be opened again; MJPEG has no parameter sets (`extradata`), which FFmpeg also reads
    out of a transport stream's packets."""
    mp4 = write_moving_clip(tmp_path / "clip.mp4", "libx264", {"g": "25"})
    ts = write_moving_clip(tmp_path / "clip.ts", "libx264", {"g": "25"})
    mjpeg = write_moving_clip(tmp_path / "clip.avi", "mjpeg", {})
    for source, expected in ((mp4, True), (mp4.read_bytes(), True), (ts, True), (io.BytesIO(mp4.read_bytes()), False),
                             (mjpeg, False)):
        container, stream = video._open(source)
        with container:
            decoders = video._keyframe_decoders(source, stream)
            assert (decoders is not None) == expected, source
            if decoders is not None:
                decoders.close()


def test_the_environment_sets_the_keyframe_decoders(tmp_path: Path, monkeypatch) -> None:
    mp4 = write_moving_clip(tmp_path / "clip.mp4", "libx264", {"g": "25"})
    container, stream = video._open(mp4)
    with container:
        monkeypatch.setenv("DNSVR_KEYFRAME_DECODERS", "0")
        assert video.keyframe_decoder_count() == 0 and video._keyframe_decoders(mp4, stream) is None
        monkeypatch.setenv("DNSVR_KEYFRAME_DECODERS", "3")
        decoders = video._keyframe_decoders(mp4, stream)
        assert decoders.pool._max_workers == 3
        decoders.close()
        monkeypatch.setenv("DNSVR_KEYFRAME_DECODERS", "two")
        with pytest.raises(ValueError, match="DNSVR_KEYFRAME_DECODERS must be a whole number"):
            video._keyframe_decoders(mp4, stream)


def test_a_keyframe_decoded_ahead_is_the_keyframe_decoded_alone(tmp_path: Path) -> None:
    path = write_moving_clip(tmp_path / "clip.mp4", "libx264", {"g": "25", "bf": "2"})
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [packet for packet in container.demux(stream) if packet.size and packet.is_keyframe]
        alone = []
        for packet in keyframes:
            alone.append([frame.to_ndarray(format="rgb24") for frame in stream.codec_context.decode(packet)]
                         + [frame.to_ndarray(format="rgb24") for frame in stream.codec_context.decode(None)])
            stream.codec_context.flush_buffers()
        decoders = video.KeyframeDecoders(lambda: video._open(path), workers=2)
        try:
            for key, packet in enumerate(keyframes):
                decoders.submit(key, packet)
            decoders.discard(len(keyframes) - 1)
            assert not decoders.submitted(len(keyframes) - 1)
            for key, frames in enumerate(alone[:-1]):
                got = [frame.to_ndarray(format="rgb24") for frame in decoders.result(key)]
                assert len(got) == len(frames) == 1
                np.testing.assert_array_equal(got[0], frames[0])
        finally:
            decoders.close()


def test_the_sample_videos_decode_as_every_frame_would(videos_dir: Path) -> None:
    for path in sorted(videos_dir.glob("*.mp4")):
        expected = every_frame_sampled(path, 1.0)
        frames = decode_video(path, size=None, full_frames=True, min_frames=0)
        assert len(frames) == len(expected), path.name
        assert all(np.array_equal(got, want) for got, want in zip(frames, expected, strict=True)), path.name


@pytest.mark.parametrize(("seconds", "padded"), [(1, 4), (2, 4), (3, 6)])
def test_short_clips_are_repeated_to_four_frames(tmp_path: Path, seconds: int, padded: int) -> None:
    times = [i / 10 for i in range(10 * seconds)]
    path = write_video(tmp_path / f"short{seconds}.mp4", times, [20 + 2 * i for i in range(len(times))])
    raw = decode_video(path, min_frames=0)
    assert len(raw) == seconds
    frames = decode_video(path)
    assert len(frames) == padded
    np.testing.assert_array_equal(frames, np.concatenate([raw] * (padded // seconds)))


def test_pad_frames_rule() -> None:
    assert [len(pad_frames(np.zeros((n, 2)))) for n in (1, 2, 3, 4, 7)] == [4, 4, 6, 4, 7]
    with pytest.raises(ValueError, match="empty"):
        pad_frames(np.zeros((0, 2)))


def test_display_matrix_rotation_is_applied(tmp_path: Path) -> None:
    """A 64x32 clip with a white top-left corner and the display matrix of "rotate 90 degrees clockwise"."""
    path = tmp_path / "landscape.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        image = np.zeros((32, 64, 3), np.uint8)
        image[:8, :8] = 255
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    data = bytearray(path.read_bytes())
    matrix = data.find(b"tkhd") + 44
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    assert probe_video(rotated).rotation == 270
    frame = decode_video(rotated, size=None, full_frames=True, min_frames=0)[0, ..., 0].astype(int)
    assert frame.shape == (64, 32)
    assert frame[:6, -6:].mean() > 200 and frame[:6, :6].mean() < 50, "white corner belongs top right"


def test_bad_inputs_raise_clear_errors(tmp_path: Path, videos_dir: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((videos_dir / "doorknob-hd-no-bar.mp4").read_bytes()[:4000])
    audio = write_audio(tmp_path / "tone.wav")
    no_frames = write_audio(tmp_path / "no-frames.mkv", with_empty_video=True)
    cases = [
        (empty, "empty"),
        (b"", "empty"),
        (tmp_path / "missing.mp4", "no such file"),
        (text, "text file"),
        (truncated, "not a readable video"),
        (np.random.default_rng(0).bytes(20000), "not a readable video"),
        (audio, "no video stream"),
        (no_frames, "no decodable frame"),
    ]
    for source, message in cases:
        with pytest.raises(VideoDecodeError, match=message) as error:
            decode_video(source)
        if isinstance(source, Path):
            assert source.name in str(error.value)
    assert issubclass(VideoDecodeError, ValueError)
