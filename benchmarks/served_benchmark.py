"""The near-duplicate benchmark through the served system: mAP of the real service, with and without its views.

    .venv/bin/python benchmarks/served_benchmark.py [--presets heldout small] [--seed 0]

The offline evaluation (`dnsvr eval benchmark`, `benchmarks/view_fusions.py`) scores the pack's networks in PyTorch;
this asks the service a user runs (Triton with the exported ONNX networks, the Milvus server `dnsvr serve` starts)
the same questions.  One export of the bundled pack (crop views), a copy whose manifest also records frame windows
(`dnsvr export --index-segments 0.25`: crop and segment views), one with neither (full frames alone) and one that
stores each crop view's fine codes too (`--view-codes`: S^f_B compares each candidate's best view); for each, side
by side in one run: every benchmark video indexed through `dnsvr_index` (its rendered frames, as the offline
features were extracted from), then every query searched by its indexed id with K' = every other video (the store
setting `view_depth` that too: the whole list ranked exactly by each video's best view, as the offline evaluation
ranks) and the served default re-rank (the selector sending 10 % to S^f_B, the pack's fusion), with re-rank 0 (S^c
alone) and with every candidate re-ranked (S^f_B's own ranking, the pack's fusion); mAP from the benchmark's own
evaluation.  `--variants views segments` measures the bundled export and the one with frame windows alone.
Also the indexing time per frame.  Writes benchmarks/results/served_benchmark.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dnsvr.client import VideoSearchClient
from dnsvr.client.spec import MAX_TOP_K
from dnsvr.serving.local.service import LocalService
from dnsvr.training import paths
from dnsvr.training.evaluation.tradeoff import benchmark_with_features
from dnsvr.training.files import atomic_write_text
from index_views_bench import exported_variant
from serving_bench import export_repository
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "served_benchmark.md"
POLICIES = {"S^c alone (re-rank 0)": 0.0, "DnS, the served default (re-rank 10%)": 0.1,
            "S^f_B on every candidate (re-rank 100%)": 1.0}
VARIANTS = ("views", "segments", "full", "codes")  # the export as it is (the bundled pack's crop views), with frame
# windows too, with neither, and with each crop view's fine codes stored too (S^f_B compares each candidate's best
# view)
SEGMENTS = {"lengths": [0.25]}  # `dnsvr export --index-segments 0.25`


def measure(repository: Path, scratch: Path, benchmark) -> dict:
    """Index the benchmark through the service, search every query by id -> {policy: (mAP, hard mAP)} and the
    indexing ms per frame."""
    videos = list(benchmark.iter_frames(progress=False))
    frames = sum(len(clip) for _, clip in videos)
    out = {}
    others = len(videos) - 1
    exhaustive = {paths.VIEW_DEPTH: str(others)}  # K' = every other video, ranked exactly by best view throughout
    with LocalService(repository, store=scratch / "store", log_dir=scratch, env=exhaustive) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=900) as client:
        began = time.perf_counter()
        with tqdm(total=len(videos), desc="indexing", unit="video") as bar:
            outcomes = client.index_many(videos, on_done=lambda _: bar.update(1))
        out["index_ms_per_frame"] = 1000 * (time.perf_counter() - began) / frames
        failed = [outcome.error for outcome in outcomes if not outcome.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} videos failed to index: {failed[:3]}")
        for name, rerank in POLICIES.items():
            similarities = {}
            for query in benchmark.queries:
                result = client.search(video_id=query, top_k=min(others, MAX_TOP_K), rerank=rerank,
                                       candidates=others)
                similarities[query] = {hit.video_id: hit.score for hit in result}
            evaluated = benchmark.evaluate(similarities)
            out[name] = (evaluated["overall"]["mAP"], evaluated.get("hard", {}).get("mAP", float("nan")))
            print(f"  {name}: {out[name][0]:.4f} / {out[name][1]:.4f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["heldout", "small"])
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed (default 0)")
    parser.add_argument("--repository", type=Path, help="exported bundled repository (default: export one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="views: the export with its crop grid; segments: with frame windows too "
                             "(--index-segments 0.25); full: with neither; codes: with the crop views' fine codes "
                             "too (--view-codes) (default: all four)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="served-benchmark-") as folder:
        scratch = Path(folder)
        repository = args.repository or export_repository(scratch / "repository")
        variants = {}
        if "views" in args.variants:
            variants["crop views (the bundled pack)"] = repository
        if "segments" in args.variants:
            variants["crop and segment views (--index-segments 0.25)"] = exported_variant(
                repository, scratch / "segments", index_segments=SEGMENTS)
        if "full" in args.variants:
            variants["full frame only (--index-views none)"] = exported_variant(repository, scratch / "plain",
                                                                                index_views=None)
        if "codes" in args.variants:
            variants["crop views and their fine codes (--view-codes)"] = exported_variant(
                repository, scratch / "codes", view_codes=True)
        for preset in args.presets:
            _, benchmark, _ = benchmark_with_features(preset, args.seed, progress=False)
            for name, variant in variants.items():
                print(f"{preset} {args.seed}, {name} ...", flush=True)
                run = scratch / f"run-{len(rows)}"
                run.mkdir()
                rows.append((preset, name, measure(variant, run, benchmark)))
    lines = ["# The near-duplicate benchmark through the served system\n",
             f"`benchmarks/served_benchmark.py --presets {' '.join(args.presets)} --seed {args.seed}` "
             f"({time.strftime('%Y-%m-%d')}, CPU only): every benchmark video indexed through `dnsvr_index`, every "
             "query searched by its indexed id over all the other videos (K' = all). mAP / mAP on hard copies.\n",
             "| preset | index | " + " | ".join(POLICIES) + " | indexing ms / frame |",
             "|---|---|" + "---:|" * (len(POLICIES) + 1)]
    for preset, name, out in rows:
        cells = [f"{out[policy][0]:.4f} / {out[policy][1]:.4f}" for policy in POLICIES]
        lines.append(f"| {preset} | {name} | " + " | ".join(cells) + f" | {out['index_ms_per_frame']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
