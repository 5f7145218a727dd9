"""How long the embedded Milvus 2.3.5 server (the isolated one `dnsvr serve` starts) takes to serve again after a
kill -9, by etcd session TTL and by whether the launcher revokes the killed server's sessions
(`dnsvr.serving.local.etcd_sessions`) or waits them out as the wheel does.

Each setting gets a fresh server holding a small store of synthetic videos; each round kills the whole server
(`kill -9` of its process group, as an OOM kill does), starts it again and times: `start` (until a client lists
collections) and `first search` (until the store opens and answers a coarse search, its collections loaded).

    .venv/bin/python benchmarks/restart_bench.py --out benchmarks/results/restart.md

Prints (and with --out writes) a markdown table, seconds: median and slowest of `--rounds` restarts.
"""

from __future__ import annotations

import argparse
import statistics
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
from serving_bench import synthetic_videos, unit_rows  # noqa: E402

DIM, FRAMES, VIEWS = 1024, 60, 9  # the bundled pack's coarse dimension, the video length, its crop grid
# (session TTL s, revoke the killed server's sessions): stop 35's `dnsvr serve`, the longer TTL alone, today's
SETTINGS = ((10, False), (SESSION_TTL_S, False), (SESSION_TTL_S, True))


def open_store(uri: str) -> VideoStore:
    return VideoStore(StoreSettings(uri=uri, prefix="restart"), model_version="restart-bench", coarse_dim=DIM,
                      representation="binary", text_dim=0, views=VIEWS)


def restarts(ttl_s: int, clear: bool, videos: int, rounds: int) -> dict[str, list[float]]:
    """A fresh server with `videos` videos, killed and restarted `rounds` times -> {"start": [s], "first
    search": [s]}."""
    timings: dict[str, list[float]] = {"start": [], "first search": []}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=Path.home()) as work:
        server = MilvusStandaloneServer(Path(work) / "data", isolated=True, session_ttl_s=ttl_s,
                                        clear_stale_sessions=clear, startup_timeout_s=max(120.0, 3.0 * ttl_s))
        with server:
            store = open_store(server.uri)
            store.upsert_many(synthetic_videos(0, videos, DIM, FRAMES, rng, 0, VIEWS))
            store.close()
            query = unit_rows(1, DIM, rng)[0]
            for _ in tqdm(range(rounds), desc=f"TTL {ttl_s} s, {'revoked' if clear else 'waited out'}",
                          unit="restart"):
                server.kill()
                began = time.monotonic()
                server.start()
                timings["start"].append(time.monotonic() - began)
                store = open_store(server.uri)
                assert len(store.search_coarse(query, 10).ids) == 10
                store.close()
                timings["first search"].append(time.monotonic() - began)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=500, help="videos in each server's store (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="kill -9 and restart this many times (default 3)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    lines = [f"Restart of the embedded Milvus server after kill -9 (`benchmarks/restart_bench.py --videos "
             f"{args.videos} --rounds {args.rounds}`), seconds, median (slowest) of {args.rounds}:", "",
             "| session TTL | a killed server's sessions | start | first search |", "|---:|---|---:|---:|"]
    for ttl_s, clear in SETTINGS:
        timings = restarts(ttl_s, clear, args.videos, args.rounds)
        cells = [f"{statistics.median(values):.1f} ({max(values):.1f})" for values in timings.values()]
        lines.append(f"| {ttl_s} s | {'revoked by the launcher' if clear else 'waited out'} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
