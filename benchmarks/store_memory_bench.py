"""Resident memory of the Milvus 2.3.5 server (as `dnsvr serve` starts it) while a store with 9 crop views is
filled with 3,000 synthetic 60-frame videos (250 a write), the crop views' codes kept or not.

    .venv/bin/python benchmarks/store_memory_bench.py codes|none
"""
import sys, tempfile, time, dataclasses
from pathlib import Path
import numpy as np, subprocess
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_bench import synthetic_videos
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store import video_store as vs
from dnsvr.serving.store.video_store import VideoStore

codes = sys.argv[1] == "codes"
if not codes:
    made = vs.make_meta
    vs.make_meta = lambda *a: dataclasses.replace(made(*a), schema=2)
def milvus_rss():
    out = subprocess.run(["ps", "-C", "milvus", "-o", "rss="], capture_output=True, text=True).stdout.split()
    return sum(int(x) for x in out) / 2**20
with tempfile.TemporaryDirectory() as d, MilvusStandaloneServer(Path(d) / "data") as server:
    store = VideoStore(StoreSettings(uri=server.uri, prefix="m"), model_version="m", coarse_dim=1024,
                       representation="binary", text_dim=0, views=9)
    rng = np.random.default_rng(0)
    print("start", f"{milvus_rss():.2f} GiB", flush=True)
    for start in range(0, 3000, 250):
        batch = synthetic_videos(start, 250, 1024, 60, rng, 0, 9)
        if not codes:
            for v in batch: v.view_codes = None
        store.upsert_many(batch)
        if (start + 250) % 1000 == 0:
            time.sleep(20)
            print(start + 250, f"{milvus_rss():.2f} GiB", flush=True)
    store.close()
