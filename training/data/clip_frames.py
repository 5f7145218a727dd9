"""Frame preprocessing of the official TeachCLIP / CLIP4Clip video loader, without torchvision.

`Video_DataLoader._get_rawvideo` with `slice_framepos=2`, `frame_order=0` and `RawVideoExtractorCV2._transform(S)`:
  - more than `max_frames` decoded frames: keep frames `np.linspace(0, n - 1, num=max_frames, dtype=int)`;
    otherwise all of them;
  - each frame: shorter side to S with PIL bicubic (the longer one to `int(S * long / short)`, uint8 result),
    centre crop S x S at offsets `int(round((size - S) / 2.0))`, `/ 255`, CLIP mean/std normalisation (float32);
  - the frames fill the first slots of `max_frames`; padded slots stay exactly 0.0 (not a normalised black image).
Frames are RGB uint8 `[T, H, W, 3]` (decode with any reader; OpenCV's BGR must be converted first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_FRAMES = 12
DEFAULT_SIZE = 224  # ViT-B/32's input resolution


def select_frame_indices(n_frames: int, max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    """Indices `[min(n_frames, max_frames)]` int64 of the decoded frames kept (uniform when there are too many)."""
    if n_frames > max_frames:
        return np.linspace(0, n_frames - 1, num=max_frames, dtype=int).astype(np.int64)
    return np.arange(n_frames, dtype=np.int64)


def resize_and_crop(frame: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """RGB uint8 `[H, W, 3]` -> uint8 `[size, size, 3]`: shorter side to `size` (PIL bicubic), centre crop."""
    height, width = frame.shape[:2]
    short, long = min(height, width), max(height, width)
    resized_long = int(size * long / short)
    new_h, new_w = (size, resized_long) if height <= width else (resized_long, size)
    image = Image.fromarray(np.ascontiguousarray(frame)).resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = round((new_h - size) / 2.0)  # Python round: half to even, as torchvision
    left = round((new_w - size) / 2.0)
    return np.asarray(image.crop((left, top, left + size, top + size)))


def normalize_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[T, S, S, 3]` -> float32 `[T, 3, S, S]`: `/ 255`, then `(x - mean) / std` per channel in float32."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)  # [T, 3, S, S]
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)  # [1, 3, 1, 1]
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)  # [1, 3, 1, 1]
    return (x - mean) / std


def preprocess_video(frames: np.ndarray, max_frames: int = DEFAULT_MAX_FRAMES,
                     size: int = DEFAULT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded RGB frames uint8 `[T, H, W, 3]` -> (pixels `[max_frames, 3, size, size]` float32,
    mask `[max_frames]` bool, True at the first min(T, max_frames) slots)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError("a video with no frames")
    kept = select_frame_indices(frames.shape[0], max_frames)
    crops = np.stack([resize_and_crop(frames[i], size) for i in kept])  # [n, size, size, 3] uint8
    pixels = torch.zeros(max_frames, 3, size, size, dtype=torch.float32)
    pixels[: len(kept)] = normalize_frames(crops)
    mask = torch.zeros(max_frames, dtype=torch.bool)
    mask[: len(kept)] = True
    return pixels, mask


def preprocess_videos(videos: Sequence[np.ndarray], max_frames: int = DEFAULT_MAX_FRAMES,
                      size: int = DEFAULT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of decoded videos (each uint8 `[T_i, H_i, W_i, 3]`) -> (pixels `[B, max_frames, 3, size, size]`
    float32, mask `[B, max_frames]` bool)."""
    if len(videos) == 0:
        raise ValueError("no videos")
    pixels, masks = zip(*(preprocess_video(v, max_frames, size) for v in videos), strict=True)
    return torch.stack(pixels), torch.stack(masks)
