"""Resident memory of the embedded Milvus 2.3.5 server (the isolated one `dnsvr serve` starts) while a store with
crop views fills with synthetic 60-frame videos, with and without each crop view's fine codes (`dnsvr export
--view-codes`: 10x the stored fine codes).  Each setting gets a fresh server; the resident set of its `milvus`
processes is read after every `--report-every` videos and then while the server settles.

    .venv/bin/python benchmarks/store_memory_bench.py --videos 4000 --out benchmarks/results/store_memory.md

Prints (and with --out writes) a markdown table: GiB resident by videos indexed, per setting.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dnsvr.serving.local.milvus_servers import SESSION_TTL_S, MilvusStandaloneServer  # noqa: E402
from dnsvr.serving.store.settings import StoreSettings  # noqa: E402
from dnsvr.serving.store.video_store import VideoStore  # noqa: E402
from serving_bench import server_setting, synthetic_videos  # noqa: E402

DIM, FRAMES, VIEWS = 1024, 60, 9  # the bundled pack's coarse dimension, the video length, its crop grid


def milvus_rss_gib() -> float:
    """Resident memory of every `milvus` process on this machine, GiB."""
    out = subprocess.run(["ps", "-C", "milvus", "-o", "rss="], capture_output=True, text=True).stdout.split()
    return sum(int(kib) for kib in out) / 2**20


def fill(view_codes: bool, videos: int, batch: int, report_every: int, settle_s: list[int],
         session_ttl_s: int = SESSION_TTL_S, server_config: dict[str, str] | None = None) -> dict[str, float]:
    """Fill a fresh store -> {"<n> videos": GiB after n, "settled <s> s": GiB s seconds after the last write}."""
    readings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=Path.home()) as work, \
            MilvusStandaloneServer(Path(work) / "data", isolated=True, session_ttl_s=session_ttl_s,
                                   extra_config=server_config) as server:
        store = VideoStore(StoreSettings(uri=server.uri, prefix="memory"), model_version="memory-bench",
                           coarse_dim=DIM, representation="binary", text_dim=0, views=VIEWS, view_codes=view_codes)
        rng = np.random.default_rng(0)
        readings["empty"] = milvus_rss_gib()
        with tqdm(total=videos, desc=f"filling (view codes {'kept' if view_codes else 'not kept'})",
                  unit="video") as bar:
            for start in range(0, videos, batch):
                count = min(batch, videos - start)
                store.upsert_many(synthetic_videos(start, count, DIM, FRAMES, rng, 0, VIEWS, view_codes=view_codes))
                bar.update(count)
                if (start + count) % report_every == 0 or start + count == videos:
                    readings[f"{start + count} videos"] = milvus_rss_gib()
        waited = 0
        for seconds in sorted(settle_s):
            time.sleep(seconds - waited)
            waited = seconds
            readings[f"settled {seconds} s"] = milvus_rss_gib()
        stats = store.stats()
        readings["payload KB a video"] = stats.payload_bytes_per_video / 1000
        store.close()
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4000, help="videos to index (default 4000)")
    parser.add_argument("--batch", type=int, default=500, help="videos a write (serving_bench's INSERT_BATCH)")
    parser.add_argument("--report-every", type=int, default=1000, help="read the memory after every N videos")
    parser.add_argument("--settle-s", type=int, nargs="*", default=[30, 120],
                        help="also read it these many seconds after the last write (default 30 120)")
    parser.add_argument("--settings", nargs="+", choices=("kept", "none"), default=["none", "kept"],
                        help="the crop views' fine codes kept or not (default: both, none first)")
    parser.add_argument("--session-ttl-s", type=int, default=SESSION_TTL_S,
                        help=f"the server's etcd session TTL (default: what `dnsvr serve` uses, {SESSION_TTL_S} s); "
                             "at 10 s a fast fill on 2 cores starved its keep-alives and the server stopped serving")
    parser.add_argument("--server-config", action="append", default=[], metavar="KEY=VALUE", type=server_setting,
                        help="a setting of the server's milvus.yaml (a key of the wheel's template), e.g. "
                             "dataCoord.segment.maxSize=128; repeat for more")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    results = {}
    for setting in args.settings:
        results[setting] = fill(setting == "kept", args.videos, args.batch, args.report_every, args.settle_s,
                                args.session_ttl_s, dict(args.server_config))
        print(setting, {row: round(value, 2) for row, value in results[setting].items()}, flush=True)
    rows = list(next(iter(results.values())))
    lines = ["| crop views' fine codes | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for setting, readings in results.items():
        lines.append(f"| {setting} | " + " | ".join(f"{readings[row]:.2f}" if "KB" not in row else
                                                       f"{readings[row]:.0f}" for row in rows) + " |")
    table = (f"Resident memory (GiB) of the embedded Milvus 2.3.5 server, {args.videos} synthetic {FRAMES}-frame "
             f"videos with {VIEWS} crop views, {args.batch} a write (`benchmarks/store_memory_bench.py"
             + "".join(f" --server-config {key}={value}" for key, value in args.server_config) + "`)\n\n"
             + "\n".join(lines) + "\n")
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
