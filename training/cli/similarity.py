"""`dnsvr similarity A B`: the coarse, fine and selector scores of one pair of videos or stored features."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SIMILARITY_EPILOG = """\
A and B are video files, or stored features: FILE.h5:VIDEO_ID, or FILE.h5 alone when it holds one video.
Features must come from the pack's extractor (the pack.json `extractor`).

Scores (the DnS paper's definitions):
  coarse     inner product of the coarse student's L2-normalised video vectors, in [-1, 1]
  fine       the fine-grained student's video similarity, in [-1, 1]; fine_01 = fine/2 + 0.5 as DnS ranks it
  selector   the selector's probability that re-ranking this pair with the fine student is worth it

Weights: --pack DIR (a model pack with pack.json, or a folder of official DnS files); by default the bundled
pack in dnsvr/training/packs/bundled.

examples:
  dnsvr similarity a.mp4 b.mp4
  dnsvr similarity features.h5:video_1 features.h5:video_2 --json
  dnsvr similarity a.mp4 b.mp4 --pack ~/dns-official --fine att
"""


@dataclass(frozen=True)
class PairScores:
    coarse: float
    fine: float
    fine_01: float
    selector: float
    frames_a: int
    frames_b: int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "similarity",
        help="print the coarse, fine and selector scores of two videos or feature entries",
        description="Score one pair of videos with the DnS coarse student, fine student and selector.",
        epilog=SIMILARITY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A", help="video file, FILE.h5:ID or FILE.h5")
    parser.add_argument("b", metavar="B", help="video file, FILE.h5:ID or FILE.h5")
    parser.add_argument("--pack", type=Path, default=None, help="model pack directory (default: bundled)")
    parser.add_argument("--fine", choices=["bin", "att"], default=None,
                        help="fine student of an official folder holding both (default: bin)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default: 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="cap on sampled frames per video")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run_similarity)


def load_input(spec: str, extractor, fps: float = 1.0, max_frames: int | None = None):
    """A video path or `FILE.h5[:ID]` -> float32 features `[T, 9, D]` (torch)."""
    import torch
    from dnsvr.training.data.features_io import list_ids, read_features
    from dnsvr.training.data.video import decode_video

    path, _, video_id = spec.partition(".h5:")
    if video_id or spec.endswith(".h5"):
        file = Path(path + ".h5" if video_id else spec)
        if not video_id:
            ids = list_ids(file)
            if len(ids) != 1:
                raise ValueError(f"{file} holds {len(ids)} videos; name one as {file}:ID")
            video_id = ids[0]
        return torch.from_numpy(read_features(file, [video_id])[video_id])
    frames = decode_video(spec, fps=fps, max_frames=max_frames)
    with torch.inference_mode():
        return extractor(torch.from_numpy(frames))


def score_pair(pack, a, b) -> PairScores:
    """Features `[Ta, 9, D]`, `[Tb, 9, D]` -> the three DnS scores of the pair."""
    import torch
    from dnsvr.training.ranking import fine_to_unit, selector_rows

    coarse_net, fine_net, selector = pack.load("coarse"), pack.load("fine"), pack.load("selector")
    with torch.inference_mode():
        coarse_a, coarse_b = coarse_net.index_video(a), coarse_net.index_video(b)
        coarse = float(coarse_net.calculate_video_similarity(coarse_a, coarse_b).reshape(()))
        fine = float(fine_net.calculate_video_similarity(fine_net.index_video(a), fine_net.index_video(b)))
        rows = selector_rows(selector.index_video(a), selector.index_video(b), torch.tensor([coarse]))
        chosen = float(selector(rows).reshape(()))
    return PairScores(coarse=coarse, fine=fine, fine_01=fine_to_unit(fine), selector=chosen,
                      frames_a=int(a.shape[0]), frames_b=int(b.shape[0]))


def run_similarity(args: argparse.Namespace) -> int:
    from dnsvr.training.data.features_io import FeaturesFileError
    from dnsvr.training.data.video import VideoDecodeError
    from dnsvr.training.networks.checkpoints import CheckpointError
    from dnsvr.training.packs.model_pack import ModelPack, ModelPackError

    try:
        pack = ModelPack.from_dir(args.pack, fine=args.fine) if args.pack else ModelPack.bundled()
        needs_video = not all(".h5" in item for item in (args.a, args.b))
        extractor = pack.load_extractor() if needs_video else None
        a = load_input(args.a, extractor, args.fps, args.max_frames)
        b = load_input(args.b, extractor, args.fps, args.max_frames)
        scores = score_pair(pack, a, b)
    except (ModelPackError, CheckpointError, FeaturesFileError, VideoDecodeError, ValueError, OSError) as error:
        print(f"dnsvr similarity: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "pack": pack.version, **asdict(scores)}))
        return 0
    print(f"pack      {pack.version} ({pack.extractor}, {pack.fine})")
    print(f"frames    A: {scores.frames_a}   B: {scores.frames_b}")
    print(f"coarse    {scores.coarse:+.4f}")
    print(f"fine      {scores.fine:+.4f}   (mapped to [0,1]: {scores.fine_01:.4f})")
    print(f"selector  {scores.selector:.4f}")
    return 0
