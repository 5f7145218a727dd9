"""Batching never changes a result (golden README contract, rules 2 and 4).

For every network (golden checkpoints, so the weights are in non-trivial regimes): a zero-padded batch with
random lengths (including videos of 1, 2 and 3 frames) gives the same outputs as each video on its own;
garbage (huge values, NaN, inf) in the padded positions changes nothing; a mask that is not a prefix means
"the video made of the masked-in frames"; short videos equal their explicit self-concatenation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dnsvr.training import chamfer_similarity, load_checkpoint
from dnsvr.training.networks.codes import pack_codes
from dnsvr.training.networks.similarity import canonical_frames

TOL = {"rtol": 1e-5, "atol": 1e-5}
LENGTHS_Q = [1, 2, 3, 5, 9, 12]
LENGTHS_T = [3, 4, 7, 1, 16, 10, 2]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def make_videos(lengths: list[int], dims: int, seed: int, regions: int = 9) -> list[torch.Tensor]:
    """Temporally correlated unit-norm region features; odd videos are noisy copies of the first one."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(max(lengths), regions, dims, generator=g).cumsum(0)
    videos = []
    for i, n in enumerate(lengths):
        if i % 2:
            start = int(torch.randint(0, max(lengths) - n + 1, (1,), generator=g))
            v = base[start:start + n] + 2.0 * torch.randn(n, regions, dims, generator=g)
        else:
            v = torch.randn(n, regions, dims, generator=g).cumsum(0)
        videos.append(F.normalize(v, dim=-1))
    return videos


def pad(videos: list[torch.Tensor], garbage: bool, extra: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """-> zero-padded (or garbage-padded) batch `[N, T, R, D]` and bool mask `[N, T]`."""
    t = max(v.shape[0] for v in videos) + extra
    batch = torch.zeros(len(videos), t, *videos[0].shape[1:])
    if garbage:
        batch = torch.randn(batch.shape) * 1e6
        batch[:, -1, 0, 0] = float("nan")
        batch[:, -1, 1, 0] = float("inf")
    mask = torch.zeros(len(videos), t, dtype=torch.bool)
    for i, v in enumerate(videos):
        batch[i, : v.shape[0]] = v
        mask[i, : v.shape[0]] = True
    return batch, mask


def repeat_short(v: torch.Tensor) -> torch.Tensor:
    while v.shape[0] < 4:
        v = torch.cat([v, v])
    return v


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.isfinite(a).all()
    np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


@pytest.fixture(scope="module")
def models(golden_dir: Path) -> dict[str, torch.nn.Module]:
    names = ["fg_att_student", "fg_bin_student", "cg_student", "selector", "teacher"]
    return {n: load_checkpoint(golden_dir / f"{n}.pth") for n in names}


def test_canonical_frames_repeats_and_compacts() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1).repeat(3, 1, 1, 1)
    mask = torch.tensor([[1, 0, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    frames, new_mask = canonical_frames(x, mask)
    assert new_mask.sum(1).tolist() == [4, 5, 4]
    assert frames[0, :4, 0, 0].tolist() == [0, 2, 0, 2]
    assert frames[1, :5, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert frames[2, :4, 0, 0].tolist() == [5, 5, 5, 5]
    assert (frames[~new_mask] == 0).all()


@pytest.mark.parametrize("name", ["fg_att_student", "fg_bin_student"])
@pytest.mark.parametrize("reference_padding", [False, True])
def test_fine_student_batch_equals_alone(models, name: str, reference_padding: bool) -> None:
    model = models[name]
    queries, targets = make_videos(LENGTHS_Q, 512, 1), make_videos(LENGTHS_T, 512, 2)
    qi = [model.index_video(v) for v in queries]
    ti = [model.index_video(v) for v in targets]
    qb, qm = pad(queries, garbage=True)
    tb, tm = pad(targets, garbage=True)
    qbi, tbi = model.index_video(qb, qm), model.index_video(tb, tm.float())
    assert torch.isfinite(qbi).all() and (qbi[~qm] == 0).all()
    for v, b, n in zip(qi, qbi, LENGTHS_Q, strict=True):
        assert torch.equal(v, b[:n]) if name == "fg_bin_student" else torch.allclose(v, b[:n], **TOL)
    batched = model.calculate_video_similarity(qbi, tbi, qm, tm, reference_padding=reference_padding)
    assert batched.shape == (len(queries), len(targets))
    if reference_padding:
        clean = model.calculate_video_similarity(*pad_indexed(qi, ti), reference_padding=True)
        assert_close(batched, clean)
        return
    alone = torch.stack([torch.cat([model.calculate_video_similarity(q, t)[0] for t in ti]) for q in qi])
    assert_close(batched, alone)
    repeated = torch.stack([torch.cat([model.calculate_video_similarity(repeat_short(q), repeat_short(t))[0]
                                       for t in ti]) for q in qi])
    assert_close(alone, repeated)
    # any sub-batch gives the same scores
    sub = model.calculate_video_similarity(qbi[1:3], tbi[::2], qm[1:3], tm[::2])
    assert_close(sub, batched[1:3, ::2])


def pad_indexed(qi, ti):
    qb, qm = pad(qi, garbage=False)
    tb, tm = pad(ti, garbage=False)
    return qb, tb, qm, tm


def test_fine_student_non_prefix_mask(models) -> None:
    model = models["fg_att_student"]
    video = model.index_video(make_videos([10], 512, 3)[0])
    target = model.index_video(make_videos([8], 512, 4)[0])
    keep = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0, 1], dtype=torch.bool)
    holes = model.calculate_video_similarity(video[None], target[None], keep[None], None)
    assert_close(holes, model.calculate_video_similarity(video[keep], target))


def test_fine_student_entry_points_agree_on_short_videos(models) -> None:
    model = models["fg_bin_student"]
    query, target = make_videos([2, 3], 512, 5)
    q, t = model.index_video(query), model.index_video(target)
    sim, mask = model.similarity_matrix(q, t)
    assert sim.shape == (1, 1, 1) and mask.all()
    f2f, f2f_mask = model.frame_to_frame_similarity(q, t)
    assert f2f.shape == (1, 4, 6)
    assert_close(model.calculate_video_similarity(q, t), sim[:, 0, :])


def test_binary_codes_similarity(models) -> None:
    model = models["fg_bin_student"]
    query = model.index_video(make_videos([6], 512, 6)[0])
    targets = [model.index_video(v) for v in make_videos([5, 2, 11, 7], 512, 7)]
    batch, mask = pad(targets, garbage=False)
    expected = model.calculate_video_similarity(query, batch, None, mask)[0]
    packed_q, packed_t = pack_codes(query.numpy()), pack_codes(batch.numpy())
    assert packed_q.shape == (6, 9, 64) and packed_t.dtype == np.uint8
    got = model.similarity_from_codes(packed_q, packed_t, target_mask=mask.numpy())
    assert got.shape == (4,)
    assert_close(got, expected)


def test_chamfer_similarity_batch_equals_alone() -> None:
    queries, targets = make_videos(LENGTHS_Q, 64, 8), make_videos(LENGTHS_T, 64, 9)
    qb, qm = pad(queries, garbage=True)
    tb, tm = pad(targets, garbage=True)
    batched = chamfer_similarity(qb, tb, qm, tm.float())
    alone = torch.stack([torch.stack([chamfer_similarity(q, t) for t in targets]) for q in queries])
    assert alone.shape == batched.shape == (len(queries), len(targets))
    assert_close(batched, alone)
    assert_close(chamfer_similarity(queries[0], tb, None, tm), batched[0])
    same = chamfer_similarity(targets[2], targets[2])
    assert same.ndim == 0 and abs(float(same) - 1.0) < 1e-5


def test_coarse_student_batch_equals_alone(models) -> None:
    model = models["cg_student"]
    videos = make_videos([1, 2, 3, 6, 13, 20], 512, 10)
    batch, mask = pad(videos, garbage=True)
    batched = model.index_video(batch, mask)
    alone = torch.cat([model.index_video(v) for v in videos])
    assert batched.shape == (6, 256)
    assert_close(batched, alone)
    assert_close(torch.cat([model.index_video(repeat_short(v)) for v in videos]), alone)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    seven = make_videos([7], 512, 11)[0]
    assert_close(model.index_video(seven[None], keep[None]), model.index_video(seven[keep]))


def test_selector_batch_equals_alone(models) -> None:
    model = models["selector"]
    videos = make_videos([1, 2, 3, 5, 9, 16], 512, 12)
    batch, mask = pad(videos, garbage=True)
    batched = model.index_video(batch, mask)
    alone = torch.cat([model.index_video(v) for v in videos])
    assert batched.shape == (6, 1)
    assert_close(batched, alone)
    assert_close(torch.cat([model.index_video(repeat_short(v)) for v in videos]), alone)
    clean, clean_mask = pad(videos, garbage=False)
    assert_close(model.index_video(batch, mask, reference_padding=True),
                 model.index_video(clean, clean_mask, reference_padding=True))


def test_teacher_batch_equals_alone(models) -> None:
    model = models["teacher"]
    queries, targets = make_videos([2, 5, 9], 3840, 13), make_videos([3, 8, 12, 4], 3840, 14)
    qb, qm = pad(queries, garbage=True)
    tb, tm = pad(targets, garbage=True)
    qi, ti = model.index_video(qb, qm), model.index_video(tb, tm)
    batched = model.calculate_video_similarity(qi, ti, qm, tm)
    alone = torch.stack([torch.cat([model(model.index_video(q), model.index_video(t)) for t in targets])
                         for q in queries])
    assert_close(batched, alone)
    paired = model(qi[:3], ti[:3])
    assert paired.shape == (3,)


def test_fine_student_chunking_is_exact(models) -> None:
    model = models["fg_att_student"]
    queries, targets = make_videos([3, 8], 512, 15), make_videos([5, 1, 9, 12, 6], 512, 16)
    qb, qm = pad(queries, garbage=False)
    tb, tm = pad(targets, garbage=False)
    qi, ti = model.index_video(qb, qm), model.index_video(tb, tm)
    whole = model.calculate_video_similarity(qi, ti, qm, tm)
    saved = model.chunk_elements
    try:
        model.chunk_elements = 1  # one target per chunk
        assert_close(model.calculate_video_similarity(qi, ti, qm, tm), whole)
        model.chunk_elements = None
        assert_close(model.calculate_video_similarity(qi, ti, qm, tm), whole)
    finally:
        model.chunk_elements = saved


def test_bad_inputs_name_the_problem(models) -> None:
    model = models["fg_att_student"]
    video = make_videos([6], 512, 17)[0]
    with pytest.raises(ValueError, match=r"\[T, R, D\] or \[N, T, R, D\]"):
        model.calculate_video_similarity(video[0], video)
    with pytest.raises(ValueError, match="mask must have shape"):
        model.calculate_video_similarity(video[None], video, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real frame"):
        model.calculate_video_similarity(video[None], video, torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="must match"):
        model.calculate_video_similarity(video, video[..., :256])
    with pytest.raises(TypeError, match="floating point"):
        chamfer_similarity(video, (video > 0).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        models["selector"](torch.zeros(4, 2))


@pytest.mark.parametrize(("name", "head"), [("fg_bin_student", "visil_head"), ("teacher", "video_comperator")])
def test_comparator_without_a_mask_is_the_masked_comparator_on_full_extents_bit_for_bit(models, name, head) -> None:
    """visil_head(sim) (every cell valid: no masked passes) against visil_head(sim, all-True mask), zero padding
    (S^f_B) and replicate padding (the teacher), odd sizes included; and the cells of a padded matrix's extent
    against the unpadded matrix alone."""
    head = getattr(models[name], head)
    g = torch.Generator().manual_seed(3)
    for rows, cols in ((60, 60), (9, 13), (4, 7)):
        sim = torch.rand(3, rows, cols, generator=g) * 2 - 1
        dense, dense_mask = head(sim)
        masked, masked_mask = head(sim, torch.ones(3, rows, cols, dtype=torch.bool))
        assert torch.equal(dense, masked) and dense_mask.all() and torch.equal(dense_mask, masked_mask)
        padded = F.pad(sim, (0, 5, 0, 3), value=7.0)
        mask = F.pad(torch.ones_like(sim, dtype=torch.bool), (0, 5, 0, 3), value=False)
        out, out_mask = head(padded, mask)
        assert_close(out[:, : rows // 4, : cols // 4], dense)
        assert out_mask[:, : rows // 4, : cols // 4].all() and out_mask.sum() == dense.numel()
