"""The pack's score calibration: the fine student's similarities put on the coarse student's scale.

DnS's fusion 'calibrated' (`dnsvr.training.ranking.fuse`) replaces a re-ranked pair's coarse score by
`calibration(fine similarity)`.  The map is fitted on the pack's own training pairs (the teacher-mined pairs
file: near neighbours, random others and self pairs of the unlabelled corpus), where both students score the
same pairs: the isotonic regression of the coarse score on the fine similarity, so a fine similarity becomes
the coarse score that pairs with it usually get (`ranking.ScoreCalibration.fit`).  No benchmark video or label
is used.  The map is stored in pack.json under "calibration" ({"fine": [...], "coarse": [...]}).
"""

from __future__ import annotations

from pathlib import Path

from dnsvr.training.distill.pairs import PairSet
from dnsvr.training.distill.train import fine_and_coarse_similarities
from dnsvr.training.files import update_json_keys
from dnsvr.training.ranking import ScoreCalibration
from torch import nn


def fit_calibration(features_path: str | Path, pairs: PairSet | str | Path, fine: nn.Module, coarse: nn.Module,
                    progress: bool = True) -> ScoreCalibration:
    """Both students' similarities of every pair of `pairs` over the features file -> the fitted calibration."""
    pair_set = PairSet.of(pairs)
    pair_list = pair_set.all_pairs()
    if len(pair_list) < 2:
        raise ValueError(f"a calibration needs at least 2 scored pairs, the pairs file has {len(pair_list)}")
    fine_sims, coarse_sims = fine_and_coarse_similarities(features_path, pair_list, fine, coarse,
                                                          progress=progress)
    return ScoreCalibration.fit(fine_sims, coarse_sims)


def calibrate_pack(pack_dir: str | Path, features_path: str | Path, pairs: PairSet | str | Path,
                   progress: bool = True) -> ScoreCalibration:
    """Fit the calibration of the pack in `pack_dir` (its fine and coarse students) on `pairs` and write it into
    its pack.json (rewritten atomically, every other key kept) -> the calibration."""
    from dnsvr.training.packs.model_pack import ModelPack

    pack = ModelPack.from_dir(pack_dir)
    manifest_path = Path(pack_dir) / "pack.json"
    if not manifest_path.is_file():
        raise ValueError(f"{pack_dir}: a calibration is stored in pack.json; this folder has none")
    calibration = fit_calibration(features_path, pairs, pack.load("fine"), pack.load("coarse"), progress)
    update_json_keys(manifest_path, {"calibration": calibration.to_dict()})
    return calibration
