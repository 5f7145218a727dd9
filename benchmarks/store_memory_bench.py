"""Memory of the embedded Milvus 2.3.5 server (the isolated one `dnsvr serve` starts) while a store with crop views
fills with synthetic 60-frame videos, with and without each crop view's fine codes (`dnsvr export --view-codes`:
10x the stored fine codes).
Each setting gets a fresh server; the memory of its `milvus` processes is read after every `--report-every` videos
and then while the server settles, and a sampler reads it every second for the peak.

Two numbers a reading, GiB: anonymous / resident.  Anonymous memory (RssAnon) is what the kernel cannot drop on a
machine without swap and what its OOM killer weighs; resident (VmRSS) adds the file pages mapped in, which the
kernel reclaims when memory runs short.  (Stop 48 compared memory-mapped segments here, `store_memory_20k_mmap.md`;
the server refuses them since: `milvus_servers.MMAP_VARIABLE`.)

    .venv/bin/python benchmarks/store_memory_bench.py --videos 4000 --out benchmarks/results/store_memory.md
    .venv/bin/python benchmarks/store_memory_bench.py --videos 20000 --settings none

Prints (and with --out writes) a markdown table: GiB by videos indexed, per setting.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
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


def milvus_memory_gib() -> tuple[float, float]:
    """(anonymous, resident) memory of every `milvus` process on this machine, GiB (RssAnon, VmRSS)."""
    pids = subprocess.run(["ps", "-C", "milvus", "-o", "pid="], capture_output=True, text=True).stdout.split()
    anon = resident = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # gone since ps listed it
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        anon += int(fields.get("RssAnon", "0 kB").split()[0])
        resident += int(fields.get("VmRSS", "0 kB").split()[0])
    return anon / 2**20, resident / 2**20


class PeakSampler(threading.Thread):
    """Reads the server's memory every `period_s` until stopped; `peak` holds the highest (anonymous, resident)."""

    def __init__(self, period_s: float = 1.0):
        super().__init__(daemon=True)
        self.period_s, self.peak, self.done = period_s, (0.0, 0.0), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period_s):
            anon, resident = milvus_memory_gib()
            self.peak = (max(self.peak[0], anon), max(self.peak[1], resident))


def fill(view_codes: bool, videos: int, batch: int, report_every: int, settle_s: list[int],
         session_ttl_s: int = SESSION_TTL_S, server_config: dict[str, str] | None = None) -> dict[str, tuple]:
    """Fill a fresh store -> {"<n> videos": GiB after n, "settled <s> s": GiB s seconds after the last write,
    "peak": the sampler's highest}, each (anonymous, resident)."""
    readings: dict[str, tuple] = {}
    sampler = PeakSampler()
    with tempfile.TemporaryDirectory(dir=Path.home()) as work, \
            MilvusStandaloneServer(Path(work) / "data", isolated=True, session_ttl_s=session_ttl_s,
                                   extra_config=server_config) as server:
        store = VideoStore(StoreSettings(uri=server.uri, prefix="memory"), model_version="memory-bench",
                           coarse_dim=DIM, representation="binary", text_dim=0, views=VIEWS, view_codes=view_codes)
        rng = np.random.default_rng(0)
        readings["empty"] = milvus_memory_gib()
        sampler.start()
        with tqdm(total=videos, desc=f"filling (view codes {'kept' if view_codes else 'not kept'})",
                  unit="video") as bar:
            for start in range(0, videos, batch):
                count = min(batch, videos - start)
                store.upsert_many(synthetic_videos(start, count, DIM, FRAMES, rng, 0, VIEWS, view_codes=view_codes))
                bar.update(count)
                if (start + count) % report_every == 0 or start + count == videos:
                    readings[f"{start + count} videos"] = milvus_memory_gib()
        waited = 0
        for seconds in sorted(settle_s):
            time.sleep(seconds - waited)
            waited = seconds
            readings[f"settled {seconds} s"] = milvus_memory_gib()
        sampler.done.set()
        sampler.join()
        readings["peak (1 s sampler)"] = sampler.peak
        stats = store.stats()
        readings["payload KB a video"] = (stats.payload_bytes_per_video / 1000,)
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
        print(setting, {row: cell(value) for row, value in results[setting].items()}, flush=True)
    rows = list(next(iter(results.values())))
    lines = ["| crop views' fine codes | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for label, readings in results.items():
        lines.append(f"| {label} | " + " | ".join(cell(readings[row]) for row in rows) + " |")
    table = (f"Memory (GiB, anonymous / resident) of the embedded Milvus 2.3.5 server, {args.videos} synthetic "
             f"{FRAMES}-frame videos with {VIEWS} crop views, {args.batch} a write "
             f"(`benchmarks/store_memory_bench.py --videos {args.videos} --report-every {args.report_every} "
             f"--settle-s {' '.join(map(str, args.settle_s))} "
             f"--settings {' '.join(args.settings)}"
             + "".join(f" --server-config {key}={value}" for key, value in args.server_config) + "`)\n\n"
             + "\n".join(lines) + "\n")
    print(table)
    if args.out:
        args.out.write_text(table)


def cell(values: tuple) -> str:
    """(anonymous, resident) GiB as "a / r"; a one-number reading (KB) as it is."""
    return " / ".join(f"{value:.2f}" for value in values) if len(values) == 2 else f"{values[0]:.0f}"


if __name__ == "__main__":
    main()
