"""Video decoding with PyAV: frames sampled by presentation time, resized and centre-cropped for the CNN.

`decode_video(source)` -> uint8 `[T, crop, crop, 3]` RGB, one frame per second by default.

Sampling rule: timestamps are `pts * time_base` measured from the first decoded frame (so streams with a
`start_time` offset or an edit list start at 0). For every target time `k / fps` (k = 0, 1, ...) the first
decoded frame whose timestamp is >= the target is taken; targets after the last frame are not sampled, so a
clip of duration d seconds gives about `d * fps` frames whatever its frame rate (variable rates included).
A frame may be taken for several targets when the stream has a gap longer than `1 / fps`, which keeps the
sampled sequence uniform in time. Frames without a pts get one extrapolated from the previous frame and the
stream's average rate.

Frames are turned upright by the stream's display matrix (phone videos, as FFmpeg's autorotate does) and
stretched to square pixels when the sample aspect ratio is not 1, before resizing.

Every call opens its own container, so the functions are safe to call from several threads at once; each
decoder also uses FFmpeg's own frame/slice threads (`thread_type = "AUTO"`), and a decode that takes keyframes
alone (1 fps) has them decoded ahead on KEYFRAME_DECODERS decoders of its own (`keyframe_decoders`;
$DNSVR_KEYFRAME_DECODERS, 0: none).

`decode_cached(path, fps, max_frames, cache_dir)` is `decode_video` of a file remembered as `.npy` under
`cache_dir`, keyed by the file's SHA-256 and the decode settings, written atomically.

`sampled_frames(source, ...)` yields the same frames one at a time, as they are decoded (the served pipeline
runs the extractor on the first ones while the next decode).

`decode_video_with_crops(source, clip_size, clip_max_frames)` decodes once for both students: the DnS frames
above, and the text-video student's crops of the same sampled frames, made from the native frames as the
official CLIP4Clip / TeachCLIP loader makes them (`dnsvr.training.data.clip_frames`: at most `clip_max_frames`
frames chosen uniformly, shorter side to `clip_size` with PIL bicubic, centre crop).
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training import paths
from dnsvr.training.data.keyframe_decoders import KeyframeDecoders
from dnsvr.training.files import atomic_path, file_sha256

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

KEYFRAME_DECODERS = 2  # decoders that decode keyframes alone ahead of the decode ($DNSVR_KEYFRAME_DECODERS)
KEYFRAMES_AHEAD = 3  # groups of pictures looked at ahead for them

# FFmpeg demuxers that turn any text file into a "video" of rendered characters.
TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


class VideoDecodeError(ValueError):
    """A video could not be decoded; the message names the source and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream: duration (s), average fps, coded size, codec,
    frame count (the container's, else duration x fps) and the display rotation in degrees counter-clockwise
    (0, 90, 180, 270; read from the first decoded frame)."""

    duration: float | None
    fps: float | None
    width: int
    height: int
    codec: str
    frame_count: int | None
    rotation: int


def source_name(source: VideoSource) -> str:
    """A short human-readable name for `source` to put in messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def _open(source: VideoSource) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise VideoDecodeError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"{name}: the file is empty")
        handle: str | BinaryIO = os.fspath(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError(f"{name}: the input is empty (0 bytes)")
        handle = io.BytesIO(bytes(source))
    else:
        handle = source
    try:
        container = av.open(handle, mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{name}: not a readable video container ({error})") from error
    if container.format.name in TEXT_DEMUXERS:
        container.close()
        raise VideoDecodeError(f"{name}: a text file, not a video (FFmpeg would render it as ANSI art)")
    if not container.streams.video:
        kinds = ", ".join(stream.type for stream in container.streams) or "no streams"
        container.close()
        raise VideoDecodeError(f"{name}: the container has no video stream ({kinds})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def probe_video(source: VideoSource) -> VideoInfo:
    """Probe a video (path, bytes or binary file) without decoding more than one frame; see VideoInfo."""
    container, stream = _open(source)
    with container:
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        if stream.duration is not None and stream.time_base is not None:
            duration: float | None = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        frame_count = stream.frames or (round(duration * fps) if duration and fps else None)
        rotation = 0
        for frame in container.decode(stream):
            rotation = _rotation_steps(frame) * 90
            break
        return VideoInfo(
            duration=duration,
            fps=fps,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
            frame_count=frame_count,
            rotation=rotation,
        )


def _rotation_steps(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise that the stream's display matrix asks for (0-3)."""
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4


class _Targets:
    """The sampling clock shared by the decoder loop and the sampler: the times `k / fps` after the first decoded
    frame's time (`origin`), and `index` k of the first one no frame has been taken for yet."""

    TOLERANCE = 1e-6

    def __init__(self, fps: float):
        self.fps = fps
        self.origin: float | None = None
        self.index = 0

    def taken_through(self, time: float, index: int) -> int:
        """The index of the first target after those (from `index` on) that a frame at `time` is taken for."""
        while (time - self.origin) >= index / self.fps - self.TOLERANCE:
            index += 1
        return index


def _groups_of_pictures(container: av.container.InputContainer,
                        stream: av.video.stream.VideoStream) -> Iterator[list[av.Packet]]:
    """The stream's packets in decoding order, cut before every keyframe (the first group may start without
    one); the demuxer's empty end-of-stream packet is left out."""
    group: list[av.Packet] = []
    for packet in container.demux(stream):
        if packet.size == 0:
            break
        if packet.is_keyframe and group:
            yield group
            group = []
        group.append(packet)
    if group:
        yield group


def _taken_through(times: list[float], targets: _Targets) -> tuple[int, float | None]:
    """For one group of pictures whose frames show at `times`, all decoded: the index of the first target after
    those its frames are taken for, and the time of the last frame taken (None: none is)."""
    index, last = targets.index, None
    for time in sorted(times):
        after = targets.taken_through(time, index)
        if after > index:
            index, last = after, time
    return index, last


def _packets_needed(times: list[float], targets: _Targets) -> tuple[int, bool]:
    """For one group of pictures whose packets (decoding order) show at `times`: how many of its first packets
    must be decoded for every target its frames are taken for (0: none is taken), and whether a frame shown
    before its keyframe (an open group's leading picture, which refers to the group before) is among them.

    Frames are taken in display order.  The group's frames shown after the last one taken are never needed,
    since every later target lies after the whole group; those shown before the first pending target cannot be
    taken.  Every frame shown between them is decoded, so each target gets the first frame at or after it, as in
    a decode of every frame."""
    _, last = _taken_through(times, targets)
    if last is None:
        return 0, False
    taken = [position for position, time in enumerate(times)  # shown from the first target through the last
             if targets.taken_through(time, targets.index) > targets.index and time <= last + _Targets.TOLERANCE]
    return taken[-1] + 1, any(times[position] < times[0] for position in taken)


class _Ahead:
    """An iterator that can show its next items before they are taken; an error met while looking ahead is
    raised where it was met, after the items before it."""

    def __init__(self, items: Iterator):
        self.items, self.buffer, self.error = items, deque(), None

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self):
        if self.buffer:
            return self.buffer.popleft()
        if self.error is not None:
            raise self.error
        return next(self.items)

    def peek(self, count: int) -> list:
        """The next `count` items (fewer at the end or before an error), without taking them."""
        while len(self.buffer) < count and self.error is None:
            try:
                self.buffer.append(next(self.items))
            except StopIteration:
                break
            except av.FFmpegError as error:
                self.error = error
        return list(self.buffer)[:count]


def _group_times(group: list[av.Packet], time_base: Fraction | None) -> list[float] | None:
    """The presentation times in seconds of a group's packets (decoding order); None when one has no pts."""
    if time_base is None or any(packet.pts is None for packet in group):
        return None
    return [float(packet.pts * time_base) for packet in group]


def _alone(group: list[av.Packet], needed: int, leading: bool, continued: bool) -> bool:
    """Whether `_timed_frames` decodes this group as its keyframe alone from a flushed decoder: one packet needed of
    several, a keyframe, no earlier group decoded first, and no decode running on from the group before."""
    return needed == 1 < len(group) and group[0].is_keyframe and not leading and not continued


def _timed_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str, targets: _Targets,
    keyframes: KeyframeDecoders | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their presentation time in seconds (pts * time_base, extrapolated if missing), in
    display order within each decode, decoding of each group of pictures only what the targets need.

    Packets are demuxed (cheap) a group of pictures (keyframe to keyframe) at a time; `_packets_needed` says how
    many of a group's packets in decoding order hold every frame a target is taken from.  Only those are decoded
    (none for a group no target falls in), then the decoder is drained and reset, so no frame is decoded just to
    push the wanted one out of the decoder's reordering and threading delay.  A group needed whole leaves the
    decoder running into the next group (open groups of pictures refer across the keyframe); a group whose
    needed leading pictures refer to a group that was not decoded whole gets that group decoded first.  Every
    frame taken is decoded from its keyframe on, as in a decode of every frame, so the same frames are taken.

    Timing: the first group's keyframe gives the clock's origin; a group with a packet lacking a timestamp is
    decoded whole.  Threads: when the first group needs at most two packets (a keyframe per sampled time or
    more often, the common case of 1-2 s groups at 1 fps), the decoder uses slice threads, which split one
    picture; otherwise FFmpeg's choice (frame threads, which overlap consecutive pictures).

    Keyframes decoded ahead (`keyframes`): of the next KEYFRAMES_AHEAD groups of pictures, those that the targets,
    as they stand after this group, will have decoded as their keyframe alone (`_alone`) go to `keyframes`, which
    decodes them on decoders of their own meanwhile; such a group then takes those frames, the ones this decoder
    would give (a keyframe decoded alone after a flush).  A group planned otherwise than foreseen is decoded here,
    as without `keyframes`.
    """
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    codec = stream.codec_context
    time_base = stream.time_base  # the packets' (frames decoded late by threads or the drain may carry none)
    previous_time: float | None = None  # time of the last frame out of the decoder
    fed = False  # packets were fed since the decoder was last drained and reset
    whole = False  # ... and they are whole groups of pictures, through the previous group
    earlier: list[av.Packet] = []  # the previous group's packets

    def with_times(frames: Iterator[av.VideoFrame]) -> Iterator[tuple[float, av.VideoFrame]]:
        nonlocal previous_time
        for frame in frames:
            if frame.pts is not None and time_base is not None:
                time = float(frame.pts * time_base)
            elif previous_time is not None:
                time = previous_time + 1.0 / float(rate)
            else:
                time = 0.0
            previous_time = time
            yield time, frame

    def decoded(packets: list[av.Packet | None]) -> Iterator[tuple[float, av.VideoFrame]]:
        for packet in packets:
            yield from with_times(codec.decode(packet))

    def foresee(number: int, times: list[float], continued: bool) -> None:
        """Hand `keyframes` the groups after group `number` (its frames at `times`) that will be decoded alone."""
        ahead = _Targets(targets.fps)
        ahead.origin, (ahead.index, _) = targets.origin, _taken_through(times, targets)
        for later, following in enumerate(groups.peek(KEYFRAMES_AHEAD), start=number + 1):
            following_times = _group_times(following, time_base)
            if following_times is None:
                return
            needed, leading = _packets_needed(following_times, ahead)
            if _alone(following, needed, leading, continued):
                keyframes.submit(later, following[0])
            continued = needed == len(following)
            ahead.index, _ = _taken_through(following_times, ahead)

    def drained() -> Iterator[tuple[float, av.VideoFrame]]:
        nonlocal fed, whole
        if fed:
            yield from decoded([None])
            codec.flush_buffers()
        fed = whole = False

    groups = _Ahead(_groups_of_pictures(container, stream))
    try:
        for number, group in enumerate(groups):
            times = _group_times(group, time_base)
            timed = times is not None
            if timed and targets.origin is None and group[0].is_keyframe and times[0] == min(times):
                targets.origin = times[0]
            if timed and targets.origin is not None:
                needed, leading = _packets_needed(times, targets)
            else:
                needed, leading = len(group), False
            if number == 0 and not codec.is_open:
                stream.thread_type = "SLICE" if needed <= 2 else "AUTO"
            alone = keyframes is not None and _alone(group, needed, leading, whole)
            if keyframes is not None and timed and targets.origin is not None:
                foresee(number, times, needed == len(group))
            if alone and keyframes.submitted(number):
                yield from drained()
                yield from with_times(iter(keyframes.result(number)))
            elif not needed:
                yield from drained()
            else:
                if not whole:
                    yield from drained()
                    if leading and earlier:
                        fed = True
                        yield from decoded(earlier)
                fed = True
                yield from decoded(group[:needed])
                whole = needed == len(group)
                if not whole:
                    yield from drained()
            if keyframes is not None and not alone:
                keyframes.discard(number)
            earlier = group
        yield from drained()
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{name}: decoding failed ({error})") from error


def _sample_by_time(
    frames: Iterator[tuple[float, av.VideoFrame]], targets: _Targets, max_frames: int | None
) -> Iterator[av.VideoFrame]:
    """The first frame at or after each target time (see `_Targets`), advancing `targets` as frames are taken."""
    for time, frame in frames:
        if targets.origin is None:
            targets.origin = time
        taken = targets.taken_through(time, targets.index)
        while targets.index < taken:
            yield frame
            targets.index += 1
            if max_frames is not None and targets.index >= max_frames:
                return


def _to_rgb(frame: av.VideoFrame, aspect: Fraction | None) -> np.ndarray:
    """One frame as uint8 `[H, W, 3]` RGB at display orientation, square pixels (`aspect`: pixel w/h)."""
    image = frame.to_ndarray(format="rgb24")
    steps = _rotation_steps(frame)
    if steps:
        image = np.ascontiguousarray(np.rot90(image, k=steps))
    if aspect and aspect != 1 and aspect > 0:
        height, width = image.shape[:2]
        if steps % 2:
            height = max(1, round(height / float(aspect)))
        else:
            width = max(1, round(width * float(aspect)))
        image = _resize(image, height, width)
    return image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of uint8 `[H, W, 3]` to `[height, width, 3]` (deterministic, on CPU).

    PyTorch's uint8 kernel on the channels-last view (fixed-point weights, as Pillow's): 5x faster on a 720p
    frame than the same filter in float32 (34 vs 177 ms for 30 frames), within 1 grey level of it.
    """
    if image.shape[:2] == (height, width):
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W] channels-last
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True)  # uint8 [1, 3, h, w]
    return resized[0].permute(1, 2, 0).contiguous().numpy()


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[H, W, 3]` -> `[H', W', 3]` with min(H', W') = size, aspect kept (longer side rounded)."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return _resize(image, max(size, round(height * scale)), max(size, round(width * scale)))


def center_crop(image: np.ndarray, crop: int) -> np.ndarray:
    """uint8 `[H, W, 3]` -> `[crop, crop, 3]` from the centre (odd margins put the extra pixel after)."""
    height, width = image.shape[:2]
    if height < crop or width < crop:
        image = resize_shorter_side(image, crop)
        height, width = image.shape[:2]
    top, left = (height - crop) // 2, (width - crop) // 2
    return image[top : top + crop, left : left + crop]


def pad_frames(frames: np.ndarray, min_frames: int = 4) -> np.ndarray:
    """Concatenate a video `[T, ...]` with itself until it has >= min_frames frames (1->2->4, 2->4, 3->6).

    This is the reference loaders' rule for clips shorter than the 4 frames the networks need; applied to
    decoded frames or to features alike. An empty array is an error, not something to repeat.
    """
    if len(frames) == 0:
        raise ValueError("cannot pad an empty video (0 frames)")
    while len(frames) < min_frames:
        frames = np.concatenate([frames, frames], axis=0)
    return frames


def _sampled_images(source: VideoSource, fps: float, max_frames: int | None) -> Iterator[tuple[np.ndarray, bool]]:
    """(uint8 `[H, W, 3]` RGB at display orientation and square pixels, whether it is a new frame) for every
    sampled time; a frame taken for several targets is yielded again as the same array."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    name = source_name(source)
    container, stream = _open(source)
    aspect = stream.codec_context.sample_aspect_ratio
    previous, image = None, None
    keyframes = _keyframe_decoders(source, stream)
    try:
        with container:
            targets = _Targets(fps)
            frames = _timed_frames(container, stream, name, targets, keyframes)
            for frame in _sample_by_time(frames, targets, max_frames):
                new = frame is not previous
                if new:
                    image = _to_rgb(frame, aspect)
                    previous = frame
                yield image, new
    finally:
        if keyframes is not None:
            keyframes.close()


def _keyframe_decoders(source: VideoSource, stream: av.video.stream.VideoStream) -> KeyframeDecoders | None:
    """Decoders of keyframes ahead for `source` when it can be opened again (a path or bytes) and its stream's
    parameter sets come apart from its packets (`extradata`, as MP4 and Matroska hold them), so a decoder that
    starts at any keyframe has them; else None (one decoder, as before)."""
    workers = keyframe_decoder_count()
    if not workers or not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) \
            or not stream.codec_context.extradata:
        return None
    index = stream.index

    def reopen() -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        container, _ = _open(source)
        return container, container.streams[index]

    return KeyframeDecoders(reopen, workers)


def keyframe_decoder_count() -> int:
    """$DNSVR_KEYFRAME_DECODERS (0: none), else KEYFRAME_DECODERS; ValueError naming the variable if malformed."""
    value = paths.environment(paths.KEYFRAME_DECODERS)
    if value is None:
        return KEYFRAME_DECODERS
    if not value.strip().isdigit():
        raise ValueError(f"{paths.KEYFRAME_DECODERS} must be a whole number >= 0 (0: none), got {value!r}")
    return int(value)


def _model_frame(image: np.ndarray, size: int | None, crop: int, full_frames: bool) -> np.ndarray:
    image = resize_shorter_side(image, size) if size is not None else image
    return image if full_frames else center_crop(image, crop)


def decode_video(
    source: VideoSource,
    fps: float = 1.0,
    size: int | None = 256,
    crop: int = 224,
    full_frames: bool = False,
    max_frames: int | None = None,
    min_frames: int = 4,
) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) into uint8 RGB frames sampled at `fps` by timestamp.

    Each sampled frame is rotated to display orientation, resized so its shorter side is `size` (antialiased
    bilinear; `size=None` keeps the native resolution) and centre-cropped to `crop` x `crop`, giving
    `[T, crop, crop, 3]`. With `full_frames=True` nothing is cropped and the result is `[T, H, W, 3]` with
    min(H, W) = size (native H, W when size is None). `max_frames` stops decoding after that many sampled
    frames. Clips with fewer than `min_frames` sampled frames are repeated with `pad_frames` (0 disables).

    Raises VideoDecodeError (a ValueError) for missing, empty, non-video or corrupt input, a container
    without a video stream, or a stream with no decodable frame.
    """
    images: list[np.ndarray] = []
    for image, new in _sampled_images(source, fps, max_frames):
        images.append(_model_frame(image, size, crop, full_frames) if new else images[-1])
    if not images:
        raise VideoDecodeError(f"{source_name(source)}: the video stream has no decodable frame")
    frames = np.stack(images)
    return pad_frames(frames, min_frames) if min_frames > 0 else frames


def decode_video_with_crops(
    source: VideoSource,
    clip_size: int,
    clip_max_frames: int,
    fps: float = 1.0,
    size: int | None = 256,
    crop: int = 224,
    max_frames: int | None = None,
    min_frames: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """One decode, two students: (`decode_video(source, fps, size, crop, max_frames=max_frames,
    min_frames=min_frames)`, the text-video student's crops uint8 `[n, clip_size, clip_size, 3]` of the same
    sampled frames, n = min(sampled frames, clip_max_frames), chosen by `clip_frames.select_frame_indices`).

    Crops come from the native frames (`clip_frames.resize_and_crop`); the sampled frames before any repetition
    of a short clip are the ones chosen from.  Raises VideoDecodeError as decode_video.
    """
    from dnsvr.training.data.clip_frames import select_frame_indices

    sampled = list(sampled_frames(source, fps, size, crop, max_frames, clip_size))
    frames = np.stack([frame for frame, _ in sampled])
    chosen = np.stack([sampled[i][1] for i in select_frame_indices(len(sampled), clip_max_frames)])
    return (pad_frames(frames, min_frames) if min_frames > 0 else frames), chosen


def sampled_frames(
    source: VideoSource,
    fps: float = 1.0,
    size: int | None = 256,
    crop: int = 224,
    max_frames: int | None = None,
    clip_size: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Decode `source` frame by frame: for every sampled time (as `decode_video`, without the repetition of
    short clips), (uint8 `[crop, crop, 3]` the model frame, uint8 `[clip_size, clip_size, 3]` the text-video
    student's crop of the native frame, or None without `clip_size`).  Each pair is yielded as soon as its
    frame is decoded, so a consumer can work on the first frames while the next ones decode.

    Raises VideoDecodeError as decode_video (after the frames decoded before a corrupt part).
    """
    from dnsvr.training.data.clip_frames import resize_and_crop

    frame: np.ndarray | None = None
    clip: np.ndarray | None = None
    for image, new in _sampled_images(source, fps, max_frames):
        if new:
            frame = _model_frame(image, size, crop, False)
            clip = resize_and_crop(image, clip_size) if clip_size else None
        yield frame, clip
    if frame is None:
        raise VideoDecodeError(f"{source_name(source)}: the video stream has no decodable frame")


DECODE_VERSION = 2  # bump when the decode settings' meaning changes, to invalidate cached frames


def decode_cached(path: Path, fps: float, max_frames: int, cache_dir: Path) -> np.ndarray:
    """Decode `path` to uint8 `[T, 224, 224, 3]` at `fps` via `decode_video`, cached by content hash."""
    key = f"{file_sha256(path)[:32]}-fps{fps:g}-max{max_frames}-v{DECODE_VERSION}.npy"
    cached = cache_dir / key
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    frames = decode_video(path, fps=fps, max_frames=max_frames)
    with atomic_path(cached) as partial, open(partial, "wb") as handle:
        np.save(handle, frames, allow_pickle=False)
    return frames
