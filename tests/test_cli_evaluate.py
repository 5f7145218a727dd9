"""`dnsvr eval official` end to end on a hand-made FIVR-style dataset (bundled pack, real networks)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from dnsvr.serving.cli.main import main
from dnsvr.training.data.features_io import write_features


def unit_regions(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def fivr_files(tmp_path_factory):
    """Two queries; `copy-*` repeat a query's features exactly, `near-*` add 5% noise, `other-*` are
    unrelated.  So each query ranks copy (score ~1) > near > the unrelated videos.

    Labels: q1: copy-1 ND, near-1 DS -> DSVR ranking [copy-1 +, near-1 +, ...]: AP = (1/1 + 2/2) / 2 = 1.
            q2: copy-2 unlabelled, near-2 ND -> ranking [copy-2 -, near-2 +, ...]: AP = (1/2) / 1 = 0.5.
    DSVR mAP = (1 + 0.5) / 2 = 0.75; no CS/IS labels, so CSVR = ISVR = DSVR.  `missing-1` (IS of q1) has
    no features: it is reported and left out of the database, so it changes nothing.
    """
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fivr")
    features = {}
    for query, frames in (("q1", 12), ("q2", 10)):
        base = unit_regions(rng.standard_normal((frames, 9, 512)))
        features[query] = base
        features[f"copy-{query[1]}"] = base.copy()
        features[f"near-{query[1]}"] = unit_regions(base + 0.05 * rng.standard_normal(base.shape))
    for i in range(4):
        features[f"other-{i}"] = unit_regions(rng.standard_normal((8 + i, 9, 512)))
    write_features(root / "features.h5", features)
    annotation = {
        "q1": {"ND": ["copy-1"], "DS": ["near-1"], "IS": ["missing-1"]},
        "q2": {"ND": ["near-2"]},
    }
    database = sorted(set(features) | {"missing-1"})
    with open(root / "fivr.pickle", "wb") as handle:
        pickle.dump({"annotation": annotation, "5k": {"queries": ["q1", "q2"], "database": database}}, handle)
    return root


@pytest.mark.parametrize("model", ["coarse", "fine", "dns"])
def test_official_fivr_metrics(fivr_files, model, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    rc = main(
        [
            "eval",
            "official",
            "--dataset",
            "fivr-5k",
            "--annotations",
            str(fivr_files / "fivr.pickle"),
            "--features",
            str(fivr_files / "features.h5"),
            "--model",
            model,
            "--rerank",
            "0.5",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert metrics["DSVR"] == pytest.approx(0.75)
    assert metrics["CSVR"] == pytest.approx(0.75) and metrics["ISVR"] == pytest.approx(0.75)
    assert metrics["queries_evaluated"] == 2 and metrics["queries_missing"] == 0
    assert metrics["videos_missing"] == 1
    assert metrics["model"] == model and metrics["pack"].startswith("bundled@")


def test_official_reports_bad_inputs(fivr_files, tmp_path, capsys):
    args = ["eval", "official", "--dataset", "fivr-5k", "--annotations", str(fivr_files / "fivr.pickle")]
    assert main([*args, "--features", str(tmp_path / "absent.h5")]) == 2
    assert "features file" in capsys.readouterr().err
    assert main([*args, "--features", str(fivr_files / "features.h5"), "--rerank", "1.5"]) == 2
    assert "--rerank" in capsys.readouterr().err
    unrelated = tmp_path / "unrelated.h5"
    write_features(unrelated, {"x": unit_regions(np.ones((4, 9, 512)))})
    assert main([*args, "--features", str(unrelated), "--quiet"]) == 1
    assert "none of the 2 protocol queries" in capsys.readouterr().err


def test_eval_help_teaches():
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "official", "--help"])
    assert exit_info.value.code == 0
