"""Text search latency and the indexing cost of the text-video vector, through the real local Triton + Milvus.

1. Indexing overhead: the sample videos are indexed through `dnsvr serve` twice over the same DnS pack, without
   and with a text-video student (decode for both students, the student's video graph, the extra upsert);
   frames/s and per-video embed time, side by side in one run.
2. Text query latency at each `--sizes` indexed videos (default 10k and 100k): the store is grown with synthetic
   videos carrying unit text-video vectors (and one-frame DnS entries), then `--queries` distinct captions are
   searched (`dnsvr_search_text`: tokenizer + text encoder in Triton, inner-product top-k in Milvus, the rows'
   generations checked); median / p95 per stage.

The student is a TeachCLIP checkpoint (`--text-weights`), by default a ViT-B/32-shaped CLIP with random weights
(TeachCLIP's and CLIP4Clip's backbone: 12+12 layers, 512-d vectors, 224 px, 12 frames): latency does not depend
on the weights' values.

    python benchmarks/text_search_bench.py                       # 10k and 100k videos, embedded Milvus Lite
    python benchmarks/text_search_bench.py --stores lite http://127.0.0.1:19530   # and a Milvus server

Writes benchmarks/results/text_search.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dnsvr.client import VideoSearchClient
from dnsvr.export.repository import build_repository
from dnsvr.export.weights import from_pack, resolve_weights
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.training import paths
from dnsvr.training.networks.clip import CLIP, CLIPConfig
from dnsvr.training.networks.codes import pack_codes
from dnsvr.training.packs.model_pack import ModelPack
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "text_search.md"
VIDEOS = paths.shared_videos_dir()
VIT_B32 = CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12)
INSERT_BATCH = 1000
WARM_UP = 3
SUBJECTS = ["a man", "a woman", "two dogs", "a child", "a cat", "a crowd", "a chef", "a cyclist"]
ACTIONS = ["riding a bike", "cooking pasta", "playing a guitar", "running", "talking on a phone", "dancing"]
PLACES = ["at night", "in a kitchen", "on a beach", "in the rain", "on stage", "in a park"]


def captions(count: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} ({i})" for i in range(count)]


def random_vit_b32(path: Path) -> Path:
    """A ViT-B/32-shaped OpenAI CLIP state dict with random weights (float16, as OpenAI ships it)."""
    torch.manual_seed(0)
    model = CLIP(VIT_B32)
    for name, parameter in model.named_parameters():  # CLIP's zero-initialised projections would give 0 vectors
        if parameter.ndim >= 2 or name.endswith(("positional_embedding", "class_embedding")):
            torch.nn.init.normal_(parameter, std=0.02)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}"


def index_throughput(repository: Path, scratch: Path, label: str, rounds: int) -> dict:
    """Index the sample videos `rounds` times (after one untimed round) -> frames/s and embed ms per video."""
    videos = sorted(VIDEOS.glob("*.mp4"))
    store = scratch / f"index-{label}.db"
    with LocalService(repository, store=store, log_dir=scratch) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=900) as client:
        for path in videos:  # warm-up: model instances loaded, caches filled
            client.index(path.stem, path)
        frames, embed_ms, began = 0, [], time.perf_counter()
        for _ in range(rounds):
            for path in videos:
                result = client.index(path.stem, path)
                frames += result.frame_count
                embed_ms.append(result.timings_ms["embed"])
        elapsed = time.perf_counter() - began
    return {"label": label, "frames": frames, "seconds": elapsed, "fps": frames / elapsed, "embed_ms": embed_ms}


def grow(store, target: int, rng: np.random.Generator) -> None:
    have = store.count()
    coarse_dim, text_dim = store.meta.coarse_dim, store.meta.text_dim
    with tqdm(total=max(0, target - have), desc=f"inserting to {target:,}", unit="video") as bar:
        while have < target:
            count = min(INSERT_BATCH, target - have)
            coarse = rng.normal(size=(count, coarse_dim)).astype(np.float32)
            text = rng.normal(size=(count, text_dim)).astype(np.float32)
            coarse /= np.linalg.norm(coarse, axis=1, keepdims=True)
            text /= np.linalg.norm(text, axis=1, keepdims=True)
            codes = pack_codes(rng.choice([-1.0, 1.0], size=(count, 1, 9, 512)).astype(np.float32))
            views = rng.normal(size=(count, store.meta.views, coarse_dim)).astype(np.float32)  # a pack's crop views
            views /= np.linalg.norm(views, axis=2, keepdims=True)
            store.upsert_many([IndexedVideo(f"synthetic-{have + i:07d}", coarse[i], 0.5, codes[i], text=text[i],
                                            views=views[i] if store.meta.views else None)
                               for i in range(count)])
            have += count
            bar.update(count)


def query_latency(repository: Path, store_uri: str | None, scratch: Path, sizes: list[int], queries: int,
                  top_k: int) -> list[dict]:
    """Text queries at each size on one store (`store_uri`: a Milvus server; None: embedded Milvus Lite)."""
    store_location = store_uri or scratch / "query.db"
    prefix = f"bench{int(time.time())}" if store_uri else None
    rows = []
    with LocalService(repository, store=store_location, prefix=prefix, log_dir=scratch) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=900) as client:
        video = sorted(VIDEOS.glob("*.mp4"))[0]
        client.index(video.stem, video)  # creates the store with this export's model version
        store = ServiceStore(repository, {"store_uri": service.store_uri, "store_prefix": prefix or ""}).get(
            create=False)
        rng = np.random.default_rng(0)
        texts = captions(queries + WARM_UP)
        for size in sizes:
            grow(store, size, rng)
            timings: dict[str, list[float]] = {"embed": [], "search": [], "total": [], "round_trip": []}
            for index, text in enumerate(texts):
                result = client.search_text(text, top_k=top_k)
                if index >= WARM_UP:
                    for stage in timings:
                        timings[stage].append(result.timings_ms.get(stage, 0.0))
            name = f"Milvus server {store.server_version}" if store_uri else "embedded Milvus Lite"
            rows.append({"size": size, "timings": timings, "store": name})
            print(f"{size:>8,} videos: " + ", ".join(f"{k} {cell(v)}" for k, v in timings.items()), flush=True)
        store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-weights", type=Path, help="TeachCLIP / CLIP4Clip / OpenAI CLIP checkpoint "
                        "(default: a random ViT-B/32-shaped CLIP)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=30, help="text queries per size (distinct captions)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--index-rounds", type=int, default=2, help="timed indexing rounds of the sample videos")
    parser.add_argument("--stores", nargs="+", default=["lite"],
                        help="stores for the query part: `lite` (embedded Milvus Lite) and/or Milvus server URIs")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dnsvr-text-bench-") as scratch_name:
        scratch = Path(scratch_name)
        weights = args.text_weights or random_vit_b32(scratch / "vit_b32_random.pt")
        print("exporting the bundled pack without a text-video student and with the TeachCLIP one ...", flush=True)
        plain = scratch / "plain"
        build_repository(from_pack(ModelPack.bundled(), own_text=False), plain)
        with_text = scratch / "with_text"
        manifest = build_repository(resolve_weights(["bundled"], text_weights=weights), with_text)
        indexing = [index_throughput(plain, scratch, "DnS only", args.index_rounds),
                    index_throughput(with_text, scratch, "DnS + text-video vector", args.index_rounds)]
        for entry in indexing:
            print(f"{entry['label']}: {entry['fps']:.2f} frames/s, embed {cell(entry['embed_ms'])} ms", flush=True)
        rows = [row for store in args.stores
                for row in query_latency(with_text, None if store == "lite" else store, scratch, args.sizes,
                                         args.queries, args.top_k)]
    write_report(args, manifest["text"], indexing, rows)


def write_report(args: argparse.Namespace, text: dict, indexing: list[dict], rows: list[dict]) -> None:
    student = args.text_weights or "a random ViT-B/32-shaped CLIP (TeachCLIP's backbone; weights do not change latency)"
    base = indexing[0]["fps"]
    lines = [
        "# Text search benchmark: query latency and indexing overhead, through the local Triton + Milvus",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, CPU only; "
        f"`python benchmarks/text_search_bench.py` ({time.strftime('%Y-%m-%d')}).",
        f"Text-video student: {student}; {text['embed_dim']}-d vectors, {text['max_frames']} frames at "
        f"{text['image_size']} px, {text['max_words']} tokens, AFA {text['afa']}.  DnS pack: the bundled one.",
        "",
        "## Indexing overhead of the text-video vector",
        "",
        f"The {len(sorted(VIDEOS.glob('*.mp4')))} sample videos indexed {args.index_rounds} times through "
        "`dnsvr_index` (after one untimed round), one request at a time.",
        "",
        "| repository | frames | seconds | frames/s | relative | embed ms per video (median / p95) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in indexing:
        lines.append(f"| {entry['label']} | {entry['frames']} | {entry['seconds']:.1f} | {entry['fps']:.2f} | "
                     f"{entry['fps'] / base:.2f} | {cell(entry['embed_ms'])} |")
    lines += [
        "",
        "## Text query latency",
        "",
        f"{args.queries} distinct captions per size (after {WARM_UP} untimed ones), top-{args.top_k}; cells are "
        "median / p95 in ms.  `embed` = dnsvr_text_embed (tokenizer + text encoder), `search` = the Milvus top-k "
        "and the generation check, `total` = dnsvr_search_text, `round_trip` = the client's.",
        "",
        "| videos | store | embed | search | total | round_trip |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["timings"]
        lines.append(f"| {row['size']:,} | {row['store']} | {cell(t['embed'])} | {cell(t['search'])} | "
                     f"{cell(t['total'])} | {cell(t['round_trip'])} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
