"""`dnsvr export` end to end: a complete repository (networks, pipelines, adapters, manifest), atomic replacement,
bad inputs, and the real local Triton serving the export as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from dnsvr.client import spec
from dnsvr.export.hamming import COMPARATOR_FILE
from dnsvr.export.manifest import FORMAT, ManifestError, default_fusion, score_calibration, view_codes
from dnsvr.export.onnx_export import ExportError, example_feeds
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import KERNEL_VS_GRAPH, ParityError
from dnsvr.export.repository import (
    build_repository,
    pipeline_networks,
    recover_interrupted,
    repository_files,
    stale_files,
)
from dnsvr.export.weights import ExportSource, WeightsError, resolve_weights
from dnsvr.serving.cli.main import main
from dnsvr.serving.local.triton_server import TritonServer

STUDENTS = ["fg_bin_student", "cg_student", "selector"]


def golden_files(golden_dir: Path, names: list[str]) -> list[str]:
    return [str(golden_dir / f"{name}.pth") for name in names]


@pytest.fixture(scope="module")
def repository(golden_dir: Path, tmp_path_factory) -> Path:
    """A repository exported by the CLI into an empty folder from golden checkpoints (+ EfficientNet-Lite0):
    a whole pack, so the pipelines are part of it."""
    out = tmp_path_factory.mktemp("export") / "model_repository"
    assert main(["export", "--weights", *golden_files(golden_dir, STUDENTS), "--out", str(out)]) == 0
    return out


def test_layout_configs_and_manifest(repository: Path, golden_dir: Path) -> None:
    manifest = json.loads((repository / "manifest.json").read_text())
    served = sorted(["feature_extractor", "coarse_embed", "fine_index_bin", "fine_similarity_bin",
                     "selector_index", "selector_score"])
    assert manifest["served"] == served
    assert manifest["fine"] == ["bin"] and manifest["extractor"] == "efficientnet_lite0"
    assert manifest["opset"] == spec.OPSET
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(manifest["tools"])
    digest = json.loads((golden_dir / "manifest.json").read_text())
    assert manifest["weights"]["fine_bin"]["sha256"] in json.dumps(digest)
    assert served == sorted(pipeline_networks("bin")) and manifest["pipelines"] == list(spec.pipeline_specs("bin"))
    assert manifest["text"] is None and "dnsvr_search_text" in manifest["pipelines"]
    assert manifest["calibration"] is None and score_calibration(manifest) is None  # checkpoint files: no pack
    assert manifest["index_views"] is None and manifest["view_codes"] is False and not view_codes(manifest)
    for name in served:
        entry = manifest["models"][name]
        assert entry["max_abs_error"] <= entry["tolerance"]["atol"] + 1e-12
        assert (repository / name / "1" / "model.onnx").is_file()
    comparator = manifest["models"]["fine_similarity_bin"]["comparator"]  # the cpu_local path's second graph
    assert comparator["max_abs_error"] <= manifest["models"]["fine_similarity_bin"]["tolerance"]["atol"]
    assert comparator["max_abs_error_vs_graph"] <= comparator["tolerance_vs_graph"] == KERNEL_VS_GRAPH
    assert stale_files(repository, served, "bin") == []
    files = {p.relative_to(repository).as_posix() for p in repository.rglob("*") if p.is_file()}
    graphs = {f"{name}/1/model.onnx" for name in served} | {f"fine_similarity_bin/1/{COMPARATOR_FILE}"}
    assert files == set(repository_files(served, "bin")) | graphs | {"manifest.json"}
    assert not (repository / "fine_index_att").exists()  # not part of this pack
    assert not list(repository.parent.glob(".model_repository.staging*"))


def test_export_without_a_whole_pack_writes_no_pipelines(golden_dir: Path, tmp_path: Path) -> None:
    from dnsvr.training import load_checkpoint

    source = ExportSource({"selector_score": load_checkpoint(golden_dir / "selector.pth")}, {}, "one", "none")
    manifest = build_repository(source, tmp_path / "model_repository")
    assert manifest["served"] == ["selector_score"] and manifest["pipelines"] == []
    assert sorted(p.name for p in (tmp_path / "model_repository").iterdir()) == ["manifest.json", "selector_score"]


def test_a_folder_that_is_no_model_repository_is_never_replaced(golden_dir: Path, tmp_path: Path) -> None:
    from dnsvr.training import load_checkpoint

    source = ExportSource({"selector_score": load_checkpoint(golden_dir / "selector.pth")}, {}, "one", "none")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a model repository.*notes.txt"):
        build_repository(source, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failed_export_leaves_the_repository_untouched(repository: Path, golden_dir: Path) -> None:
    before = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}
    code = main(["export", "--weights", str(golden_dir / "teacher.pth"), "--out", str(repository)])
    assert code == 1
    # A failure in the middle of the build: the coarse_embed role given a fine student (a wrong network).
    from dnsvr.training import load_checkpoint

    wrong = ExportSource({"selector_score": load_checkpoint(golden_dir / "selector.pth"),
                          "coarse_embed": load_checkpoint(golden_dir / "fg_bin_student.pth")}, {}, "wrong", "none")
    with pytest.raises(ParityError, match="coarse_embed"):
        build_repository(wrong, repository)
    after = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}
    assert after == before
    assert not list(repository.parent.glob(".model_repository.staging*"))


def test_crash_between_the_two_renames_is_recovered(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    previous = tmp_path / ".model_repository.previous"
    (previous / "coarse_embed").mkdir(parents=True)
    assert "restored" in recover_interrupted(repository)
    assert (repository / "coarse_embed").is_dir() and not previous.exists()
    previous.mkdir()
    assert "removed" in recover_interrupted(repository)
    assert not previous.exists() and recover_interrupted(repository) is None


def test_bad_weights_name_the_problem(golden_dir: Path, tmp_path: Path, capsys) -> None:
    cases = {
        "holds a teacher checkpoint": [str(golden_dir / "teacher.pth")],
        "weights not found": [str(tmp_path / "missing.pth")],
        "both fg_bin_student checkpoints": golden_files(golden_dir, ["fg_bin_student", "fg_bin_student"]),
    }
    for message, weights in cases.items():
        with pytest.raises(WeightsError, match=message):
            resolve_weights(weights)
    assert main(["export", "--weights", str(golden_dir / "selector.pth"), "--opset", "11",
                 "--out", str(tmp_path / "r")]) == 1
    assert "unsupported ONNX opset 11" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["export", "--weights", *golden_files(golden_dir, STUDENTS), "--view-codes",
                 "--out", str(tmp_path / "r")]) == 1  # checkpoint files: no crop grid to keep codes of
    assert "--view-codes needs crop views" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_pack_folder_provides_every_network(golden_dir: Path, tmp_path: Path) -> None:
    names = {"fine": "fg_att_student.pth", "coarse": "cg_student.pth", "selector": "selector.pth"}
    for name in names.values():
        (tmp_path / name).symlink_to(golden_dir / name)
    pack = {"name": "golden", "extractor": "efficientnet_lite0", "fine": "att", "files": names}
    (tmp_path / "pack.json").write_text(json.dumps(pack))
    source = resolve_weights([str(tmp_path)])
    assert sorted(source.networks) == sorted(["feature_extractor", "coarse_embed", "fine_index_att",
                                              "fine_similarity_att", "selector_index", "selector_score"])
    assert source.fine_kinds == ["att"] and source.pack_version.startswith("golden@")
    assert set(source.file_hashes()) == {"fine_att", "coarse", "selector", "pack_manifest"}  # + its pack.json
    pack["files"] = {**names, "fine": "cg_student.pth"}
    (tmp_path / "pack.json").write_text(json.dumps(pack))
    with pytest.raises(WeightsError, match="holds a cg_student checkpoint, not fg_att_student"):
        resolve_weights([str(tmp_path)])
    (tmp_path / "selector.pth").unlink()
    with pytest.raises(WeightsError, match="selector file selector.pth is missing"):
        resolve_weights([str(tmp_path)])


def test_a_packs_calibration_is_exported_and_its_manifest_recorded(tmp_path: Path) -> None:
    import shutil

    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    meta = json.loads((pack / "pack.json").read_text())
    meta["calibration"] = {"fine": [-1.0, 0.5, 1.0], "coarse": [0.2, 0.6, 1.0]}
    (pack / "pack.json").write_text(json.dumps(meta))
    source = resolve_weights([str(pack)])
    assert source.calibration == meta["calibration"]
    assert source.file_hashes()["pack_manifest"]["path"] == str(pack / "pack.json")  # a new calibration: re-export
    assert score_calibration({"calibration": source.calibration})(np.array([0.5])).tolist() == [0.6000000238418579]
    with pytest.raises(ManifestError, match="calibration is invalid"):
        score_calibration({"calibration": {"fine": [0.0], "coarse": [0.1]}})


def test_a_packs_default_fusion_is_exported_and_checked(tmp_path: Path) -> None:
    import shutil

    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    meta = json.loads((pack / "pack.json").read_text())
    meta["fusion"] = "cascade"
    (pack / "pack.json").write_text(json.dumps(meta))
    source = resolve_weights([str(pack)])
    assert source.fusion == "cascade"
    assert default_fusion({"fusion": source.fusion}) == "cascade"
    assert default_fusion({}) == "mix"  # an export from before packs named one: the paper's
    with pytest.raises(ManifestError, match="default fusion is invalid.*'calibrated' needs"):
        default_fusion({"fusion": "calibrated", "calibration": None})
    with pytest.raises(ManifestError, match="fusion must be one of"):
        default_fusion({"fusion": "blend"})
    for bad, message in [("blend", "fusion must be one of"), ("calibrated", "'calibrated' needs")]:
        meta = {**meta, "fusion": bad, "calibration": None}
        (pack / "pack.json").write_text(json.dumps(meta))
        with pytest.raises(WeightsError, match=message):
            resolve_weights([str(pack)])
    del meta["fusion"]
    (pack / "pack.json").write_text(json.dumps(meta))
    assert resolve_weights([str(pack)]).fusion == "mix"


def test_a_packs_crop_grid_and_duplicate_threshold_are_exported_and_checked(tmp_path: Path) -> None:
    import shutil

    from dnsvr.client.duplicates import DEFAULT_DUPLICATE_THRESHOLD
    from dnsvr.export.manifest import duplicate_threshold, index_views
    from dnsvr.export.weights import index_views_record
    from dnsvr.training.data.crop_regions import CropLayout
    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    meta = json.loads((pack / "pack.json").read_text())
    source = resolve_weights([str(pack)])
    assert source.index_views == meta["index_views"] == {"crop": 0.5, "stride": 0.25}
    assert index_views({"index_views": source.index_views}) == CropLayout(0.5, 0.25)
    assert duplicate_threshold({"duplicate_threshold": source.duplicate_threshold}) == meta["duplicate_threshold"]
    assert index_views({}) is None and duplicate_threshold({}) == DEFAULT_DUPLICATE_THRESHOLD  # older exports
    assert index_views_record("none") is None and index_views_record("0.3:0.175") == {"crop": 0.3, "stride": 0.175}
    with pytest.raises(ValueError, match="CROP:STRIDE"):
        index_views_record("half")
    with pytest.raises(ManifestError, match="index_views is invalid"):
        index_views({"index_views": {"crop": 0.5, "stride": 0.75}})
    with pytest.raises(ManifestError, match="duplicate_threshold is invalid"):
        duplicate_threshold({"duplicate_threshold": 1.5})
    for key, bad, message in [("index_views", {"crop": 2}, "index_views must be"),
                              ("duplicate_threshold", "high", "duplicate_threshold")]:
        (pack / "pack.json").write_text(json.dumps({**meta, key: bad}))
        with pytest.raises(WeightsError, match=message):
            resolve_weights([str(pack)])
    plain = {k: v for k, v in meta.items() if k not in ("index_views", "duplicate_threshold")}
    (pack / "pack.json").write_text(json.dumps(plain))
    source = resolve_weights([str(pack)])
    assert source.index_views is None and source.duplicate_threshold is None
    grid = {"crop": 0.5, "stride": 0.25}
    assert view_codes({"index_views": grid, "view_codes": True}) and not view_codes({"index_views": grid})
    assert not view_codes({"view_codes": True}) and not view_codes({})  # no grid, or an older export: no codes
    with pytest.raises(ManifestError, match="view_codes must be true or false"):
        view_codes({"index_views": grid, "view_codes": "yes"})


def test_a_packs_frame_windows_are_exported_and_checked(tmp_path: Path) -> None:
    import shutil

    from dnsvr.export.manifest import index_segments
    from dnsvr.export.weights import index_segments_record
    from dnsvr.training.data.segments import SegmentLayout
    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    assert resolve_weights([str(pack)]).index_segments is None  # the bundled pack has none
    meta = {**json.loads((pack / "pack.json").read_text()), "index_segments": {"lengths": [0.25]}}
    (pack / "pack.json").write_text(json.dumps(meta))
    source = resolve_weights([str(pack)])
    assert source.index_segments == meta["index_segments"] == {"lengths": [0.25]}
    assert index_segments({"index_segments": source.index_segments}) == SegmentLayout((0.25,))
    assert index_segments_record("none") is None and index_segments_record("0.5,0.25") == {"lengths": [0.5, 0.25]}
    with pytest.raises(ValueError, match="LENGTH"):
        index_segments_record("half")
    (pack / "pack.json").write_text(json.dumps({**meta, "index_segments": {"lengths": [0.0]}}))
    with pytest.raises(WeightsError, match="index_segments must be"):
        resolve_weights([str(pack)])
    (pack / "pack.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "index_segments"}))
    assert resolve_weights([str(pack)]).index_segments is None


@pytest.mark.parametrize("recorded", [{"index_views": None}, {"view_codes": True}, {}])
def test_a_re_export_keeps_the_crop_grid_and_view_codes_the_export_chose(tmp_path, monkeypatch, recorded):
    """A repository exported again because a weight file changed keeps `--index-views none` and `--view-codes`;
    one recorded before crop grids (no "index_views") takes its pack's."""
    from dnsvr.export import repository as repository_module
    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    manifest = {"format": FORMAT, "source": f"model pack {BUNDLED_DIR}", **recorded,
                "weights": {"coarse": {"path": str(BUNDLED_DIR / "dns_cg_student.pth"), "sha256": "0" * 64}}}
    if "view_codes" in recorded:
        manifest["index_views"] = {"crop": 0.3, "stride": 0.175}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    exported = []
    monkeypatch.setattr(repository_module, "build_repository", lambda source, *_, **__: exported.append(source))
    assert repository_module.ensure_exported(tmp_path, ["bundled"])
    (source,) = exported
    pack_grid = resolve_weights(["bundled"]).index_views
    assert source.index_views == manifest.get("index_views", pack_grid)
    assert source.view_codes == ("view_codes" in recorded)


def test_bundled_pack_missing_names_the_training_command(monkeypatch, tmp_path: Path) -> None:
    from dnsvr.training.packs import model_pack

    monkeypatch.setattr(model_pack, "BUNDLED_DIR", tmp_path / "packs" / "bundled")  # a checkout without it
    with pytest.raises(WeightsError, match="dnsvr train pack"):
        resolve_weights(["bundled"])


def test_exported_repository_serves_on_local_triton(repository: Path) -> None:
    """The real local Triton server (cpu_local configs) loads the export as it is, with nothing added: every
    network and pipeline is ready, and the networks' results equal ONNX Runtime's (fine_similarity_bin's CPU
    path: within KERNEL_VS_GRAPH of its float graph)."""
    manifest = json.loads((repository / "manifest.json").read_text())
    served = manifest["served"]
    with TritonServer(repository) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        for name in served + manifest["pipelines"]:
            assert client.is_model_ready(name), name
        for name in served:
            model = spec.NETWORKS[name]
            feeds = example_feeds(model, lengths=[3, 6], frames=7, seed=1) if name != "feature_extractor" \
                else example_feeds(model, frames=2)
            inputs = []
            for tensor in model.inputs:
                item = grpcclient.InferInput(tensor.name, list(feeds[tensor.name].shape), tensor.triton_dtype)
                item.set_data_from_numpy(feeds[tensor.name])
                inputs.append(item)
            result = client.infer(name, inputs)
            expected = OnnxRunner(repository / name / "1" / "model.onnx").run(feeds)
            for output in model.output_names:
                if name == spec.FINE_SIMILARITY_BIN.name:  # cpu_local: the Hamming kernel + comparator.onnx
                    np.testing.assert_allclose(result.as_numpy(output), expected[output], rtol=0, atol=KERNEL_VS_GRAPH)
                else:
                    np.testing.assert_array_equal(result.as_numpy(output), expected[output])


def test_concurrent_export_is_refused(tmp_path: Path, golden_dir: Path) -> None:
    import fcntl

    from dnsvr.training import load_checkpoint

    source = ExportSource({"selector_score": load_checkpoint(golden_dir / "selector.pth")}, {}, "one", "none")
    with open(tmp_path / ".model_repository.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ExportError, match="another export is writing"):
            build_repository(source, tmp_path / "model_repository")
    manifest = build_repository(source, tmp_path / "model_repository")
    assert manifest["served"] == ["selector_score"]
