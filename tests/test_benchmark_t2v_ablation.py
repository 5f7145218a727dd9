"""benchmarks/t2v_ablation.py: rows from score files, trainer rows skipped when their callable is absent and
measured through a stand-in trainer module, the markdown table and the plot."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
from conftest import REPO
from dnsvr.training.data.captioned_benchmark import CaptionedConfig, captioned_benchmark, load_caption_file
from dnsvr.training.evaluation.t2v_scores import save_scores


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("t2v_ablation", REPO / "benchmarks" / "t2v_ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture()
def small_bench(tmp_path):
    data = load_caption_file()
    data["subjects"] = [s for s in data["subjects"] if s["id"] in ("cat", "coffee", "rocket")]
    data["distractors"] = data["distractors"][:1]
    caption_file = tmp_path / "captions.json"
    caption_file.write_text(json.dumps(data))
    config = CaptionedConfig.preset("tiny", cache_dir=tmp_path / "cache")
    return caption_file, captioned_benchmark(config, caption_file)


class Constant:
    def index_video(self, frames):
        return np.zeros(16, np.float32)

    def score(self, captions, stored):
        return np.zeros((len(captions), len(stored)))


def test_similarity_rows_and_skipped_trainer_rows(ablation, small_bench, tmp_path, capsys, monkeypatch):
    caption_file, bench = small_bench
    split = bench.split()
    perfect = save_scores(tmp_path / "perfect.npz", text=split.relevance().astype(float),
                          video=np.eye(split.num_videos), captions=split.captions, video_ids=split.video_ids)
    monkeypatch.setitem(sys.modules, ablation.TRAINER_MODULE, types.ModuleType(ablation.TRAINER_MODULE))  # no trainer
    args = ["--preset", "tiny", "--caption-file", str(caption_file), "--cache-dir", str(tmp_path / "cache"),
            "--similarity", f"oracle=perfect={perfect}", "--out", str(tmp_path / "docs")]
    assert ablation.main(args) == 0
    table = (tmp_path / "docs" / "t2v_ablation.md").read_text()
    oracle = next(line for line in table.splitlines() if line.startswith("| oracle=perfect |"))
    assert oracle.startswith("| oracle=perfect | 100.0 | 100.0 | 100.0 | 1 | 1.0 | 100.0 |")
    assert oracle.endswith(f"| {split.num_videos * 4} |")  # one float32 embedding of num_videos dimensions
    assert "| chance (random scores) |" in table
    assert "- + TeachCLIP coarse: dnsvr.training.distill.train_t2v has no callable 'train_student'" in table
    assert (tmp_path / "docs" / "t2v_ablation.png").stat().st_size > 0
    assert "student: ground truth only: skipped" in capsys.readouterr().out


def test_trainer_rows_through_a_stand_in_module(ablation, small_bench, tmp_path, monkeypatch):
    caption_file, _ = small_bench
    calls = []
    stand_in = types.ModuleType(ablation.TRAINER_MODULE)
    stand_in.train_student = lambda seed, **options: calls.append(options) or Constant()
    monkeypatch.setitem(sys.modules, ablation.TRAINER_MODULE, stand_in)
    args = ["--preset", "tiny", "--caption-file", str(caption_file), "--cache-dir", str(tmp_path / "cache"),
            "--rows", "+ TeachCLIP coarse", "teacher: lexical", "--out", str(tmp_path)]
    assert ablation.main(args) == 0
    assert calls == [ablation.COARSE]
    table = (tmp_path / "t2v_ablation.md").read_text()
    assert "| + TeachCLIP coarse | 0.0 |" in table and "| 64 |" in table
    assert "- teacher: lexical: dnsvr.training.distill.train_t2v has no callable 'lexical_teacher'" in table
    assert ablation.main(["--rows", "no such row", "--out", str(tmp_path)]) == 2
