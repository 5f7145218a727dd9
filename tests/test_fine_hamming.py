"""The CPU path of fine_similarity_bin (dnsvr.export.hamming: popcount Hamming kernel + comparator.onnx) against
the float ±1 graph it stands in for and the eager S^f_B student: Hamming sums exact, frame similarities bit for
bit, scores within 1e-6; golden and random codes, odd frame counts, padding, 1-3 frame videos, K = 1; every
Hamming kernel this machine runs (the AVX-512 extension and faiss)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dnsvr.client import spec
from dnsvr.export import hamming
from dnsvr.export.graphs import GRAPH_CLASSES, ComparatorGraph
from dnsvr.export.hamming import (
    KERNEL,
    KERNELS,
    HammingFineSimilarity,
    comparator_runs,
    frame_hamming,
    frame_similarities,
)
from dnsvr.export.onnx_export import example_feeds, export_onnx
from dnsvr.export.onnx_runner import OnnxInputError, OnnxRunner
from dnsvr.training import load_checkpoint
from dnsvr.training.networks.codes import pack_codes, unpack_codes

SAME_AS_GRAPH = 1e-6  # the bound for scores; measured: 0-3e-8 (the comparator runs batch pairs otherwise)


@pytest.fixture(scope="module")
def student(golden_dir: Path) -> torch.nn.Module:
    return load_checkpoint(golden_dir / "fg_bin_student.pth")


@pytest.fixture(scope="module")
def graphs(student, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fine_bin")
    return {"model": export_onnx(GRAPH_CLASSES[spec.FINE_SIMILARITY_BIN.name](student), spec.FINE_SIMILARITY_BIN,
                                 folder / "model.onnx"),
            "comparator": export_onnx(ComparatorGraph(student), spec.FINE_COMPARATOR, folder / "comparator.onnx")}


@pytest.fixture(scope="module", params=KERNELS)
def kernel(graphs, request) -> HammingFineSimilarity:
    runner = HammingFineSimilarity(graphs["comparator"], threads=2, kernel=request.param)
    yield runner
    runner.close()


def brute_force_hamming(query: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The definition, from the unpacked ±1 codes: sum over query regions of the min over frame regions."""
    q, f = unpack_codes(query).astype(np.int64), unpack_codes(frames).astype(np.int64)
    distances = (q.shape[-1] - np.einsum("ird,jsd->ijrs", q, f)) // 2
    return distances.min(axis=3).sum(axis=2)


def random_codes(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, (*shape, spec.REGIONS, spec.CODE_BYTES), dtype=np.uint8)


def student_scores(student, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return student.calculate_video_similarity(
            torch.from_numpy(unpack_codes(feeds["query"])), torch.from_numpy(unpack_codes(feeds["candidates"])),
            torch.from_numpy(feeds["query_mask"]), torch.from_numpy(feeds["candidate_mask"]))[0].numpy()


def golden_feeds(golden_dir: Path) -> list[dict[str, np.ndarray]]:
    """Each golden query (padded) against all golden targets (padded): the golden S^f_B codes, packed."""
    z = np.load(golden_dir / "fg_bin_student.npz")
    queries, targets = pack_codes(z["queries_indexed"]), pack_codes(z["targets_indexed"])
    return [{"query": queries[i], "query_mask": z["queries_mask"][i], "candidates": targets,
             "candidate_mask": z["targets_mask"]} for i in range(len(queries))]


CASES = {  # name: (candidate lengths, candidate frames, query length, query frames)
    "odd frame counts": ([7, 9, 13], 13, 11, 11),
    "padded candidates and query": ([5, 12, 4, 30], 31, 6, 9),
    "1-3 frame candidates": ([1, 2, 3, 6], 8, 5, 5),
    "1-3 frame queries": ([4, 7], 7, 1, 3),
    "2 frame query, 3 frame candidates": ([3, 3], 5, 2, 2),
    "3 frame query, K = 1": ([1], 1, 3, 4),
    "K = 1": ([17], 17, 9, 9),
    "few lengths, each in runs on the pool": ([6, 6, 6, 6, 6, 9, 9, 2, 2, 2, 6], 9, 7, 8),
}


def test_the_install_builds_the_avx512_kernel_and_it_is_used_where_the_cpu_has_it() -> None:
    assert hamming._hamming is not None, "dnsvr.export._hamming was not built: is a C compiler installed?"
    assert KERNEL == ("avx512" if hamming._hamming.available() else "faiss")


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_frame_hamming_is_the_region_chamfer_of_hamming_distances_exactly(monkeypatch, threads, kernel_name) -> None:
    """Several tiles per axis, ragged last tiles and blocks, one thread or a pool: the definition's integers."""
    monkeypatch.setattr(hamming, "TILE_QUERY_FRAMES", 4)
    monkeypatch.setattr(hamming, "TILE_CANDIDATE_FRAMES", 16)
    rng = np.random.default_rng(threads)
    query, frames = random_codes(rng, 11), random_codes(rng, 53)
    frames[5] = query[2]  # a copy: its distance 0
    query[3] = query[3, :1]
    frames[6] = ~query[3]  # all regions alike, complemented: 512 bits apart in every region pair
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        got = frame_hamming(query, frames, pool if threads > 1 else None, kernel_name)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, brute_force_hamming(query, frames))
    assert got[2, 5] == 0 and got[3, 6] == spec.REGIONS * spec.FEATURE_DIMS
    for n in (0, 1, 7, 8, 9):  # empty, fewer than one block, block edges
        np.testing.assert_array_equal(frame_hamming(query[:3], frames[:n], None, kernel_name),
                                      brute_force_hamming(query[:3], frames[:n]))


def test_frame_similarities_are_the_students_bit_for_bit(student, golden_dir) -> None:
    """On the golden codes (no video shorter than 4 frames, so nothing is repeated): the student's own
    frame-to-frame matrix on ±1 floats, every real cell equal, 0 elsewhere."""
    for feeds in golden_feeds(golden_dir):
        f2f = frame_similarities(feeds["query"], feeds["query_mask"], feeds["candidates"], feeds["candidate_mask"])
        with torch.no_grad():
            want, mask = student.frame_to_frame_similarity(
                torch.from_numpy(unpack_codes(feeds["query"])), torch.from_numpy(unpack_codes(feeds["candidates"])),
                torch.from_numpy(feeds["query_mask"]), torch.from_numpy(feeds["candidate_mask"]))
        assert f2f.shape == tuple(want.shape)
        np.testing.assert_array_equal(f2f, want.numpy())
        assert not f2f[~mask.numpy()].any()


def test_golden_codes_score_like_the_float_graph_and_the_student(student, graphs, kernel, golden_dir) -> None:
    z = np.load(golden_dir / "fg_bin_student.npz")
    graph = OnnxRunner(graphs["model"])
    for i, feeds in enumerate(golden_feeds(golden_dir)):
        got = kernel.run(feeds)["similarity"]
        np.testing.assert_allclose(got, graph.run(feeds)["similarity"], rtol=0, atol=SAME_AS_GRAPH)
        np.testing.assert_allclose(got, student_scores(student, feeds), rtol=0, atol=SAME_AS_GRAPH)
        np.testing.assert_allclose(got, z["similarity_repeat"][i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_random_codes_score_like_the_float_graph_and_the_student(student, graphs, kernel, case) -> None:
    lengths, frames, query_length, query_frames = CASES[case]
    feeds = example_feeds(spec.FINE_SIMILARITY_BIN, lengths, frames, query_length, query_frames,
                          seed=len(case))
    outputs, graph = kernel.run(feeds), OnnxRunner(graphs["model"]).run(feeds)
    got = outputs["similarity"]
    assert got.shape == (len(lengths),) and got.dtype == np.float32
    np.testing.assert_allclose(got, graph["similarity"], rtol=0, atol=SAME_AS_GRAPH)
    np.testing.assert_allclose(got, student_scores(student, feeds), rtol=0, atol=SAME_AS_GRAPH)
    # f2f (copy localisation's matrix): the real frames' cells, not repeated, 0 elsewhere, as the float graph's
    assert outputs["f2f"].shape == (len(lengths), query_frames, frames)
    np.testing.assert_allclose(outputs["f2f"], graph["f2f"], rtol=0, atol=SAME_AS_GRAPH)
    real = feeds["query_mask"][None, :, None] & feeds["candidate_mask"][:, None, :]
    assert not outputs["f2f"][~real].any() and np.array_equal(kernel.run(feeds, ["f2f"])["f2f"], outputs["f2f"])


def test_threads_and_padded_content_change_nothing(graphs, kernel) -> None:
    feeds = example_feeds(spec.FINE_SIMILARITY_BIN, [3, 40, 2, 17], 41, 6, 8, seed=4)
    want = kernel.run(feeds)["similarity"]
    dirty = {name: array.copy() for name, array in feeds.items()}
    rng = np.random.default_rng(0)
    dirty["candidates"][~feeds["candidate_mask"]] = random_codes(rng, int((~feeds["candidate_mask"]).sum()))
    dirty["query"][~feeds["query_mask"]] = 255
    np.testing.assert_array_equal(kernel.run(dirty)["similarity"], want)
    single = HammingFineSimilarity(graphs["comparator"], threads=1)
    np.testing.assert_array_equal(single.run(feeds)["similarity"], want)


def test_comparator_runs_take_one_length_each_split_into_shares_of_the_work_most_work_first() -> None:
    lengths = np.array([5, 5, 5, 60, 2, 5, 60, 7])  # 149 frames: shares of 149 / 4 on 2 threads
    runs = comparator_runs(lengths, threads=2)
    assert sorted(np.concatenate(runs).tolist()) == list(range(len(lengths)))
    assert all(len(set(lengths[run].tolist())) == 1 for run in runs)
    assert [run.tolist() for run in runs] == [[3], [6], [0, 1, 2, 5], [7], [4]]
    assert [run.tolist() for run in comparator_runs(lengths, threads=1)] == [[3, 6], [0, 1, 2, 5], [7], [4]]
    equal = comparator_runs(np.full(50, 60), threads=2)  # the served 5 %: 4 runs of 12-13 pairs
    assert [len(run) for run in equal] == [13, 13, 12, 12]
    assert [len(run) for run in comparator_runs(np.full(50, 60), threads=1)] == [50]
    assert [len(run) for run in comparator_runs(np.full(13, 60), threads=2)] == [7, 6]  # runs of 6 pairs or more


def test_one_pass_scores_as_the_two_stages(kernel) -> None:
    """`score_in_runs` (each run's Hamming sums, then its comparator, on one thread) gives the f2f of
    `frame_similarities` bit for bit and the scores of `compare` on it, and so does `score`, which takes the two
    stages where there are no more runs than threads (13 pairs: 2 runs)."""
    for lengths, frames in (([60] * 50, 60), ([3, 40, 2, 17, 40, 40, 1], 41), ([60] * 13, 60)):
        feeds = kernel.validate(example_feeds(spec.FINE_SIMILARITY_BIN, lengths, frames, 7, 9, seed=len(lengths)))
        staged = kernel.frame_similarities(feeds)
        staged_scores = kernel.compare(staged, feeds)
        for similarity, f2f in (kernel.score_in_runs(feeds, comparator_runs(np.array(lengths), 2)),
                                kernel.score(feeds)):
            np.testing.assert_array_equal(f2f, staged)
            np.testing.assert_allclose(similarity, staged_scores, rtol=0, atol=SAME_AS_GRAPH)


def test_bad_requests_name_the_problem(kernel) -> None:
    feeds = example_feeds(spec.FINE_SIMILARITY_BIN, [4, 6], 6, 5, 5, seed=1)
    not_prefix = dict(feeds, candidate_mask=feeds["candidate_mask"][:, ::-1].copy())
    empty = dict(feeds, query_mask=np.zeros_like(feeds["query_mask"]))
    short_mask = dict(feeds, candidate_mask=feeds["candidate_mask"][:, :4])
    wrong_width = dict(feeds, query=feeds["query"][..., :32])
    for bad, message in ((not_prefix, "candidate_mask' must be a prefix mask"),
                         (empty, "query_mask' must be a prefix mask"),
                         (short_mask, "one entry per candidate frame"),
                         (wrong_width, "axis 2 differs")):
        with pytest.raises(OnnxInputError, match=message):
            kernel.run(bad)
    with pytest.raises(OnnxInputError, match="unknown output"):
        kernel.run(feeds, ["scores"])
    with pytest.raises(TypeError, match="must be uint8"):
        frame_hamming(feeds["query"].astype(np.int64), feeds["candidates"][0])


def test_a_comparator_of_another_interface_or_an_unknown_kernel_is_refused(graphs) -> None:
    with pytest.raises(OnnxInputError, match="not those of fine_comparator"):
        HammingFineSimilarity(graphs["model"])
    with pytest.raises(ValueError, match="Hamming kernel 'popcnt' is not available"):
        HammingFineSimilarity(graphs["comparator"], kernel="popcnt")


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize(("regions", "width"), [(9, 32), (3, 64), (9, 128), (1, 8), (33, 64)])
def test_frame_hamming_of_other_code_shapes_is_exact(kernel_name, regions, width) -> None:
    """Codes of other widths and region counts than the served 9 regions x 512 bits (the avx512 kernel's general
    word loop; 33 regions: more than its 512-bit loop keeps minima for): the definition's integers."""
    rng = np.random.default_rng(regions * width)
    query = rng.integers(0, 256, (5, regions, width), dtype=np.uint8)
    frames = rng.integers(0, 256, (19, regions, width), dtype=np.uint8)
    frames[4] = query[1]
    np.testing.assert_array_equal(frame_hamming(query, frames, kernel=kernel_name), brute_force_hamming(query, frames))


@pytest.mark.skipif("avx512" not in KERNELS, reason="this CPU has no AVX-512 VPOPCNTDQ")
def test_the_avx512_extension_checks_its_buffers() -> None:
    query, lanes, out = np.zeros((2, 9, 8), np.uint64), np.zeros((1, 9, 8, 8), np.uint64), np.zeros((1, 2, 8), np.int32)
    hamming._hamming.region_chamfer(query, lanes, out, 2, 9, 8, 1)
    with pytest.raises(ValueError, match="buffer sizes do not match"):
        hamming._hamming.region_chamfer(query, lanes, out, 3, 9, 8, 1)
    with pytest.raises(TypeError):
        hamming._hamming.region_chamfer(query, lanes, out.copy(order="F")[:, :1], 1, 9, 8, 1)
