"""Triton config.pbtxt writer and reader: exact model_config.proto field names, round trips, bad specs."""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.export.triton_config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    TensorSpec,
    onnx_model_configs,
    parse_config,
    read_config,
    render_config,
    write_onnx_model_configs,
)

INPUTS = [TensorSpec("features", np.float32, (-1, 9, 512)), TensorSpec("lengths", np.int32, (1,))]
OUTPUTS = [TensorSpec("codes", np.uint8, (-1, 9, 64)), TensorSpec("valid", np.bool_, (-1,))]


def test_onnx_configs_share_specs_and_differ_in_runtime():
    production, cpu_local = onnx_model_configs(
        "student_fine", INPUTS, OUTPUTS, max_batch_size=16,
        dynamic_batching=DynamicBatching((4, 16), 500), gpu_instances=2, cpu_instances=1, intra_op_threads=2,
    )
    text = render_config(production)
    for line in [
        'name: "student_fine"', 'platform: "onnxruntime_onnx"', "max_batch_size: 16", 'name: "features"',
        "data_type: TYPE_FP32", "dims: [ -1, 9, 512 ]", "data_type: TYPE_UINT8", "data_type: TYPE_BOOL",
        "instance_group { kind: KIND_GPU count: 2 }", "preferred_batch_size: [ 4, 16 ]",
        "max_queue_delay_microseconds: 500",
    ]:
        assert line in text, line
    local = render_config(cpu_local)
    assert 'backend: "python"' in local and "platform" not in local and "kind: KIND_CPU" in local
    assert 'parameters { key: "intra_op_threads" value: { string_value: "2" } }' in local
    assert parse_config(text) == production and parse_config(local) == cpu_local


def test_ensemble_round_trip():
    ensemble = ModelConfig(
        name="pipeline", platform="ensemble", max_batch_size=8, inputs=INPUTS[:1], outputs=OUTPUTS[:1],
        ensemble_steps=[
            EnsembleStep("fine", {"features": "features"}, {"codes": "raw"}),
            EnsembleStep("pack", {"x": "raw"}, {"y": "codes"}, model_version=2),
        ],
    )
    text = render_config(ensemble)
    assert 'input_map { key: "x" value: "raw" }' in text and "model_version: 2" in text
    assert parse_config(text) == ensemble


def test_unbatched_model_with_gpu_list():
    config = ModelConfig(
        name="selector", platform="tensorrt_plan", inputs=INPUTS[:1], outputs=OUTPUTS[:1],
        instance_groups=[InstanceGroup("KIND_GPU", 1, (0, 1))],
    )
    text = render_config(config)
    assert "max_batch_size: 0" in text and "gpus: [ 0, 1 ]" in text
    assert parse_config(text) == config


def test_write_onnx_model_configs_names_model_after_folder(tmp_path):
    production_path, cpu_local_path = write_onnx_model_configs(tmp_path / "student_coarse", INPUTS, OUTPUTS)
    assert production_path == tmp_path / "student_coarse" / "config.pbtxt"
    assert cpu_local_path == tmp_path / "student_coarse" / "configs" / "cpu_local.pbtxt"
    assert read_config(production_path).name == read_config(cpu_local_path).name == "student_coarse"
    assert [t.name for t in read_config(cpu_local_path).outputs] == ["codes", "valid"]
    assert not list(tmp_path.rglob("*.partial"))


def test_parser_accepts_fields_it_does_not_model():
    config = parse_config(
        'name: "m" backend: "python" max_batch_size: 4 '
        'input [ { name: "x" data_type: TYPE_FP16 dims: [ 3 ] } ] '
        'output [ { name: "y" data_type: TYPE_INT64 dims: [ 1 ] } ] '
        "model_warmup [] version_policy: { latest: { num_versions: 1 } }"
    )
    assert config.inputs == [TensorSpec("x", np.float16, (3,))]
    assert config.outputs[0].dtype == np.int64


@pytest.mark.parametrize(
    "text, message",
    [
        ('name: "m" max_batchsize: 1', "max_batchsize"),
        ('name: "m" platform: "ensemble" input [ { name: "x" data_type: TYPE_FP99 } ]', "TYPE_FP99"),
    ],
)
def test_parser_names_the_bad_field(text, message):
    with pytest.raises(ValueError, match=message):
        parse_config(text)


def test_read_config_names_the_file(tmp_path):
    (tmp_path / "config.pbtxt").write_text("nme: 1")
    with pytest.raises(ValueError, match=r"config\.pbtxt.*nme"):
        read_config(tmp_path / "config.pbtxt")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TensorSpec("x", np.complex64, (3,)), "complex64 has no Triton data type"),
        (lambda: TensorSpec("x", np.float32, (0, 3)), "must be positive or -1"),
        (lambda: ModelConfig("m", INPUTS, OUTPUTS, platform="onnxruntime_onnx", backend="python"),
         "exactly one"),
        (lambda: ModelConfig("m", INPUTS, OUTPUTS, backend="python", dynamic_batching=DynamicBatching()),
         "needs max_batch_size"),
        (lambda: ModelConfig("m", INPUTS, OUTPUTS, platform="ensemble"), "ensemble_steps"),
        (lambda: InstanceGroup("GPU"), "not one of"),
    ],
    ids=["dtype", "dims", "platform-and-backend", "batching", "ensemble", "kind"],
)
def test_bad_specs_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_strings_are_escaped():
    config = ModelConfig("m", INPUTS, OUTPUTS, backend="python", parameters={"note": 'say "hi" \\ bye'})
    assert parse_config(render_config(config)).parameters == {"note": 'say "hi" \\ bye'}
