"""The pipelines' Triton configs: generated from the spec, committed unchanged, complete and consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnsvr.client import spec
from dnsvr.serving.pipeline_configs import (
    MODEL_SOURCES,
    install_pipelines,
    pipeline_config,
    stale_pipeline_configs,
    write_pipeline_configs,
)

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


def test_committed_configs_equal_the_generated_ones():
    assert stale_pipeline_configs(REPOSITORY) == [], "run write_pipeline_configs('model_repository')"


@pytest.mark.parametrize("fine_kind", ["bin", "att"])
def test_ensemble_wires_the_spec_models(fine_kind):
    config = pipeline_config("dnsvr_embed", fine_kind)
    assert config.platform == "ensemble" and config.max_batch_size == 0
    produced = {"video", "frames"}
    for step in config.ensemble_scheduling.step:
        model = spec.model(step.model_name) if step.model_name in spec.NETWORKS else \
            spec.pipeline_specs(fine_kind)[step.model_name]
        assert set(step.input_map) == set(model.input_names), step.model_name
        assert set(step.input_map.values()) <= produced, f"{step.model_name} reads a tensor not produced yet"
        assert set(step.output_map) <= set(model.output_names)
        produced |= set(step.output_map.values())
    assert {o.name for o in config.output} <= produced
    fine_index = spec.fine_kind(fine_kind).index_model
    assert fine_index in [step.model_name for step in config.ensemble_scheduling.step]
    fine_output = next(o for o in config.output if o.name == "fine")
    assert list(fine_output.dims)[-1] == (spec.CODE_BYTES if fine_kind == "bin" else spec.FEATURE_DIMS)


def test_python_models_are_complete():
    for name in MODEL_SOURCES:
        config = pipeline_config(name)
        assert config.backend == "python" and config.instance_group[0].count >= 1
        assert all(t.dims for t in [*config.input, *config.output])
        optional = {t.name for t in config.input if t.optional}
        assert optional == {t.name for t in spec.PIPELINES[name].inputs if t.optional}


def test_install_pipelines_writes_configs_and_model_files(tmp_path):
    names = install_pipelines(tmp_path, "att")
    assert set(names) == set(spec.pipeline_specs("att"))
    assert stale_pipeline_configs(tmp_path, "att") == []
    for name in MODEL_SOURCES:
        assert (tmp_path / name / "1" / "model.py").read_text().startswith('"""Triton python')
    assert (tmp_path / "dnsvr_embed" / "1").is_dir()
    write_pipeline_configs(tmp_path, "bin")
    assert stale_pipeline_configs(tmp_path, "att") == ["dnsvr_embed"]
