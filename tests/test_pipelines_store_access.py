"""Which store the pipelines use: model version and fine student from the manifest, location from parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.export.manifest import ManifestError, fine_kind, model_version
from dnsvr.serving.pipelines.store_access import ServiceStore, ranking_consistency, store_settings
from dnsvr.training import paths


def test_model_version_prefers_the_pack_version():
    assert model_version({"pack_version": "bundled@abc"}) == "bundled@abc"
    one = model_version({"models": {"a": {"onnx_sha256": "1"}, "b": {"onnx_sha256": "2"}}})
    other = model_version({"models": {"a": {"onnx_sha256": "1"}, "b": {"onnx_sha256": "3"}}})
    assert one.startswith("onnx@") and one != other


def test_fine_kind_needs_exactly_one_student():
    assert fine_kind({"fine": ["att"]}) == "att"
    for fine in ([], ["bin", "att"], ["xyz"]):
        with pytest.raises(ManifestError, match="fine"):
            fine_kind({"fine": fine})


def test_store_location_from_parameters_then_environment(monkeypatch):
    monkeypatch.setenv("DNSVR_MILVUS_URI", "http://127.0.0.1:19999")
    monkeypatch.setenv("DNSVR_CONFIG", "/nonexistent/config.toml")
    assert store_settings({"store_uri": "", "store_prefix": ""}).uri == "http://127.0.0.1:19999"
    chosen = store_settings({"store_uri": "http://10.0.0.1:19530", "store_prefix": "shadow"})
    assert (chosen.uri, chosen.prefix) == ("http://10.0.0.1:19530", "shadow")


def test_service_store_reads_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("DNSVR_CONFIG", "/nonexistent/config.toml")
    with pytest.raises(ManifestError, match="dnsvr export"):
        ServiceStore(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"fine": ["bin"], "pack_version": "p@1"}))
    service = ServiceStore(tmp_path, {"store_uri": str(tmp_path / "x.db")})
    assert (service.model_version, service.representation) == ("p@1", "binary")
    assert (service.calibration, service.default_fusion) == (None, "mix")
    calibration = {"fine": [-1.0, 1.0], "coarse": [0.0, 1.0]}
    (tmp_path / "manifest.json").write_text(json.dumps({"fine": ["bin"], "pack_version": "p@1",
                                                        "calibration": calibration, "fusion": "calibrated"}))
    service = ServiceStore(tmp_path, {"store_uri": str(tmp_path / "x.db")})
    assert service.default_fusion == "calibrated" and service.calibration(np.array([0.0])).tolist() == [0.5]


def test_ranking_consistency_is_the_environment_over_the_parameter_over_session(monkeypatch) -> None:
    monkeypatch.delenv(paths.SEARCH_CONSISTENCY, raising=False)
    assert ranking_consistency(None) == ranking_consistency({"consistency": ""}) == "Session"
    assert ranking_consistency({"consistency": "Bounded"}) == "Bounded"
    monkeypatch.setenv(paths.SEARCH_CONSISTENCY, "Strong")
    assert ranking_consistency({"consistency": "Bounded"}) == "Strong"
