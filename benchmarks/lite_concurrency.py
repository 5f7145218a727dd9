"""Concurrent writers on one Milvus Lite server: does every acknowledged video stay complete?

`dnsvr serve` on the `lite` engine runs several Triton model instances, each its own process and client, that
index at once.  Milvus Lite 3.2.2 says of itself that concurrent writes against one collection are not safe.
This starts a Milvus Lite server, opens `--writers` stores on it (one client each, as model instances are),
indexes `--videos` videos of `--frames` frames from each writer at once (threads), then runs the store's check:
videos, frame rows and the ids it finds incomplete (a video row whose frame rows are missing), and the frame
counts `fetch_codes` reads back.  `--writers 1` is the control.

    .venv/bin/python benchmarks/lite_concurrency.py --writers 4 --runs 3
    .venv/bin/python benchmarks/lite_concurrency.py --writers 1 --runs 3
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from dnsvr.serving.local.milvus_servers import MilvusLiteServer
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.networks.codes import pack_codes

COARSE_DIM = 16


def video(video_id: str, seed: int, frames: int) -> IndexedVideo:
    """A random indexed video: unit `[16]` coarse vector, `frames` frames of packed 9 x 512-bit codes."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=COARSE_DIM).astype(np.float32)
    codes = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    return IndexedVideo(video_id, coarse / np.linalg.norm(coarse), 0.5, codes, metadata={})


def run(writers: int, videos: int, frames: int) -> str:
    """One run on a fresh server -> a table row."""
    with tempfile.TemporaryDirectory() as folder, MilvusLiteServer(f"{folder}/milvus.db") as server:
        stores = [VideoStore(StoreSettings(uri=server.uri, prefix="race"), model_version="lite-concurrency",
                             coarse_dim=COARSE_DIM, representation="binary") for _ in range(writers)]
        stores[0].upsert(video("first", 0, frames))  # the collections, made once

        def write(worker: int) -> None:
            for number in range(videos):
                stores[worker].upsert(video(f"w{worker}-{number}", 1000 * worker + number, frames))

        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
        report = stores[0].check(grace_s=0)
        ids = [f"w{worker}-{number}" for worker in range(writers) for number in range(videos)]
        counts = stores[0].fetch_codes(ids, consistency="Strong").frame_counts
        for store in stores:
            store.close()
    short = int((counts != frames).sum())
    return (f"| {writers} | {writers * videos + 1} | {report.frame_rows} | {len(report.incomplete_video_ids)} | "
            f"{short} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers, one client each (default 4)")
    parser.add_argument("--videos", type=int, default=25, help="videos per writer (default 25)")
    parser.add_argument("--frames", type=int, default=6, help="frames per video (default 6)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh server (default 3)")
    args = parser.parse_args()
    print("| writers | videos | frame rows | incomplete videos (check) | videos read back short |")
    print("|---:|---:|---:|---:|---:|")
    for _ in range(args.runs):
        print(run(args.writers, args.videos, args.frames), flush=True)


if __name__ == "__main__":
    main()
