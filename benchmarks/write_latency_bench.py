"""Write latency of the store on the local Milvus 2.3.5 server at two proxy time ticks, side by side.

A Strong read and a delete by filter (the server first queries the rows it matches) wait for the proxy's next
time tick; `VideoStore.upsert` (a Strong read-back, then the old generations' deletes) and `VideoStore.delete`
(a Strong existence read, then the deletes) pay several such waits.  For each `--ticks` value this starts the
server the way `dnsvr serve`'s engine does (`MilvusStandaloneServer(time_tick_ms=...)`, on loopback), writes
`--videos` synthetic videos, waits, and times one client's single steps and whole calls (median ms), then the
idle server's CPU over `--idle-s` seconds.

    python benchmarks/write_latency_bench.py                  # ticks 200 (Milvus's default) and 50 (ours)

Writes benchmarks/results/write_latency.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dnsvr.serving.local.milvus_servers import TIME_TICK_MS, MilvusStandaloneServer
from dnsvr.serving.local.processes import descendants
from dnsvr.serving.store.expressions import equals
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from serving_bench import synthetic_videos

RESULTS = Path(__file__).resolve().parent / "results" / "write_latency.md"
STEPS = ("Strong read", "Session read", "delete frames by filter", "delete text by filter", "upsert (one video)",
         "delete (one video)")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(tick_ms: int, scratch: Path, videos: int, repeats: int, idle_s: float) -> dict[str, float]:
    """Median ms of each of STEPS, and the idle server's CPU (% of a core), at one tick."""
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {step: [] for step in STEPS}

    def timed(step: str, action) -> None:
        began = time.perf_counter()
        action()
        times[step].append(1000 * (time.perf_counter() - began))

    with MilvusStandaloneServer(scratch / f"tick{tick_ms}", time_tick_ms=tick_ms) as server:
        pids = [server.pid, *descendants(server.pid)]
        before = cpu_seconds(pids)
        time.sleep(idle_s)
        idle = 100 * (cpu_seconds(pids) - before) / idle_s
        store = VideoStore(StoreSettings(uri=server.uri, prefix="bench"), model_version="bench", coarse_dim=1024,
                           representation="binary", text_dim=128)
        store.upsert_many(synthetic_videos(0, videos, 1024, 30, rng, 128))
        time.sleep(5)
        for i in range(repeats):
            video_id = f"synthetic-{i:06d}"
            timed("Strong read", lambda v=video_id: store._video_rows([v], ["generation"], "Strong"))
            timed("Session read", lambda v=video_id: store._video_rows([v], ["generation"], "Session"))
            timed("delete frames by filter", lambda v=video_id: store._delete_frames(equals("video_id", v)))
            timed("delete text by filter", lambda v=video_id: store._delete_text(equals("video_id", v)))
            new_video = synthetic_videos(videos + i, 1, 1024, 30, rng, 128)[0]
            timed("upsert (one video)", lambda v=new_video: store.upsert(v))
            timed("delete (one video)", lambda v=f"synthetic-{repeats + i:06d}": store.delete(v))
        store.close()
    return {**{step: statistics.median(values) for step, values in times.items()}, "idle CPU %": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, nargs="+", default=[200, TIME_TICK_MS],
                        help=f"proxy.timeTickInterval values in ms (default: 200 and {TIME_TICK_MS})")
    parser.add_argument("--videos", type=int, default=200, help="videos written first (default 200)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each step (default 20)")
    parser.add_argument("--idle-s", type=float, default=30.0, help="seconds of idle CPU measured (default 30)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dnsvr-write-latency-") as scratch:
        results = {tick: measure(tick, Path(scratch), args.videos, args.repeats, args.idle_s) for tick in args.ticks}
    lines = [
        "# Store write latency by proxy time tick (benchmarks/write_latency_bench.py)",
        "",
        f"Milvus 2.3.5 server on loopback, one client, {args.videos} videos of 30 frames with text vectors, "
        f"median of {args.repeats} ms; idle CPU over {args.idle_s:.0f} s before the writes.  "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}.",
        "",
        "| step | " + " | ".join(f"tick {tick} ms" for tick in args.ticks) + " |",
        "|---|" + "---:|" * len(args.ticks),
        *(f"| {step} | " + " | ".join(f"{results[tick][step]:.1f}" for tick in args.ticks) + " |"
          for step in (*STEPS, "idle CPU %")),
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
