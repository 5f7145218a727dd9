"""Synthetic videos from real photographs and the near-duplicate edits applied to them, with ground truth.

Photographs are the real images bundled with scikit-image (`skimage.data`, no network) and matplotlib's
`grace_hopper.jpg` (`ALL_PHOTOS`; `PHOTOS` is the original set the benchmark presets draw from).  A synthetic video
is a sequence of shots; each shot is a virtual camera moving over one photograph (pan, zoom, a slight
rotation and hand-held jitter), and shots cut from one photograph to the next.  Frames follow the decoder's
convention: uint8 RGB `[T, S, S, 3]` (S = 224) at one frame per second.

Edits turn a video into a near-duplicate.  Each is an `EditRecord(name, params)` whose params fully
determine the result, so a record is replayable: `apply_edit(frames, record)`.  `sample_edit` draws the
params of one edit from a seeded generator at a strength in [0, 1] (0 = barely visible, 1 = as strong as
near-duplicate edits get); `edit_video` chains several.  Spatial edits keep the frame size; temporal edits
(speed, trim, drop_frames) change T.  `reencode` really goes through PyAV: H.264 at a low bit rate into an
in-memory mp4, decoded back with `dnsvr.training.data.video.decode_video`.  `encode_mp4`/`write_mp4` write frames
as an mp4 so the real decode path can be exercised.

The catalogue: `EDIT_NAMES` are the original edits (what the unlabelled corpus and the benchmark presets
tiny/small/medium draw; their draws never change), `EXTRA_EDIT_NAMES` the harder ones, drawn only where a
caller names them: picture-in-picture at three inset bands (`pip_small` ~0.25, `pip_medium` ~0.4,
`pip_large` ~0.6 of the frame, over a still photo or over moving footage), `partial` (a segment of the source
spliced between two segments of an unrelated video), `rot90` (quarter turns), `rotate` (a small angle, black
corners) and `frame_rate` (a frame-rate conversion by blending neighbouring frames).  `frame_map` tells which
source frame each frame of an edited copy shows (-1: foreign footage), `copied_span` the span copied.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from dnsvr.training.files import atomic_write_bytes
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter

FRAME_SIZE = 224

# Real photographs in skimage.data that load offline (colour first; greyscale ones are repeated to RGB).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "clock",
    "cell",
)
COLOUR_PHOTOS = PHOTOS[:8]
# More real photographs that ship offline: matplotlib's sample photo and two skimage scans.
EXTRA_PHOTOS = ("grace_hopper", "page", "text")
ALL_PHOTOS = PHOTOS + EXTRA_PHOTOS

EDIT_NAMES = (
    "crop",
    "rescale",
    "flip",
    "colour",
    "greyscale",
    "blur",
    "reencode",
    "overlay",
    "borders",
    "picture_in_picture",
    "speed",
    "trim",
    "drop_frames",
)
EXTRA_EDIT_NAMES = ("pip_small", "pip_medium", "pip_large", "partial", "rot90", "rotate", "frame_rate")
ALL_EDIT_NAMES = EDIT_NAMES + EXTRA_EDIT_NAMES
TEMPORAL_EDITS = frozenset({"speed", "trim", "drop_frames", "partial"})
# The catalogue by what an edit changes (every name in exactly one family): a chain takes at most one of each.
EDIT_FAMILIES = {
    "geometric": ("crop", "rescale", "flip", "borders", "picture_in_picture", "pip_small", "pip_medium",
                  "pip_large", "rot90", "rotate"),
    "photometric": ("colour", "greyscale", "blur", "reencode", "overlay"),
    "temporal": ("speed", "trim", "drop_frames", "partial", "frame_rate"),
}
# Picture-in-picture inset bands: the inset's side as a fraction of the frame's.
PIP_BANDS = {"pip_small": (0.2, 0.3), "pip_medium": (0.35, 0.45), "pip_large": (0.55, 0.65)}


@dataclass(frozen=True)
class EditRecord:
    """One applied edit: its name (one of EDIT_NAMES) and the params that reproduce it exactly."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditRecord:
        return cls(data["name"], dict(data["params"]))


def _check_frames(frames: np.ndarray) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {dtype} {shape}")
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame, got T = 0")


@cache
def load_photo(name: str) -> np.ndarray:
    """A bundled photograph (one of ALL_PHOTOS) as uint8 `[H, W, 3]` RGB (read-only, cached)."""
    if name not in ALL_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {ALL_PHOTOS}")
    if name == "grace_hopper":
        from dnsvr.training import paths

        folder = paths.package_data_dir("matplotlib", "mpl-data", "sample_data")
        if folder is None:
            raise FileNotFoundError("grace_hopper.jpg ships with matplotlib, which is not installed")
        image = np.asarray(Image.open(folder / "grace_hopper.jpg").convert("RGB"))
    else:
        image = getattr(skimage.data, name)()
    if isinstance(image, tuple):
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3].astype(np.uint8))
    image.flags.writeable = False
    return image


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> `[T, height, width, 3]` (antialiased bilinear)."""
    if frames.shape[1:3] == (height, width):
        return frames.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    resized = F.interpolate(
        tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def camera_shot(
    photo: np.ndarray,
    num_frames: int,
    start: dict[str, float],
    end: dict[str, float],
    jitter: np.ndarray | None = None,
    size: int = FRAME_SIZE,
) -> np.ndarray:
    """A virtual camera moving over `photo` uint8 `[H, W, 3]` -> uint8 `[num_frames, size, size, 3]`.

    start/end: {'x', 'y'} view centre in [0, 1] of the photo, 'zoom' in (0, 1] (1 = the largest square that
    fits), 'angle' in degrees.  The view moves with an ease-in/out from start to end; `jitter` `[T, 2]`
    adds a hand-held offset to the centre (fractions of the view size).
    """
    height, width = photo.shape[:2]
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    ease = t * t * (3 - 2 * t)

    def along(key: str) -> np.ndarray:
        return start[key] + (end[key] - start[key]) * ease

    half = along("zoom") * min(height, width) / 2
    centre_x, centre_y = along("x") * width, along("y") * height
    if jitter is not None:
        centre_x = centre_x + jitter[:, 0] * 2 * half
        centre_y = centre_y + jitter[:, 1] * 2 * half
    angle = np.deg2rad(along("angle"))
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.zeros((num_frames, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = half * cos / (width / 2)
    theta[:, 0, 1] = -half * sin / (width / 2)
    theta[:, 0, 2] = centre_x / (width / 2) - 1
    theta[:, 1, 0] = half * sin / (height / 2)
    theta[:, 1, 1] = half * cos / (height / 2)
    theta[:, 1, 2] = centre_y / (height / 2) - 1
    image = torch.tensor(photo).permute(2, 0, 1).float().unsqueeze(0)
    # Sample at twice the size, then downsample with antialiasing, so zoomed-out views do not alias.
    grid = F.affine_grid(torch.from_numpy(theta), [num_frames, 3, 2 * size, 2 * size], align_corners=False)
    views = F.grid_sample(
        image.expand(num_frames, -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    views = F.interpolate(views, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return views.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _random_view(rng: np.random.Generator) -> dict[str, float]:
    zoom = float(rng.uniform(0.45, 0.95))
    margin = zoom / 2 + 0.02
    return {
        "x": float(rng.uniform(margin, 1 - margin)) if margin < 0.5 else 0.5,
        "y": float(rng.uniform(margin, 1 - margin)) if margin < 0.5 else 0.5,
        "zoom": zoom,
        "angle": float(rng.uniform(-3.0, 3.0)),
    }


@dataclass
class SyntheticVideo:
    """frames: uint8 `[T, S, S, 3]`; shots: {'photo', 'start_frame', 'num_frames', 'start', 'end'} each."""

    frames: np.ndarray
    shots: list[dict[str, Any]]


def synthetic_video(
    seed: int,
    num_frames: int = 16,
    photos: Sequence[str] | None = None,
    max_shots: int = 3,
    size: int = FRAME_SIZE,
) -> SyntheticVideo:
    """A deterministic video of 1 to `max_shots` camera shots, each over one photo from `photos`.

    photos: the photographs this video may use (default: all of PHOTOS); each shot takes a different one
    when there are enough.  The same arguments always give the same frames.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    pool = list(PHOTOS if photos is None else photos)
    if not pool:
        raise ValueError("photos must name at least one photograph")
    rng = np.random.default_rng(seed)
    num_shots = int(rng.integers(1, min(max_shots, len(pool), max(1, num_frames // 3)) + 1))
    cuts = (
        np.sort(rng.choice(np.arange(1, num_frames), size=num_shots - 1, replace=False))
        if num_shots > 1
        else []
    )
    bounds = [0, *map(int, cuts), num_frames]
    chosen = rng.choice(len(pool), size=num_shots, replace=False)
    shots, parts = [], []
    for shot, (first, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        photo = pool[int(chosen[shot])]
        start, end = _random_view(rng), _random_view(rng)
        jitter = rng.normal(0.0, 0.006, size=(stop - first, 2))
        parts.append(camera_shot(load_photo(photo), stop - first, start, end, jitter, size))
        shots.append(
            {"photo": photo, "start_frame": first, "num_frames": stop - first, "start": start, "end": end}
        )
    return SyntheticVideo(np.concatenate(parts), shots)


def encode_mp4(
    frames: np.ndarray,
    fps: float = 1.0,
    codec: str = "libx264",
    bitrate: int | None = None,
    crf: int | None = None,
) -> bytes:
    """uint8 `[T, H, W, 3]` (H, W even) -> mp4 bytes (yuv420p) at `fps`; `bitrate` in bit/s or x264 `crf`."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {height}x{width}")
    import av  # the encoder: only here, so that the edits themselves import without a video library

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Reproducible output: one thread, and no macroblock-tree rate control (with it this libx264 build
        # gives a different bitstream now and then for the same input, measured over repeated encodes).
        stream.codec_context.thread_count = 1
        options = {"threads": "1"}
        if codec == "libx264":
            options["x264-params"] = "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"
        if bitrate is not None:
            stream.bit_rate = int(bitrate)
        if crf is not None:
            options["crf"] = str(crf)
        stream.codec_context.options = options
        for index, image in enumerate(frames):
            # Convert explicitly, so the encoder sees exactly these yuv420p planes.
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def write_mp4(
    frames: np.ndarray,
    path: str | Path,
    fps: float = 1.0,
    codec: str = "libx264",
    bitrate: int | None = None,
    crf: int | None = None,
) -> Path:
    """Write uint8 `[T, H, W, 3]` as an mp4 file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    data = encode_mp4(frames, fps, codec, bitrate, crf)
    atomic_write_bytes(path, data)
    return path


# Edits: each `(frames, **params) -> frames`, frames uint8 [T, S, S, 3].


def crop(frames: np.ndarray, top: float, left: float, height: float, width: float) -> np.ndarray:
    """Keep the box (fractions of the frame) and resize it back to the frame size."""
    size_h, size_w = frames.shape[1:3]
    y0, x0 = round(top * size_h), round(left * size_w)
    y1, x1 = max(y0 + 1, round((top + height) * size_h)), max(x0 + 1, round((left + width) * size_w))
    return resize_frames(frames[:, y0:y1, x0:x1], size_h, size_w)


def rescale(frames: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by `factor` (< 1) and back up: the detail lost by a low-resolution copy."""
    size_h, size_w = frames.shape[1:3]
    small = resize_frames(frames, max(2, round(size_h * factor)), max(2, round(size_w * factor)))
    return resize_frames(small, size_h, size_w)


def flip(frames: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.ascontiguousarray(frames[:, :, ::-1])


def colour(
    frames: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float
) -> np.ndarray:
    """Add `brightness` ([0, 255] units), scale contrast about mid-grey and saturation, rotate hue (deg)."""
    x = frames.astype(np.float32)
    # RGB -> YIQ: hue is a rotation of the (I, Q) chroma plane, saturation its scale.
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    yiq = x @ to_yiq.T
    a = math.radians(hue)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    yiq[..., 1:] = (yiq[..., 1:] @ rotation.T) * saturation
    x = yiq @ np.linalg.inv(to_yiq).T
    x = (x - 128.0) * contrast + 128.0 + brightness
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def greyscale(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma in all three channels."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of `sigma` pixels in space only."""
    blurred = gaussian_filter(frames.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="reflect")
    return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


def reencode(frames: np.ndarray, bitrate: int, codec: str = "libx264") -> np.ndarray:
    """Encode to an mp4 at `bitrate` bit/s (1 fps) with PyAV and decode it back with `decode_video`."""
    from dnsvr.training.data.video import decode_video

    data = encode_mp4(frames, fps=1.0, codec=codec, bitrate=bitrate)
    decoded = decode_video(data, fps=1.0, size=None, full_frames=True, min_frames=0)
    if decoded.shape != frames.shape:
        raise RuntimeError(f"re-encoding changed the video shape {frames.shape} -> {decoded.shape}")
    return decoded


@lru_cache(maxsize=16)
def _overlay_image(kind: str, text: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlay (uint8 `[h, w, 3]`) and its alpha (float32 `[h, w, 1]`) scaled to `height` pixels."""
    if kind == "logo":
        logo = np.asarray(skimage.data.logo())[..., :3]
        alpha = (logo.astype(np.float32).min(-1, keepdims=True) < 235).astype(np.float32)
        width = max(1, round(logo.shape[1] * height / logo.shape[0]))
        image = resize_frames(logo[None], height, width)[0]
        alpha = (
            F.interpolate(
                torch.from_numpy(alpha).permute(2, 0, 1)[None],
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
        return image, alpha
    if kind == "text":
        font = ImageFont.load_default(size=max(6, round(height * 0.8)))
        box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        mask = Image.new("L", (box[2] + 4, height), 0)
        ImageDraw.Draw(mask).text((2, (height - box[3]) // 2), text, fill=255, font=font, stroke_width=1)
        alpha = np.asarray(mask, np.float32)[..., None] / 255.0
        return np.full((*alpha.shape[:2], 3), 255, np.uint8), alpha
    raise ValueError(f"overlay kind must be 'logo' or 'text', got {kind!r}")


def overlay(
    frames: np.ndarray, kind: str, height: float, top: float, left: float, opacity: float, text: str = ""
) -> np.ndarray:
    """Blend a logo (skimage's logo) or white text, `height` fraction of the frame, with its corner at
    (`top`, `left`) fractions, at `opacity`; the part that would leave the frame is clipped."""
    size_h, size_w = frames.shape[1:3]
    image, alpha = _overlay_image(kind, text, max(4, round(height * size_h)))
    y0, x0 = round(top * size_h), round(left * size_w)
    h, w = min(image.shape[0], size_h - y0), min(image.shape[1], size_w - x0)
    out = frames.copy()
    if h <= 0 or w <= 0:
        return out
    weight = alpha[:h, :w] * opacity
    region = out[:, y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    out[:, y0 : y0 + h, x0 : x0 + w] = np.round(region * (1 - weight) + image[:h, :w] * weight).astype(
        np.uint8
    )
    return out


def borders(frames: np.ndarray, kind: str, fraction: float) -> np.ndarray:
    """Letterbox (bars top and bottom) or pillarbox (left and right): the content is squeezed between bars
    each `fraction` of the frame, as when a video is padded to another aspect ratio."""
    size_h, size_w = frames.shape[1:3]
    out = np.zeros_like(frames)
    if kind == "letterbox":
        bar = round(fraction * size_h)
        out[:, bar : size_h - bar] = resize_frames(frames, size_h - 2 * bar, size_w)
    elif kind == "pillarbox":
        bar = round(fraction * size_w)
        out[:, :, bar : size_w - bar] = resize_frames(frames, size_h, size_w - 2 * bar)
    else:
        raise ValueError(f"borders kind must be 'letterbox' or 'pillarbox', got {kind!r}")
    return out


def host_footage(seed: int, photo: str, num_frames: int, height: int, width: int) -> np.ndarray:
    """Unrelated footage for insets and splices: one camera shot over `photo` -> uint8 `[num_frames, height,
    width, 3]`, determined by `seed`."""
    frames = synthetic_video(seed, num_frames, (photo,), max_shots=1, size=height).frames
    return frames if width == height else resize_frames(frames, height, width)


def picture_in_picture(
    frames: np.ndarray, background: str, scale: float, top: float, left: float, host_seed: int | None = None
) -> np.ndarray:
    """Shrink the video to `scale` and place it at (`top`, `left`) fractions over the photo `background`
    (a still view of all of it), or with `host_seed` over moving footage of it (`host_footage`)."""
    size_h, size_w = frames.shape[1:3]
    if host_seed is None:
        host = camera_shot(
            load_photo(background), 1, *[{"x": 0.5, "y": 0.5, "zoom": 1.0, "angle": 0.0}] * 2, size=size_h
        )[0]
        if host.shape[:2] != (size_h, size_w):
            host = resize_frames(host[None], size_h, size_w)[0]
        out = np.repeat(host[None], len(frames), axis=0)
    else:
        out = host_footage(host_seed, background, len(frames), size_h, size_w)
    inner = resize_frames(frames, max(1, round(scale * size_h)), max(1, round(scale * size_w)))
    y0 = min(round(top * size_h), size_h - inner.shape[1])
    x0 = min(round(left * size_w), size_w - inner.shape[2])
    out[:, y0 : y0 + inner.shape[1], x0 : x0 + inner.shape[2]] = inner
    return out


def speed(frames: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (> 1 drops frames, < 1 repeats them): frame k of the result is source frame
    floor(k * factor)."""
    count = max(1, round(len(frames) / factor))
    index = np.minimum(np.floor(np.arange(count) * factor).astype(np.int64), len(frames) - 1)
    return frames[index]


def trim(frames: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Keep frames [start, stop)."""
    if not 0 <= start < stop <= len(frames):
        raise ValueError(f"trim [{start}, {stop}) is outside a video of {len(frames)} frames")
    return frames[start:stop].copy()


def drop_frames(frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """Remove the frames at `indices`."""
    keep = np.setdiff1d(np.arange(len(frames)), np.asarray(indices, dtype=np.int64))
    if keep.size == 0:
        raise ValueError("drop_frames would remove every frame")
    return frames[keep]


def rot90(frames: np.ndarray, turns: int) -> np.ndarray:
    """Rotate by `turns` quarter turns counter-clockwise on screen (a non-square frame is resized back to its
    size)."""
    size_h, size_w = frames.shape[1:3]
    turned = np.ascontiguousarray(np.rot90(frames, k=int(turns), axes=(1, 2)))
    return turned if turned.shape[1:3] == (size_h, size_w) else resize_frames(turned, size_h, size_w)


def rotate(frames: np.ndarray, angle: float) -> np.ndarray:
    """Rotate by `angle` degrees clockwise on screen (rows run downwards) about the centre; corners outside the
    source are black."""
    a = math.radians(angle)
    theta = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]], dtype=torch.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta.expand(len(frames), 2, 3), list(tensor.shape), align_corners=False)
    turned = F.grid_sample(tensor, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return turned.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def frame_rate(frames: np.ndarray, phase: float) -> np.ndarray:
    """A frame-rate conversion seen at the sampling rate: each frame becomes the blend (1 - phase) * frame +
    phase * next frame (the last frame is kept), as a converter that blends frames leaves them."""
    if not 0.0 <= phase <= 1.0:
        raise ValueError(f"frame_rate phase must be in [0, 1], got {phase}")
    x = frames.astype(np.float32)
    following = np.concatenate([x[1:], x[-1:]])
    return np.clip(np.round((1 - phase) * x + phase * following), 0, 255).astype(np.uint8)


def _splice(inner: np.ndarray, outer: np.ndarray, start: int, stop: int, before: int) -> np.ndarray:
    """outer[:before] + inner[start:stop] + outer[before:] (along the first axis)."""
    if not 0 <= start < stop <= len(inner):
        raise ValueError(f"partial copy span [{start}, {stop}) is outside a video of {len(inner)} frames")
    if not 0 <= before <= len(outer):
        raise ValueError(f"partial copy: {before} host frames before the copy, but the host has {len(outer)}")
    return np.concatenate([outer[:before], inner[start:stop], outer[before:]])


def partial(
    frames: np.ndarray, host_seed: int, host_photo: str, start: int, stop: int, before: int, after: int
) -> np.ndarray:
    """A partial copy inside other footage: `before` frames of unrelated footage (`host_footage(host_seed,
    host_photo)`), source frames [start, stop), then `after` more frames of it -> `[before + stop - start +
    after, H, W, 3]`."""
    host = host_footage(host_seed, host_photo, before + after, *frames.shape[1:3]) if before + after else frames[:0]
    return _splice(frames, host, start, stop, before)


EDIT_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "crop": crop,
    "rescale": rescale,
    "flip": flip,
    "colour": colour,
    "greyscale": greyscale,
    "blur": blur,
    "reencode": reencode,
    "overlay": overlay,
    "borders": borders,
    "picture_in_picture": picture_in_picture,
    "speed": speed,
    "trim": trim,
    "drop_frames": drop_frames,
    "pip_small": picture_in_picture,
    "pip_medium": picture_in_picture,
    "pip_large": picture_in_picture,
    "partial": partial,
    "rot90": rot90,
    "rotate": rotate,
    "frame_rate": frame_rate,
}


def apply_edit(frames: np.ndarray, record: EditRecord) -> np.ndarray:
    """Replay one edit: uint8 `[T, S, S, 3]` -> uint8 `[T', S, S, 3]` (T' = T for spatial edits)."""
    _check_frames(frames)
    if record.name not in EDIT_FUNCTIONS:
        raise ValueError(f"unknown edit {record.name!r}; choose from {ALL_EDIT_NAMES}")
    return EDIT_FUNCTIONS[record.name](frames, **record.params)


def frame_map(num_frames: int, records: Sequence[EditRecord | dict[str, Any]]) -> np.ndarray:
    """int64 `[T']`: the source frame each frame of the edited copy shows (-1: foreign footage of a partial
    copy), for a source of `num_frames` frames and its recorded edits; only the temporal edits move frames."""
    shown = np.arange(num_frames)
    for record in records:
        record = record if isinstance(record, EditRecord) else EditRecord.from_dict(record)
        if record.name == "partial":
            params = record.params
            foreign = np.full(params["before"] + params["after"], -1)
            shown = _splice(shown, foreign, params["start"], params["stop"], params["before"])
        elif record.name in TEMPORAL_EDITS:
            shown = EDIT_FUNCTIONS[record.name](shown, **record.params)
    return shown


def copied_span(
    num_frames: int, records: Sequence[EditRecord | dict[str, Any]]
) -> tuple[int, int, int, int] | None:
    """Where an edited copy shows its source: (source start, source end, copy start, copy end), ends exclusive,
    from `frame_map`; None when no source frame is left."""
    shown = frame_map(num_frames, records)
    inside = np.flatnonzero(shown >= 0)
    if inside.size == 0:
        return None
    copied = shown[inside]
    return int(copied.min()), int(copied.max()) + 1, int(inside[0]), int(inside[-1]) + 1


def _lerp(low: float, high: float, strength: float) -> float:
    return low + (high - low) * strength


def sample_edit(
    name: str, rng: np.random.Generator, strength: float, num_frames: int, backgrounds: Sequence[str] = PHOTOS
) -> EditRecord:
    """Draw the params of edit `name` at `strength` in [0, 1] for a video of `num_frames` frames.

    Temporal edits keep at least min(4, num_frames) frames of the source; `backgrounds`: the photos that
    picture-in-picture and the foreign footage of partial copies may use.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    s = strength
    u = float(rng.uniform(0.8, 1.0))  # per-edit variation around the nominal strength
    if name == "crop":
        keep = _lerp(0.92, 0.6, s * u)
        top, left = rng.uniform(0, 1 - keep, size=2)
        params: dict[str, Any] = {"top": float(top), "left": float(left), "height": keep, "width": keep}
    elif name == "rescale":
        params = {"factor": _lerp(0.7, 0.25, s * u)}
    elif name in ("flip", "greyscale"):
        params = {}
    elif name == "colour":
        sign = rng.choice([-1.0, 1.0], size=4)
        params = {
            "brightness": float(sign[0] * _lerp(5, 45, s * u)),
            "contrast": float(1 + sign[1] * _lerp(0.05, 0.35, s * u)),
            "saturation": float(1 + sign[2] * _lerp(0.1, 0.6, s * u)),
            "hue": float(sign[3] * _lerp(3, 40, s * u)),
        }
    elif name == "blur":
        params = {"sigma": _lerp(0.6, 3.5, s * u)}
    elif name == "reencode":
        params = {"bitrate": int(round(_lerp(60_000, 3_000, s * u), -3)), "codec": "libx264"}
    elif name == "overlay":
        kind = str(rng.choice(["logo", "text"]))
        height = _lerp(0.1, 0.35, s * u) if kind == "logo" else _lerp(0.06, 0.16, s * u)
        params = {
            "kind": kind,
            "height": height,
            "top": float(rng.uniform(0.02, 1 - height - 0.02)),
            "left": float(rng.uniform(0.02, 0.4)),
            "opacity": _lerp(0.6, 1.0, s),
            "text": ""
            if kind == "logo"
            else str(rng.choice(["BREAKING NEWS", "LIVE", "dnsvr.tv", "REPLAY"])),
        }
    elif name == "borders":
        params = {"kind": str(rng.choice(["letterbox", "pillarbox"])), "fraction": _lerp(0.06, 0.2, s * u)}
    elif name == "picture_in_picture":
        scale = _lerp(0.75, 0.45, s * u)
        params = {
            "background": str(rng.choice(list(backgrounds))),
            "scale": scale,
            "top": float(rng.uniform(0, 1 - scale)),
            "left": float(rng.uniform(0, 1 - scale)),
        }
    elif name == "speed":
        factor = _lerp(1.15, 2.0, s * u) if rng.random() < 0.6 else _lerp(0.85, 0.5, s * u)
        factor = min(factor, num_frames / min(4, num_frames))
        params = {"factor": float(factor)}
    elif name == "trim":
        length = max(min(4, num_frames), round(num_frames * _lerp(0.85, 0.45, s * u)))
        start = int(rng.integers(0, num_frames - length + 1))
        params = {"start": start, "stop": start + length}
    elif name == "drop_frames":
        count = min(num_frames - min(4, num_frames), round(num_frames * _lerp(0.08, 0.35, s * u)))
        indices = rng.choice(num_frames, size=max(0, count), replace=False) if count > 0 else []
        params = {"indices": sorted(int(i) for i in indices)}
    elif name in PIP_BANDS:
        scale = float(rng.uniform(*PIP_BANDS[name]))
        params = {
            "background": str(rng.choice(list(backgrounds))),
            "scale": scale,
            "top": float(rng.uniform(0, 1 - scale)),
            "left": float(rng.uniform(0, 1 - scale)),
            "host_seed": int(rng.integers(2**31)) if rng.random() < 0.5 else None,
        }
    elif name == "partial":
        length = max(min(4, num_frames), round(num_frames * _lerp(0.7, 0.3, s * u)))
        start = int(rng.integers(0, num_frames - length + 1))
        foreign = max(2, round(num_frames * _lerp(0.5, 1.5, s * u)))
        before = int(rng.integers(1, foreign))
        params = {
            "host_seed": int(rng.integers(2**31)),
            "host_photo": str(rng.choice(list(backgrounds))),
            "start": start,
            "stop": start + length,
            "before": before,
            "after": foreign - before,
        }
    elif name == "rot90":
        params = {"turns": int(rng.integers(1, 4))}
    elif name == "rotate":
        params = {"angle": float(rng.choice([-1.0, 1.0]) * _lerp(4.0, 25.0, s * u))}
    elif name == "frame_rate":
        params = {"phase": _lerp(0.2, 0.5, s * u)}
    else:
        raise ValueError(f"unknown edit {name!r}; choose from {ALL_EDIT_NAMES}")
    return EditRecord(name, params)


def edit_video(
    frames: np.ndarray,
    names: Sequence[str],
    rng: np.random.Generator | int,
    strength: float,
    backgrounds: Sequence[str] = PHOTOS,
) -> tuple[np.ndarray, list[EditRecord]]:
    """Apply the edits `names` in order, params drawn from `rng` (or a seed) -> (frames, records)."""
    _check_frames(frames)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    records = []
    for name in names:
        record = sample_edit(name, rng, strength, len(frames), backgrounds)
        frames = apply_edit(frames, record)
        records.append(record)
    return frames, records


def replay_edits(frames: np.ndarray, records: Sequence[EditRecord | dict[str, Any]]) -> np.ndarray:
    """Apply recorded edits (records or their dicts) in order."""
    for record in records:
        frames = apply_edit(
            frames, record if isinstance(record, EditRecord) else EditRecord.from_dict(record)
        )
    return frames
