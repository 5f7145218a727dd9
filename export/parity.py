"""Parity of an exported graph with its PyTorch network: ONNX Runtime vs the eager public API.

`check_parity(name, network, onnx_path)` runs every case of `PARITY_CASES` (odd frame counts, videos shorter
than 4 frames, heavy padding, a padded query) through ONNX Runtime and through the network's own eager
entry point (`index_video`, `calculate_video_similarity`, the selector MLP, the extractor's forward and, for
`feature_extractor_pooled`, `EfficientNetLite0.pooled_features`; a text-video student's `encode_text` /
`encode_video`), and raises ParityError when any output is outside `TOLERANCES`.  S^f_B codes must be exact:
the packed bytes equal `pack_codes` of the student's ±1 codes and unpack to them.  Returns the largest absolute
error seen.

`check_comparator_parity(network, model_path, comparator_path)` does the same for the CPU path of
fine_similarity_bin (`dnsvr.export.hamming`: Hamming kernel + `comparator.onnx`), against the student
(`TOLERANCES`) and against the float graph `model_path` it stands in for (`KERNEL_VS_GRAPH`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dnsvr.client import spec
from dnsvr.export.hamming import HammingFineSimilarity
from dnsvr.export.onnx_export import example_feeds
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.training.networks.codes import pack_codes, unpack_codes
from torch import nn

# (atol, rtol) per graph, ONNX Runtime CPU vs PyTorch CPU in float32.  The golden contract asks 1e-5 of a
# re-implementation; the extractors are 60+ layers deep, hence the looser bound there.
TOLERANCES: dict[str, tuple[float, float]] = {
    spec.FEATURE_EXTRACTOR.name: (1e-4, 1e-4),
    spec.FEATURE_EXTRACTOR_POOLED.name: (1e-4, 1e-4),
    spec.COARSE_EMBED.name: (1e-5, 1e-5),
    spec.FINE_INDEX_BIN.name: (0.0, 0.0),
    spec.FINE_INDEX_ATT.name: (1e-5, 1e-5),
    spec.SELECTOR_INDEX.name: (1e-5, 1e-5),
    spec.SELECTOR_SCORE.name: (1e-5, 1e-5),
    spec.FINE_SIMILARITY_BIN.name: (1e-5, 1e-5),
    spec.FINE_SIMILARITY_ATT.name: (1e-5, 1e-5),
    spec.TEXT_ENCODER.name: (1e-4, 1e-4),  # unit vectors out of 12+ CLIP blocks (ViT-B/32: 12 + 4)
    spec.VIDEO_TEXT_EMBED.name: (1e-4, 1e-4),
    spec.TEXT_ENCODER_MINILM.name: (1e-5, 1e-5),
    spec.VIDEO_TEXT_EMBED_EFFNET.name: (1e-5, 1e-5),
}
KERNEL_VS_GRAPH = 1e-6  # max abs difference of fine_similarity_bin's CPU path from its float graph (same ORT)


@dataclass(frozen=True)
class ParityCase:
    """Videos of `lengths` real frames padded to `frames`; a query of `query_length` padded to `query_frames`."""

    lengths: tuple[int, ...]
    frames: int
    query_length: int = 5
    query_frames: int = 5


PARITY_CASES = (
    ParityCase((1, 2, 3, 7, 12), 16, query_length=5, query_frames=9),  # short videos, heavy padding
    ParityCase((9,), 9, query_length=1, query_frames=1),  # odd T, unpadded; 1-frame query
    ParityCase((4, 5), 30, query_length=10, query_frames=10),  # padding > content
    ParityCase((3,), 3, query_length=2, query_frames=6),  # T < 4 everywhere
)
EXTRACTOR_FRAMES = (1, 3)
TEXT_CASES = (  # (lengths, padded to): BPE tokens per caption / real frames per video
    ((30, 1, 7), 32),  # a full caption, an empty one (SOT EOT), padding after EOT
    ((4,), 6),
)
VIDEO_TEXT_CASES = (((3, 1), 3), ((2,), 2), ((1, 4), 4))  # short videos, a 1-frame one; max_frames is added


class ParityError(AssertionError):
    """An exported graph whose output differs from the PyTorch network beyond its tolerance."""


def reference_output(name: str, network: nn.Module, feeds: dict[str, np.ndarray],
                     afa: str = "official") -> np.ndarray | dict[str, np.ndarray]:
    """What the eager PyTorch network's public API returns for `feeds` (the graph's inputs): its one output, or
    {output name: array} for a graph with several; `afa`: a TeachCLIP student's AFA mode."""
    if name in spec.TEXT_NETWORKS:
        from dnsvr.export.text_kinds import text_export

        return text_export(name).reference_output(name, network, feeds, afa)
    t = {key: torch.from_numpy(value) for key, value in feeds.items()}
    with torch.no_grad():
        if name == spec.FEATURE_EXTRACTOR.name:
            return network(t["frames"]).numpy()
        if name == spec.FEATURE_EXTRACTOR_POOLED.name:
            from dnsvr.training.networks.efficientnet import normalize_frames

            return {"features": network(t["frames"]).numpy(),
                    "pooled": network.cnn.pooled_features(normalize_frames(t["frames"])).numpy()}
        if name in (spec.COARSE_EMBED.name, spec.SELECTOR_INDEX.name):
            return network.index_video(t["features"], t["mask"]).numpy()
        if name in (spec.FINE_INDEX_BIN.name, spec.FINE_INDEX_ATT.name):
            return network.index_video(t["features"], t["mask"]).numpy()
        if name == spec.SELECTOR_SCORE.name:
            return network(t["pair_features"])[:, 0].numpy()
        if name in (spec.FINE_SIMILARITY_BIN.name, spec.FINE_SIMILARITY_ATT.name):
            unpack = unpack_codes if name == spec.FINE_SIMILARITY_BIN.name else np.asarray
            query, candidates = torch.from_numpy(unpack(feeds["query"])), torch.from_numpy(unpack(feeds["candidates"]))
            similarity = network.calculate_video_similarity(query, candidates, t["query_mask"], t["candidate_mask"])
            f2f, _ = network.frame_to_frame_similarity(query, candidates, t["query_mask"], t["candidate_mask"])
            return {"similarity": similarity[0].numpy(),
                    "f2f": _real_frames(f2f.numpy(), feeds["query_mask"], feeds["candidate_mask"])}
    raise KeyError(f"no reference for model '{name}'")


def _real_frames(f2f: np.ndarray, query_mask: np.ndarray, candidate_mask: np.ndarray) -> np.ndarray:
    """The student's f2f `[K, Tq', Tt']` (short videos repeated) -> `[K, Tq, Tt]` of the masks' shapes: each
    pair's real (unrepeated) frames' cells, 0 elsewhere (what the fine_similarity graphs give as `f2f`)."""
    real = np.zeros((len(candidate_mask), len(query_mask), candidate_mask.shape[1]), np.float32)
    query_length = int(query_mask.sum())
    for k, length in enumerate(candidate_mask.sum(axis=1)):
        real[k, :query_length, :length] = f2f[k, :query_length, :length]
    return real


def _compare_codes(onnx_codes: np.ndarray, student_codes: np.ndarray, mask: np.ndarray) -> None:
    if not np.array_equal(onnx_codes, pack_codes(student_codes)):
        raise ParityError("fine_index_bin: packed codes differ from pack_codes(student codes)")
    real = unpack_codes(onnx_codes)[mask]
    if not np.array_equal(real, student_codes[mask]):
        raise ParityError("fine_index_bin: unpacked codes differ from the student's ±1 codes")


def _text_cases(name: str, network: nn.Module) -> list[dict[str, np.ndarray]]:
    from dnsvr.export.text_kinds import text_export

    kind = text_export(name)
    if name == kind.kind.encoder.name:
        return [kind.example_feeds(name, network, list(lengths), seed=i) for i, (lengths, _) in enumerate(TEXT_CASES)]
    full = network.max_frames
    cases = [*VIDEO_TEXT_CASES, ((full, max(1, full // 2)), full)]  # a full video and a half one
    return [kind.example_feeds(name, network, list(lengths), frames, seed=i)
            for i, (lengths, frames) in enumerate(cases)]


def parity_feeds(name: str, network: nn.Module | None = None) -> list[dict[str, np.ndarray]]:
    """The inputs every parity check of model `name` runs: PARITY_CASES (EXTRACTOR_FRAMES for the extractor,
    TEXT_CASES / VIDEO_TEXT_CASES for the text-video student, whose token and frame sizes come from `network`)."""
    model = spec.NETWORKS[name]
    if name in spec.TEXT_NETWORKS:
        return _text_cases(name, network)
    if name in (spec.FEATURE_EXTRACTOR.name, spec.FEATURE_EXTRACTOR_POOLED.name):
        return [example_feeds(model, frames=n, seed=n) for n in EXTRACTOR_FRAMES]
    return [example_feeds(model, list(c.lengths), c.frames, c.query_length, c.query_frames, seed=i)
            for i, c in enumerate(PARITY_CASES)]


def compare(label: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> float:
    """Max abs error of `got` against `want`; ParityError on a shape mismatch, a non-finite value or an error
    beyond (atol, rtol)."""
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        raise ParityError(f"{label}: output {got.shape} (finite: {np.isfinite(got).all()}) vs {want.shape}")
    error = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        raise ParityError(f"{label}: max abs error {error:.3g} exceeds atol={atol:g}, rtol={rtol:g}")
    return error


def check_parity(name: str, network: nn.Module, onnx_path: str | Path, threads: int = 0,
                 afa: str = "official") -> float:
    """Run `parity_feeds(name)` on `onnx_path` with ONNX Runtime and on `network` eagerly (the text-video
    student with AFA mode `afa`); raise ParityError when an output is outside TOLERANCES[name]; return the max
    absolute error."""
    model = spec.NETWORKS[name]
    runner = OnnxRunner(onnx_path, intra_op_threads=threads)
    worst = 0.0
    for feeds in parity_feeds(name, network):
        got = runner.run(feeds)
        want = reference_output(name, network, feeds, afa)
        wanted = want if isinstance(want, dict) else {model.output_names[0]: want}
        if name == spec.FINE_INDEX_BIN.name:
            _compare_codes(got["indexed"], want, feeds["mask"])
            continue
        for output, expected in wanted.items():
            worst = max(worst, compare(f"{name} {output}", got[output], expected, *TOLERANCES[name]))
    return worst


def check_comparator_parity(network: nn.Module, model_path: str | Path, comparator_path: str | Path,
                            threads: int = 0) -> tuple[float, float]:
    """Run PARITY_CASES through fine_similarity_bin's CPU path (Hamming kernel + `comparator_path`), the
    student `network` and the float graph `model_path`; raise ParityError beyond TOLERANCES (student) or
    KERNEL_VS_GRAPH (graph); return the max abs errors (vs the student, vs the graph)."""
    name = spec.FINE_SIMILARITY_BIN.name
    kernel = HammingFineSimilarity(comparator_path, intra_op_threads=threads)
    graph = OnnxRunner(model_path, intra_op_threads=threads)
    worst_student = worst_graph = 0.0
    for feeds in parity_feeds(name):
        got, want, float_graph = kernel.run(feeds), reference_output(name, network, feeds), graph.run(feeds)
        for output in spec.FINE_SIMILARITY_BIN.output_names:
            student = compare(f"{name} {output} (Hamming kernel + comparator)", got[output], want[output],
                              *TOLERANCES[name])
            vs_graph = compare(f"{name} {output} (Hamming kernel + comparator vs float graph)", got[output],
                               float_graph[output], KERNEL_VS_GRAPH, 0.0)
            worst_student, worst_graph = max(worst_student, student), max(worst_graph, vs_graph)
    return worst_student, worst_graph
