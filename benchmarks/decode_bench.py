"""Decoding a query clip at 1 fps: every frame decoded vs only the pictures the sampled frames need.

`decode_video` demuxes every packet; of each group of pictures (keyframe to keyframe) it decodes only the
packets up to the last frame a sampled time (k / fps) takes, none when no sampled time falls in the group, then
drains the decoder (`dnsvr.training.data.video._timed_frames`).  With a keyframe at every sampled time that is
one picture per sampled frame, decoded with slice threads.  The saving depends on the keyframe interval: phone
cameras and streaming encoders put a keyframe every 1-2 s, x264's default every 250 frames (10 s at 25 fps).
This encodes synthetic 720p clips (moving gradients and noise, H.264 with B-frames, in MP4) with several
keyframe intervals and decodes each, side by side in one run:

    every frame   FFmpeg decodes all frames (PyAV `container.decode`, frame threads), sampled ones to RGB:
                  what `decode_video` did first (the previous version, which skipped only groups no sampled
                  time falls in, measured 1053 / 1334 / 1541 ms on this benchmark's three clips)
    decode_video  the current function (sampling, RGB, resize to 256 and crop to 224 included)

and checks that both give the same sampled frames.  Then the resize of the first clip's sampled 720p frames to
a shorter side of 256, side by side: `resize_shorter_side` (PyTorch's uint8 antialiased bilinear kernel, used
since stop 25) vs the same filter in float32 (what it ran before), with the largest grey-level difference.

    python benchmarks/decode_bench.py                      # 30 s, 1280x720, 30 fps; GOP 1 s, 2 s, 10 s
    python benchmarks/decode_bench.py --seconds 10 --gops 15 300

Writes benchmarks/results/decode.md.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.data.video import center_crop, decode_video, resize_shorter_side
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "decode.md"


def encode_clip(seconds: int, rate: int, gop: int, width: int = 1280, height: int = 720, slices: bool = True
                ) -> bytes:
    """An H.264 MP4 clip (B-frames, keyframe every `gop` frames): a textured scene panning under a moving
    colour gradient, so that motion compensation works as on camera footage (~2-4 Mbit/s).  `slices`: x264 on
    slice threads (PyAV's default), several slices per picture; False: on frame threads (FFmpeg's default),
    one slice per picture."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, size=(height, width + 8 * seconds * rate), dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"g": str(gop), "keyint_min": str(gop),
                                                                     "bf": "3", "preset": "veryfast",
                                                                     "sc_threshold": "0", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_type = "SLICE" if slices else "FRAME"
        xs = np.linspace(0, 180, width, dtype=np.float32)[None, :]
        ys = np.linspace(0, 180, height, dtype=np.float32)[:, None]
        for index in tqdm(range(seconds * rate), desc=f"encode GOP {gop}", leave=False):
            shift = 2 * index
            gradient = np.stack([(xs + shift + 0 * ys) % 180, (ys + shift + 0 * xs) % 180,
                                 ((xs + ys) / 2 + shift) % 180], axis=-1)
            image = (gradient + texture[:, 8 * index:8 * index + width, None]).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def every_frame(data: bytes, fps: float = 1.0) -> np.ndarray:
    """The sequential decode: every frame decoded, the first at or after each k / fps kept, resized, cropped."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        kept, origin, target = [], None, 0
        for frame in container.decode(stream):
            now = float(frame.pts * stream.time_base)
            origin = now if origin is None else origin
            while now - origin >= target / fps - 1e-6:
                kept.append(center_crop(resize_shorter_side(frame.to_ndarray(format="rgb24"), 256), 224))
                target += 1
    return np.stack(kept)


def float_resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """The float32 antialiased bilinear resize `resize_shorter_side` ran before stop 25 (rounded to uint8)."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    shape = (max(size, round(height * scale)), max(size, round(width * scale)))
    tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    resized = F.interpolate(tensor, size=shape, mode="bilinear", antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def resize_rows(data: bytes, repeats: int) -> list[str]:
    """The table rows of the two resizes over `data`'s sampled native frames."""
    native = decode_video(data, size=None, full_frames=True, min_frames=0)
    float_ms, floats = timed(lambda: [float_resize_shorter_side(image, 256) for image in native], repeats)
    uint8_ms, uint8s = timed(lambda: [resize_shorter_side(image, 256) for image in native], repeats)
    difference = np.abs(np.stack(floats).astype(np.int16) - np.stack(uint8s).astype(np.int16))
    print(f"resize: float32 {float_ms:.0f} ms, uint8 {uint8_ms:.0f} ms, max difference {difference.max()}")
    return [f"| {len(native)} x {native.shape[2]}x{native.shape[1]} -> shorter side 256 | {float_ms:.0f} | "
            f"{uint8_ms:.0f} | {float_ms / uint8_ms:.1f}x | {difference.max()} | {difference.mean():.3f} |"]


def timed(call, repeats: int) -> tuple[float, np.ndarray]:
    result, times = call(), []
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30, help="clip length (default 30)")
    parser.add_argument("--rate", type=int, default=30, help="frames per second of the clip (default 30)")
    parser.add_argument("--gops", type=int, nargs="+", default=[30, 60, 300],
                        help="keyframe intervals in frames (default 30 60 300: 1 s, 2 s, 10 s at 30 fps)")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per clip and path (default 3)")
    args = parser.parse_args()
    rows, resized = [], []
    for gop in args.gops:
        data = encode_clip(args.seconds, args.rate, gop)
        resized = resized or resize_rows(data, args.repeats)
        before_ms, before = timed(lambda d=data: every_frame(d), args.repeats)
        after_ms, after = timed(lambda d=data: decode_video(d, min_frames=0), args.repeats)
        same = before.shape == after.shape and bool(np.array_equal(before, after))
        rows.append((gop, len(data) * 8 / args.seconds / 1e6, len(after), before_ms, after_ms, same))
        print(f"GOP {gop}: every frame {before_ms:.0f} ms, decode_video {after_ms:.0f} ms, same frames {same}")
    lines = [f"# Query clip decoding at 1 fps: {args.seconds} s, 1280x720, {args.rate} fps, H.264 (3 B-frames), MP4",
             "", f"Machine: {platform.machine()}, 2 cores shared with other jobs; PyAV {av.__version__}; median of "
             f"{args.repeats}.  `python benchmarks/decode_bench.py`.", "",
             "| keyframe every | Mbit/s | sampled frames | every frame decoded ms | decode_video ms | speed-up "
             "| same frames |", "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {gop} frames ({gop / args.rate:g} s) | {mbits:.1f} | {count} | {before:.0f} | {after:.0f} | "
              f"{before / after:.1f}x | {'yes' if same else 'NO'} |" for gop, mbits, count, before, after, same in rows]
    lines += ["", "Resizing the sampled frames (of the first clip):", "",
              "| frames | float32 ms | uint8 ms (`resize_shorter_side`) | speed-up | max grey-level difference "
              "| mean |", "|---|---:|---:|---:|---:|---:|", *resized]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
