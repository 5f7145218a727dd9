"""Triton configs from the spec (one protobuf writer): networks in three variants, the pipelines, round trips."""

from __future__ import annotations

import pytest
from dnsvr.client import spec
from dnsvr.export.repository import ENSEMBLES, PYTHON_MODELS
from dnsvr.export.triton_config import (
    CPU_LOCAL,
    CPU_LOCAL_PARAMETERS,
    HEADER,
    TENSORRT,
    network_configs,
    pipeline_config,
    render,
    write_config,
)
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

KIND = model_config_pb2.ModelInstanceGroup.Kind
TEXT = {"kind": "teachclip", "afa": "official", "max_frames": 12, "image_size": 96, "embed_dim": 64, "max_words": 32}
OFFLINE = {"kind": "offline_minilm_effnet", "afa": "real_frames", "max_frames": 12, "embed_dim": 256, "max_words": 32}


def parse(text: str) -> model_config_pb2.ModelConfig:
    assert text.startswith(HEADER)
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", list(spec.NETWORKS))
def test_network_configs_carry_the_spec(name):
    model = spec.NETWORKS[name]
    configs = network_configs(model)
    assert set(configs) == {"config.pbtxt", f"configs/{CPU_LOCAL}.pbtxt", f"configs/{TENSORRT}.pbtxt"}
    strip = 1 if model.max_batch_size else 0
    for config in configs.values():
        config = parse(render(config))
        assert config.name == name and config.max_batch_size == model.max_batch_size
        assert [(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in config.input] == [
            (t.name, t.config_data_type, t.dims[strip:]) for t in model.inputs]
        assert [t.name for t in config.output] == list(model.output_names)
        assert config.HasField("dynamic_batching") == model.dynamic_batching
    production, cpu_local, tensorrt = (configs[k] for k in ("config.pbtxt", f"configs/{CPU_LOCAL}.pbtxt",
                                                            f"configs/{TENSORRT}.pbtxt"))
    assert production.platform == "onnxruntime_onnx" and production.instance_group[0].kind == KIND.KIND_GPU
    assert tensorrt.platform == "tensorrt_plan" and tensorrt.instance_group[0].kind == KIND.KIND_GPU
    assert cpu_local.backend == "python" and cpu_local.instance_group[0].kind == KIND.KIND_CPU
    threads = CPU_LOCAL_PARAMETERS.get(name, {}).get("intra_op_threads", "1")
    assert cpu_local.parameters["intra_op_threads"].string_value == threads


def test_cpu_local_fine_similarity_bin_sets_its_kernel_threads():
    """Its cpu_local adapter (Hamming kernel + comparator runs on a pool of hamming_threads, one ONNX Runtime
    thread per run) reads hamming_threads; production configs carry none."""
    configs = network_configs(spec.FINE_SIMILARITY_BIN)
    parameters = configs[f"configs/{CPU_LOCAL}.pbtxt"].parameters
    assert {key: parameters[key].string_value for key in parameters} == {"hamming_threads": "2",
                                                                         "intra_op_threads": "1"}
    assert not configs["config.pbtxt"].parameters and not configs[f"configs/{TENSORRT}.pbtxt"].parameters


def test_instances_and_threads_are_settable():
    configs = network_configs(spec.COARSE_EMBED, gpu_instances=2, cpu_instances=3, intra_op_threads=4)
    assert configs["config.pbtxt"].instance_group[0].count == 2
    assert configs["configs/cpu_local.pbtxt"].instance_group[0].count == 3
    assert configs["configs/cpu_local.pbtxt"].parameters["intra_op_threads"].string_value == "4"


@pytest.mark.parametrize("text", [None, TEXT, OFFLINE], ids=["dns", "with-teachclip", "with-offline"])
@pytest.mark.parametrize("fine", ["bin", "att"])
def test_ensemble_wires_the_spec_models(fine, text):
    config = pipeline_config("dnsvr_embed", fine, text)
    assert config.platform == "ensemble" and config.max_batch_size == 0
    assert ("text_video" in {o.name for o in config.output}) == (text is not None)
    kind = text["kind"] if text else None
    produced = {"video", "frames"}
    for step in config.ensemble_scheduling.step:
        model = spec.NETWORKS.get(step.model_name) or spec.pipeline_specs(fine, kind)[step.model_name]
        assert set(step.input_map) == set(model.input_names), step.model_name
        assert set(step.input_map.values()) <= produced, f"{step.model_name} reads a tensor not produced yet"
        assert set(step.output_map) <= set(model.output_names)
        produced |= set(step.output_map.values())
    assert {o.name for o in config.output} <= produced
    assert spec.fine_kind(fine).index_model in [step.model_name for step in config.ensemble_scheduling.step]
    fine_output = next(o for o in config.output if o.name == "fine")
    assert list(fine_output.dims)[-1] == spec.fine_kind(fine).width


def test_text_ensemble_tokenizes_then_encodes():
    config = parse(render(pipeline_config("dnsvr_text_embed", "bin", TEXT)))
    assert config.platform == "ensemble"
    assert [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in config.ensemble_scheduling.step] == [
        ("text_tokenize", {"text": "text"}, {"token_ids": "token_ids"}),
        (spec.TEXT_ENCODER.name, {"token_ids": "token_ids"}, {"embedding": "embedding"})]
    offline = parse(render(pipeline_config("dnsvr_text_embed", "bin", OFFLINE)))
    tokens = {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    assert [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in offline.ensemble_scheduling.step] == [
        ("text_tokenize", {"text": "text"}, tokens),
        (spec.TEXT_ENCODER_MINILM.name, tokens, {"embedding": "embedding"})]


def test_text_settings_reach_decode_and_tokenizer_parameters():
    decode = pipeline_config("video_features", "bin", TEXT)
    assert {key: decode.parameters[key].string_value for key in ("text_kind", "clip_size", "text_max_frames")} == {
        "text_kind": "teachclip", "clip_size": "96", "text_max_frames": "12"}
    assert {o.name for o in decode.output} == {"features", "mask", "frame_count", "thumbnail", "clip_frames",
                                                  "clip_mask"}
    assert "text_kind" not in pipeline_config("video_features", "bin").parameters
    assert pipeline_config("video_features", "bin").parameters["chunk_frames"].string_value == str(
        spec.DECODE_CHUNK_FRAMES)
    tokenize = pipeline_config("text_tokenize", "bin", TEXT)
    assert tokenize.parameters["max_words"].string_value == "32" and {o.name for o in tokenize.output} == {"token_ids"}
    assert "dnsvr_search_text" in spec.pipeline_specs("bin") and "text_tokenize" not in spec.pipeline_specs("bin")


def test_the_offline_student_reads_frame_positions_and_pooled_features():
    decode = pipeline_config("video_features", "bin", OFFLINE)
    assert "clip_size" not in decode.parameters and decode.parameters["text_max_frames"].string_value == "12"
    assert decode.parameters["text_kind"].string_value == "offline_minilm_effnet"
    assert [i.name for i in decode.input] == ["video", "frames"]
    assert [(o.name, list(o.dims)) for o in decode.output] == [
        ("features", [1, -1, 9, 512]), ("mask", [1, -1]), ("frame_count", [1]), ("thumbnail", [1]),
        ("text_features", [1, -1, 1280]), ("text_mask", [1, -1])]
    tokenize = pipeline_config("text_tokenize", "bin", OFFLINE)
    assert tokenize.parameters["text_kind"].string_value == "offline_minilm_effnet"
    assert [(o.name, o.data_type) for o in tokenize.output] == [("input_ids", model_config_pb2.TYPE_INT64),
                                                                ("attention_mask", model_config_pb2.TYPE_INT64)]
    assert spec.extractor("offline_minilm_effnet") is spec.FEATURE_EXTRACTOR_POOLED
    assert spec.extractor(None) is spec.extractor("teachclip") is spec.FEATURE_EXTRACTOR
    with pytest.raises(ValueError, match="must be one of teachclip, offline_minilm_effnet"):
        spec.text_kind("clip")


def test_python_models_are_complete():
    assert set(PYTHON_MODELS) == set(spec.PIPELINES) - set(ENSEMBLES)
    for name in PYTHON_MODELS:
        config = parse(render(pipeline_config(name, text=TEXT)))
        assert config.backend == "python" and config.instance_group[0].count >= 1
        assert all(t.dims for t in [*config.input, *config.output])
        assert {t.name for t in config.input if t.optional} == {t.name for t in spec.PIPELINES[name].inputs
                                                                 if t.optional}


def test_write_config_is_atomic_and_round_trips(tmp_path):
    config = pipeline_config("dnsvr_search")
    config.parameters["note"].string_value = 'say "hi" \\ bye'
    path = write_config(config, tmp_path / "dnsvr_search" / "config.pbtxt")
    assert parse(path.read_text()) == config
    assert parse(path.read_text()).parameters["note"].string_value == 'say "hi" \\ bye'
    assert not list(tmp_path.rglob("*.partial"))
