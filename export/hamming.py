"""S^f_B fine similarity on the CPU: popcount Hamming distances of the packed codes, then the comparator graph.

The float graph (`fine_similarity_bin/1/model.onnx`, kept for ONNX Runtime on GPU and TensorRT) unpacks the
±1 codes and multiplies them: 512 multiply-adds per region pair.  Here the region similarity comes from the
packed bytes (`dnsvr.training.networks.codes`): for ±1 codes a, b of B bits, a·b = B - 2·hamming(a, b), with
XOR and hardware popcount over 64-bit words.  The region Chamfer of two frames (max over candidate regions,
mean over query regions) is then integer arithmetic: H = sum over the R query regions of the min over the R
candidate regions of the distance, and the frame similarity is (R·B - 2H) / (R·B), bit for bit what the
float graph computes (integer dot products, their max, an exact sum of R terms, one rounding).  The learned
rest (short-video rule, comparator CNN, frame Chamfer) runs as a second, small ONNX graph beside the float
one, `comparator.onnx` (`dnsvr.export.graphs.ComparatorGraph`, checked by `dnsvr.export.parity`), on each
candidate's real cells only: one run per candidate length (`comparator_runs`), so no cell is padding and the
graph needs no masks (the masked graph's masked passes and their layout changes were ~30 % of its profile;
50 pairs at T = 60 on 2 threads: 22.6 -> 19.4 ms, `benchmarks/fine_similarity_bench.py`).  Each run is
one task of a thread pool: its candidates' Hamming sums, their frame similarities, then the comparator on them
(one ONNX Runtime thread), so the two stages meet no barrier between them (`HammingFineSimilarity.score`).

    frame_hamming(query [Tq, R, W], frames [N, R, W], pool)        -> int32 [Tq, N]: H of every frame pair
    frame_similarities(query, query_mask, candidates, candidate_mask, pool) -> float32 [K, Tq, Tt]
    HammingFineSimilarity(comparator_path, threads, intra_op_threads).run(feeds)
        -> {"similarity": [K], "f2f": [K, Tq, Tt]}

W = B / 8 bytes per region (64 for 512-bit codes, a multiple of 8).  Two kernels compute H, the same integers
(tests pin both to the definition); `KERNELS` are those this machine runs, `KERNEL` the one it uses:

- "avx512": `dnsvr.export._hamming`, a small C extension built by the package install (optional: no compiler,
  no module), where the CPU has AVX-512 VPOPCNTDQ: distances, min and sum fused in one pass, 8 candidate
  frames per vector, nothing written but H (K = 50, T = 60: 8 ms on one thread, `benchmarks/hamming_kernel_bench.py`);
- "faiss": `faiss.hammings` (hardware popcount, one distance matrix per tile of query x candidate frames so
  it stays in cache: one call over all candidates wrote 58 MB and was 1.5x slower), candidate regions
  region-major so the min and the sum are element-wise numpy reductions (22-26 ms).
With `threads` > 1 the runs go to a thread pool (both kernels and ONNX Runtime release the GIL, neither kernel
spawns threads of its own; `frame_hamming` given a pool splits its tiles over it).  Only real frames are
compared: padding costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
from dnsvr.client import spec
from dnsvr.export.onnx_runner import GraphTensor, OnnxInputError, OnnxRunner, check_feeds

try:
    from dnsvr.export import _hamming
except ImportError:  # installed without a C compiler
    _hamming = None

KERNELS = ("avx512", "faiss") if _hamming is not None and _hamming.available() else ("faiss",)  # here, best first
KERNEL = KERNELS[0]
COMPARATOR_FILE = "comparator.onnx"  # beside model.onnx in fine_similarity_bin's version folder
TILE_QUERY_FRAMES = 64  # faiss: 64 x 9 x 1152 distances = 2.6 MB per tile
TILE_CANDIDATE_FRAMES = 128  # 128 frames x 9 regions x 64 bytes = 72 KB of codes
LANES = 8  # candidate frames per AVX-512 vector of 64-bit words
RUNS_PER_THREAD = 2  # comparator_runs: 4 runs of 12-13 pairs on 2 threads beat 2, 3, 6 or 8 (scratch timings)
MIN_RUN_PAIRS = 6  # ... but 13 pairs ran slower in 4 runs than in 2 (14.1 vs 11.8 ms): each run is 2 more calls
Tile = TypeVar("Tile")


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"Hamming kernel {kernel!r} is not available here: this machine runs {KERNELS}")


def _run_tiles(task: Callable[[Tile], None], tiles: Sequence[Tile], pool: ThreadPoolExecutor | None) -> None:
    """`task` on every tile: on `pool` when there is one and more than one tile, else in this thread."""
    if pool is None or len(tiles) == 1:
        for tile in tiles:
            task(tile)
    else:
        list(pool.map(task, tiles))


def _faiss_tile(query: np.ndarray, frames: np.ndarray, out: np.ndarray) -> None:
    """H of query frames `[q, R, W]` x candidate frames `[n, R, W]` (uint8, contiguous) into `out` `[q, n]`."""
    n, regions, width = frames.shape
    left = query.reshape(-1, width)
    right = np.ascontiguousarray(frames.transpose(1, 0, 2)).reshape(-1, width)  # region-major: [R * n, W]
    distances = np.empty((len(left), len(right)), np.int32)
    faiss.hammings(faiss.swig_ptr(left), faiss.swig_ptr(right), len(left), len(right), width,
                   faiss.swig_ptr(distances))
    closest = np.minimum.reduce(distances.reshape(len(query), regions, regions, n), axis=2)  # [q, R, n]
    closest.sum(axis=1, dtype=np.int32, out=out)


def _faiss_hamming(query: np.ndarray, frames: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
    """frame_hamming with faiss: tiles of query x candidate frames."""
    out = np.empty((len(query), len(frames)), np.int32)
    tiles = [(slice(q, q + TILE_QUERY_FRAMES), slice(c, c + TILE_CANDIDATE_FRAMES))
             for q in range(0, len(query), TILE_QUERY_FRAMES) for c in range(0, len(frames), TILE_CANDIDATE_FRAMES)]
    _run_tiles(lambda tile: _faiss_tile(query[tile[0]], frames[tile[1]], out[tile]), tiles, pool)
    return out


def _avx512_hamming(query: np.ndarray, frames: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
    """frame_hamming with dnsvr.export._hamming: candidate frames zero-padded to blocks of LANES and laid out
    word-interleaved (`lanes[b, s, w, l]`), tiles of TILE_CANDIDATE_FRAMES, the whole query each."""
    n, regions, width = frames.shape
    blocks, words = -(-n // LANES), width // 8
    padded = np.zeros((blocks * LANES, regions, width), np.uint8)
    padded[:n] = frames
    lanes = np.ascontiguousarray(padded.view(np.uint64).reshape(blocks, LANES, regions, words).transpose(0, 2, 3, 1))
    query_words = query.view(np.uint64)
    out = np.empty((blocks, len(query), LANES), np.int32)
    step = TILE_CANDIDATE_FRAMES // LANES

    def run(start: int) -> None:
        part = slice(start, start + step)
        _hamming.region_chamfer(query_words, lanes[part], out[part], len(query), regions, words, len(lanes[part]))

    _run_tiles(run, range(0, blocks, step), pool)
    return out.transpose(1, 0, 2).reshape(len(query), -1)[:, :n]


def frame_hamming(query: np.ndarray, frames: np.ndarray, pool: ThreadPoolExecutor | None = None,
                  kernel: str = KERNEL) -> np.ndarray:
    """Region-Chamfer Hamming sums of every frame pair: query `[Tq, R, W]`, frames `[N, R, W]` (uint8 packed
    codes) -> int32 `[Tq, N]`, H[i, j] = sum over query regions r of min over frame regions s of
    hamming(query[i, r], frames[j, s]).  `pool`: tiles run on it (None: in this thread); `kernel`: one of
    KERNELS (default: the fastest here)."""
    _check_kernel(kernel)
    if query.dtype != np.uint8 or frames.dtype != np.uint8:
        raise TypeError(f"packed codes must be uint8, got {query.dtype} and {frames.dtype}")
    if query.ndim != 3 or query.shape[1:] != frames.shape[1:] or query.shape[2] % 8:
        raise ValueError(f"codes [T, R, W] with W a multiple of 8 and equal (R, W) needed, got query "
                         f"{list(query.shape)} and frames {list(frames.shape)}")
    query, frames = np.ascontiguousarray(query), np.ascontiguousarray(frames)
    return (_avx512_hamming if kernel == "avx512" else _faiss_hamming)(query, frames, pool)


def similarity_of_totals(totals: np.ndarray, regions: int, width: int) -> np.ndarray:
    """Region-Chamfer Hamming sums int32 `[...]` of codes of `regions` x `width` bytes -> the frame similarities
    float32 `[...]`: (R·B - 2H) / (R·B), B = 8·width bits (integers up to R·B are exact in float32)."""
    scale = regions * width * 8
    return (scale - 2 * totals).astype(np.float32) / np.float32(scale)


def frame_similarities(query: np.ndarray, query_mask: np.ndarray, candidates: np.ndarray,
                       candidate_mask: np.ndarray, pool: ThreadPoolExecutor | None = None,
                       kernel: str = KERNEL) -> np.ndarray:
    """The float graph's frame-to-frame similarities from packed codes, short videos not repeated.

    query uint8 `[Tq, R, W]`, query_mask bool `[Tq]`, candidates uint8 `[K, Tt, R, W]`, candidate_mask bool
    `[K, Tt]` (prefix masks) -> float32 `[K, Tq, Tt]`: (R·B - 2H) / (R·B) at real frame pairs (B = 8W bits),
    0 elsewhere.  What padded frames hold is never read.  `pool`, `kernel`: as for `frame_hamming`.
    """
    real_query = query[: int(query_mask.sum())]
    pairs, frames = np.nonzero(candidate_mask)  # row-major: the order of candidates[candidate_mask]
    totals = frame_hamming(real_query, candidates[pairs, frames], pool, kernel)  # [Lq, N]
    f2f = np.zeros((len(candidates), len(query), candidates.shape[1]), np.float32)
    f2f[pairs, : len(real_query), frames] = similarity_of_totals(totals, *query.shape[1:]).T
    return f2f


def comparator_runs(lengths: np.ndarray, threads: int) -> list[np.ndarray]:
    """The runs of the fine similarity's work for candidates of `lengths` real frames `[K]`: one length per run
    (the comparator graph takes unpadded matrices), each length's candidates split over the `threads` as its
    share of the work (pairs x frames) asks, and further into runs of about 1 / (RUNS_PER_THREAD x threads) of
    the whole work while they keep MIN_RUN_PAIRS pairs, so that a thread that frees up takes the next run; the
    most work first -> positions, one int array a run."""
    total = int(lengths.sum())
    runs = []
    for length in np.unique(lengths):
        positions = np.flatnonzero(lengths == length)
        work = len(positions) * int(length)
        even = -(-work * threads // total)  # ceil: this length's share of the threads
        finer = min(-(-work * RUNS_PER_THREAD * threads // total), len(positions) // MIN_RUN_PAIRS)
        runs += np.array_split(positions, min(len(positions), max(even, finer if threads > 1 else 1)))
    return sorted(runs, key=lambda positions: -len(positions) * int(lengths[positions[0]]))


def _spec_tensors(tensors: Sequence[spec.TensorSpec]) -> list[GraphTensor]:
    return [GraphTensor(t.name, t.numpy_dtype, tuple(None if d == -1 else d for d in t.dims)) for t in tensors]


def _check_prefix_mask(name: str, mask: np.ndarray) -> None:
    lengths = mask.sum(axis=-1)
    if not np.array_equal(mask, np.arange(mask.shape[-1]) < lengths[..., None]) or (lengths == 0).any():
        raise OnnxInputError(f"input '{name}' must be a prefix mask (True at the real frames, then False) with "
                             f"at least one real frame per video")


class HammingFineSimilarity:
    """fine_similarity_bin (`spec.FINE_SIMILARITY_BIN`) on the CPU: the Hamming kernel, then `comparator_path`.

    The interface of `OnnxRunner` (`input_names`, `output_names`, `validate`, `run`, `model_path`), so the
    cpu_local adapter and `run_requests` use either.  threads: kernel and comparator threads (a pool of that
    many when > 1); intra_op_threads: ONNX Runtime's within each comparator run (1 where the pool splits the
    runs); kernel: one of KERNELS.  `close()` stops the pool.
    """

    def __init__(self, comparator_path: str | Path, threads: int = 1, intra_op_threads: int = 1,
                 kernel: str = KERNEL) -> None:
        # no spinning: ONNX Runtime's idle workers would take the cores from the next request's kernel tiles
        self.comparator = OnnxRunner(comparator_path, intra_op_threads=intra_op_threads, allow_spinning=False)
        if self.comparator.inputs != _spec_tensors(spec.FINE_COMPARATOR.inputs):
            raise OnnxInputError(f"{comparator_path}: inputs {[t.describe() for t in self.comparator.inputs]} are "
                                 f"not those of {spec.FINE_COMPARATOR.name}")
        self.model_path = self.comparator.model_path
        self.inputs = _spec_tensors(spec.FINE_SIMILARITY_BIN.inputs)
        self.output_names = list(spec.FINE_SIMILARITY_BIN.output_names)
        _check_kernel(kernel)
        self.threads, self.kernel = threads, kernel
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="hamming") if threads > 1 else None

    @property
    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.inputs]

    def validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`OnnxRunner.validate` against the spec, plus what the graph cannot check: frame counts that agree
        and prefix masks with a real frame per video.  Raises OnnxInputError."""
        checked = check_feeds(spec.FINE_SIMILARITY_BIN.name, self.inputs, feeds)
        query, candidates = checked["query"], checked["candidates"]
        if checked["query_mask"].shape != query.shape[:1]:
            raise OnnxInputError(f"query_mask has shape {list(checked['query_mask'].shape)}, query "
                                 f"{list(query.shape)}: one entry per query frame needed")
        if checked["candidate_mask"].shape != candidates.shape[:2]:
            raise OnnxInputError(f"candidate_mask has shape {list(checked['candidate_mask'].shape)}, candidates "
                                 f"{list(candidates.shape)}: one entry per candidate frame needed")
        for name in ("query_mask", "candidate_mask"):
            _check_prefix_mask(name, checked[name])
        return checked

    def frame_similarities(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Validated feeds -> the comparator's f2f input, float32 `[K, Tq, Tt]` (`frame_similarities`): the first
        stage where `score` runs two (no more runs than threads), and the stage benchmarks time alone."""
        return frame_similarities(feeds["query"], feeds["query_mask"], feeds["candidates"], feeds["candidate_mask"],
                                  self.pool, self.kernel)

    def compare(self, f2f: np.ndarray, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """f2f `[K, Tq, Tt]` and the feeds' masks -> similarity float32 `[K]`: the comparator graph on each
        candidate's real cells, in the runs of `comparator_runs`, on the pool where there is one: the second
        stage where `score` runs two."""
        query_length = int(feeds["query_mask"].sum())
        lengths = feeds["candidate_mask"].sum(axis=1)
        similarity = np.empty(len(f2f), np.float32)

        def run(positions: np.ndarray) -> None:
            real = np.ascontiguousarray(f2f[positions, :query_length, : lengths[positions[0]]])  # [n, Lq, Lt]
            similarity[positions] = self.comparator.run({"f2f": real})["similarity"]

        _run_tiles(run, comparator_runs(lengths, self.threads), self.pool)
        return similarity

    def score(self, feeds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Validated feeds -> similarity float32 `[K]` and f2f float32 `[K, Tq, Tt]` (0 outside the real frame
        pairs): `score_in_runs` over the runs of `comparator_runs`, or, where there are no more runs than threads
        (13 pairs on 2: 11.9 ms in two stages, 13.8 in one pass, a scratch timing), `frame_similarities` then
        `compare`, whose scores it equals."""
        runs = comparator_runs(feeds["candidate_mask"].sum(axis=1), self.threads)
        if self.pool is not None and len(runs) <= self.threads:  # a run a thread: no run to take over
            f2f = self.frame_similarities(feeds)  # the kernel's small tiles balance the threads instead
            return self.compare(f2f, feeds), f2f
        return self.score_in_runs(feeds, runs)

    def score_in_runs(self, feeds: Mapping[str, np.ndarray], runs: Sequence[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
        """`score` in one pass: each run (candidate positions of one length, `comparator_runs`) computes its
        candidates' frame similarities with the kernel and then their comparator scores, on one thread of the
        pool, and a thread that frees up takes the next run, so that no stage waits for the other's slowest
        tile (served, 20 % re-ranked at 10k: fine_similarity 187 -> 168 ms,
        `benchmarks/results/revision_ab_one_pass.md`) -> (similarity `[K]`, f2f `[K, Tq, Tt]`), as `score`."""
        query, candidates = feeds["query"], feeds["candidates"]
        real_query = query[: int(feeds["query_mask"].sum())]  # [Lq, R, W]
        lengths = feeds["candidate_mask"].sum(axis=1)
        f2f = np.zeros((len(candidates), len(query), candidates.shape[1]), np.float32)
        similarity = np.empty(len(candidates), np.float32)

        def run(positions: np.ndarray) -> None:
            count, length = len(positions), int(lengths[positions[0]])
            frames = candidates[positions, :length].reshape(count * length, *query.shape[1:])  # [n * Lt, R, W]
            totals = frame_hamming(real_query, frames, None, self.kernel)  # [Lq, n * Lt]
            real = similarity_of_totals(totals, *query.shape[1:]).reshape(len(real_query), count, length)
            real = np.ascontiguousarray(real.transpose(1, 0, 2))  # [n, Lq, Lt]
            f2f[positions, : len(real_query), :length] = real
            similarity[positions] = self.comparator.run({"f2f": real})["similarity"]

        _run_tiles(run, runs, self.pool)
        return similarity, f2f

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Validate `feeds` (fine_similarity_bin's inputs), score them -> {"similarity": float32 [K], "f2f":
        float32 [K, Tq, Tt]} (`output_names`, as for `OnnxRunner.run`, picks among those outputs)."""
        unknown = sorted(set(output_names or ()) - set(self.output_names))
        if unknown:
            raise OnnxInputError(f"{spec.FINE_SIMILARITY_BIN.name}: unknown output(s) {unknown}; the model has "
                                 f"{self.output_names}")
        similarity, f2f = self.score(self.validate(feeds))
        outputs = {"similarity": similarity, "f2f": f2f}
        return {name: outputs[name] for name in (output_names or self.output_names)}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
