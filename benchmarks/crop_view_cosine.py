"""How close a real video's crop views are to its full frame in S^c's space (what `view_search_bench.py
--view-cosine` models).

    .venv/bin/python benchmarks/crop_view_cosine.py [--videos ../shared/data/videos]

For every sample video: its frames at 1 fps (`decode_video`), the bundled pack's extractor on the full frames and
on the 9 zoomed crops of the pack's grid (`CropLayout.crop_regions`), S^c of the full frame and of each crop view
(as `index_videos(crops=...)` and the served `video_views` compute them), and the cosine of each crop view to the
full frame.  Prints them per video and the mean and median over all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.data.video import decode_video
from dnsvr.training.evaluation.tradeoff import crop_views
from dnsvr.training.packs.model_pack import ModelPack

ROOT = Path(__file__).resolve().parents[1]


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "videos",
                        help="a folder of .mp4 files (default: ../shared/data/videos)")
    args = parser.parse_args()
    pack = ModelPack.bundled()
    extractor, coarse, layout = pack.load_extractor(), pack.load("coarse").eval(), pack.index_views
    cosines = []
    for path in sorted(args.videos.glob("*.mp4")):
        frames = decode_video(path)
        full = coarse.index_video(torch.as_tensor(np.asarray(extractor(frames), np.float32)))[0]  # [C]
        crops = np.asarray(layout.crop_regions(frames, extractor), np.float32)  # [T, 9 * B, D]
        views = coarse.index_video(torch.from_numpy(crop_views(crops)))  # [B, C]
        cosine = (views @ full).numpy()
        cosines += cosine.tolist()
        print(f"{path.name}: {len(frames)} frames, cosines {' '.join(f'{c:.3f}' for c in cosine)}", flush=True)
    print(f"{len(cosines)} crop views: mean cosine {np.mean(cosines):.3f}, median {np.median(cosines):.3f}")


if __name__ == "__main__":
    main()
