"""The Triton adapters (dnsvr.serving.triton) over a stand-in python-backend module: each model.py translates
tensors and calls plain code; errors come back typed; one bad request does not fail the others."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import stand_in_pb_utils
from dnsvr.client.errors import error_from_message
from dnsvr.client.spec import ModelSpec, TensorSpec
from dnsvr.export.repository import NETWORK_ADAPTERS, ONNX_RUNNER, PYTHON_MODELS, VERSION
from dnsvr.export.triton_config import network_configs, pipeline_config
from google.protobuf import json_format

Tensor = stand_in_pb_utils.Tensor


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in_pb_utils)
    stand_in_pb_utils.MODELS.clear()
    stand_in_pb_utils.CALLED.clear()
    yield stand_in_pb_utils.MODELS


def initialized(module: str, config, model_dir, version: str = VERSION):
    """The adapter class of `module`, initialised as Triton would: config JSON, model folder, version."""
    model = importlib.import_module(module).TritonPythonModel()
    model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                      "model_repository": str(model_dir), "model_version": version, "model_name": config.name})
    return model


def requests(*inputs: dict) -> list:
    return [stand_in_pb_utils.InferenceRequest(inputs=[Tensor(k, v) for k, v in item.items()]) for item in inputs]


def text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=object)


def write_manifest(repository, fine: str = "bin", index_views: dict | None = None, view_codes: bool = False) -> None:
    repository.mkdir(parents=True, exist_ok=True)
    (repository / "manifest.json").write_text(json.dumps({"pack_version": "test@1", "fine": [fine],
                                                          "index_views": index_views, "view_codes": view_codes}))


def rerank_stand_ins(stand_in) -> None:
    """selector_score (each pair's coarse score) and fine_similarity_bin (1 for every candidate) stand-ins."""
    stand_in["selector_score"] = lambda inputs: {"scores": inputs["pair_features"][:, 2]}
    stand_in["fine_similarity_bin"] = lambda inputs: {
        "similarity": np.ones(len(inputs["candidates"]), np.float32),
        "f2f": np.zeros((len(inputs["candidates"]), len(inputs["query"]), inputs["candidates"].shape[1]), np.float32)}


def store_adapters(repository, store_uri):
    """name -> that pipeline's adapter of `repository`, initialised over the store at `store_uri`."""
    def adapter(name):
        config = pipeline_config(name)
        config.parameters["store_uri"].string_value = str(store_uri)
        return initialized(PYTHON_MODELS[name], config, repository / name)

    return adapter


def test_every_pipeline_module_defines_an_adapter():
    for module in [*PYTHON_MODELS.values(), ONNX_RUNNER, *NETWORK_ADAPTERS.values()]:
        assert issubclass(importlib.import_module(module).TritonPythonModel,
                          importlib.import_module("dnsvr.serving.triton.base").PythonModel), module


def test_error_messages_stay_small():
    from dnsvr.serving.triton.base import MAX_MESSAGE_CHARS, error_response

    answer = error_response("dnsvr_search", ValueError("x" * 10_000))
    assert len(answer.error().message()) < MAX_MESSAGE_CHARS + 100 and "more characters" in answer.error().message()


def frame_values(frames: np.ndarray) -> np.ndarray:
    """float32 [n, 1]: the grey level of each (uniform) frame."""
    return frames[:, 0, 0, :1].astype(np.float32)


def test_video_features_adapter_answers_each_request(tmp_path, stand_in, monkeypatch):
    monkeypatch.delenv("DNSVR_MAX_FRAMES", raising=False)
    seen = []

    def extractor(inputs):
        seen.append(len(inputs["frames"]))
        return {"features": frame_values(inputs["frames"])[:, :, None] * np.ones((1, 9, 512), np.float32)}

    stand_in["feature_extractor"] = extractor
    model = initialized(PYTHON_MODELS["video_features"], pipeline_config("video_features"), tmp_path / "vf")
    frames = np.arange(70, dtype=np.uint8)[:, None, None, None] * np.ones((1, 224, 224, 3), np.uint8)
    first, second = model.execute(requests({"frames": frames}, {"video": np.array([b""], object)}))
    assert first.outputs()["features"].shape == (1, 70, 9, 512) and seen == [64, 6]  # the extractor's max batch
    assert first.outputs()["features"][0, :, 0, 0].tolist() == list(range(70))
    assert first.outputs()["frame_count"].tolist() == [70] and first.outputs()["mask"].shape == (1, 70)
    assert second.has_error() and second.error().code() == "INVALID_ARG"
    error = error_from_message(second.error().message())
    assert type(error).__name__ == "InvalidVideo" and "video_features: video is empty" in str(error)
    stand_in["feature_extractor"] = lambda inputs: 1 / 0
    (failed,) = model.execute(requests({"frames": frames[:3]}))
    assert failed.has_error() and "feature_extractor: division by zero" in failed.error().message()


def test_video_features_adapter_of_the_offline_student_gathers_its_frames(tmp_path, stand_in):
    def pooled_extractor(inputs):
        values = frame_values(inputs["frames"])
        return {"features": np.ones((len(values), 9, 512), np.float32), "pooled": values * np.ones((1, 1280))}

    stand_in["feature_extractor_pooled"] = pooled_extractor
    offline = {"kind": "offline_minilm_effnet", "afa": "real_frames", "max_frames": 4, "embed_dim": 8, "max_words": 32}
    config = pipeline_config("video_features", text=offline)
    model = initialized(PYTHON_MODELS["video_features"], config, tmp_path / "vf")
    frames = np.arange(70, dtype=np.uint8)[:, None, None, None] * np.ones((1, 224, 224, 3), np.uint8)
    (answer,) = model.execute(requests({"frames": frames}))
    assert answer.outputs()["text_features"][0, :, 0].tolist() == [0.0, 23.0, 46.0, 69.0]
    assert answer.outputs()["text_mask"].tolist() == [[True] * 4]
    assert answer.outputs()["features"].shape == (1, 70, 9, 512)


def test_video_views_adapter_embeds_each_crop_of_the_manifests_grid(tmp_path, stand_in):
    extracted, embedded, coded = [], [], []

    def extractor(inputs):
        extracted.append(len(inputs["frames"]))
        return {"features": frame_values(inputs["frames"])[:, :, None] * np.ones((1, 9, 512), np.float32)}

    def coarse(inputs):
        embedded.append(inputs["features"].shape)
        means = inputs["features"][:, :, 0, 0].mean(axis=1)  # [n]: each crop's mean grey level
        return {"embedding": np.stack([means, np.ones_like(means)], axis=1)}

    def fine(inputs):  # each frame's codes: its grey level in every byte
        coded.append(inputs["features"].shape)
        return {"indexed": (inputs["features"][..., :64] * inputs["mask"][..., None, None]).astype(np.uint8)}

    stand_in["feature_extractor"], stand_in["coarse_embed"], stand_in["fine_index_bin"] = extractor, coarse, fine
    repository = tmp_path / "repo"
    write_manifest(repository, index_views={"crop": 0.5, "stride": 0.5})  # 4 crops: the quadrants, no codes
    model = initialized(PYTHON_MODELS["video_views"], pipeline_config("video_views"), repository / "video_views")
    frames = np.zeros((6, 224, 224, 3), np.uint8)
    frames[:, 112:, 112:] = 200  # the bottom-right quadrant is bright
    (answer,) = model.execute(requests({"frames": frames}))
    assert answer.outputs()["views"][0, :, 0].tolist() == [0.0, 0.0, 0.0, 200.0]  # row by row
    assert answer.outputs()["view_codes"].shape == (1, 0, 0, 9, 64) and coded == []  # the store keeps none
    extracted.clear()
    embedded.clear()
    write_manifest(repository, index_views={"crop": 0.5, "stride": 0.5}, view_codes=True)
    model = initialized(PYTHON_MODELS["video_views"], pipeline_config("video_views"), repository / "video_views")
    (answer,) = model.execute(requests({"frames": frames}))
    assert answer.outputs()["views"][0, :, 0].tolist() == [0.0, 0.0, 0.0, 200.0]
    assert extracted == [16, 8] and embedded == [(4, 6, 9, 512)]  # 4 frames a chunk, 4 crops each
    codes = answer.outputs()["view_codes"]  # [1, 4 crops, 6 frames, 9, 64] from the fine student's index model
    assert codes.shape == (1, 4, 6, 9, 64) and codes.dtype == np.uint8
    assert codes[0, :, :, 0, 0].tolist() == [[0] * 6, [0] * 6, [0] * 6, [200] * 6]
    write_manifest(repository)
    plain = initialized(PYTHON_MODELS["video_views"], pipeline_config("video_views"), repository / "video_views")
    (refused,) = plain.execute(requests({"frames": frames}))
    assert refused.error().code() == "INVALID_ARG" and "full frames alone" in refused.error().message()


def test_called_models_tag_passes_through(tmp_path, stand_in):
    def refuse(inputs):
        raise ValueError("[dnsvr:invalid_video] video_features: no video stream")

    stand_in["dnsvr_embed"] = refuse
    write_manifest(tmp_path / "repo")
    model = initialized(PYTHON_MODELS["dnsvr_index"], pipeline_config("dnsvr_index"), tmp_path / "repo" / "dnsvr_index")
    model.parameters["store_uri"] = str(tmp_path / "store.db")
    (answer,) = model.execute(requests({"video_id": text("a"), "video": text("junk")}))
    assert answer.error().message() == "[dnsvr:invalid_video] video_features: no video stream"
    assert answer.error().code() == "INVALID_ARG"


def test_the_received_video_goes_on_as_the_tensor_it_came_in(tmp_path, stand_in):
    """dnsvr_search hands its request's video tensor itself to dnsvr_embed (no serialising and copying it again);
    arrays made while answering become new tensors, and nothing of the request is kept after its answer."""
    from dnsvr.serving.triton import base

    coarse = np.ones((1, 8), np.float32) / np.sqrt(8)
    stand_in["dnsvr_embed"] = lambda inputs: {"coarse": coarse, "selector": np.array([[0.5]], np.float32),
                                              "fine": np.zeros((1, 4, 9, 64), np.uint8)}
    rerank_stand_ins(stand_in)
    write_manifest(tmp_path / "repo")
    search = store_adapters(tmp_path / "repo", tmp_path / "store.db")("dnsvr_search")
    try:
        (request,) = requests({"video": text("q"), "top_k": np.array([3], np.int32)})
        (answer,) = search.execute([request])
        assert not answer.has_error()
        (embed,) = [called for called in stand_in_pb_utils.CALLED if called.model_name == "dnsvr_embed"]
        assert embed.inputs["video"] is request.inputs["video"]
        assert base.RECEIVED == {}
        assert isinstance(base.as_tensor("video", text("q")), Tensor)  # an array not received: a tensor of its own
    finally:
        search.finalize()


def test_store_adapters_index_search_delete_stats(tmp_path, stand_in):
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=8).astype(np.float32)
    coarse /= np.linalg.norm(coarse)
    thumbnail = b"\xff\xd8\xff" + b"thumbnail"
    stand_in["dnsvr_embed"] = lambda inputs: {"coarse": coarse[None], "selector": np.array([[0.5]], np.float32),
                                              "fine": np.zeros((1, 4, 9, 64), np.uint8),
                                              "thumbnail": np.array([thumbnail], object)}
    rerank_stand_ins(stand_in)
    repository = tmp_path / "repo"
    write_manifest(repository)
    adapter = store_adapters(repository, tmp_path / "store.db")
    index, search, delete, stats, thumbnails = (adapter(n) for n in ("dnsvr_index", "dnsvr_search", "dnsvr_delete",
                                                                     "dnsvr_stats", "dnsvr_thumbnails"))
    try:
        indexed = index.execute(requests({"video_id": text("a"), "video": text("a")},
                                         {"video_id": text('bad"id'), "video": text("b")}))
        assert indexed[0].outputs()["frame_count"].tolist() == [4]
        assert indexed[1].error().code() == "INVALID_ARG" and "forbidden character" in indexed[1].error().message()
        (skipped,) = index.execute(requests({"video_id": text("b"), "video": text("b"), "on_duplicate": text("skip"),
                                             "duplicate_threshold": np.array([0.9], np.float32)}))
        assert skipped.outputs()["stored"].tolist() == [False] and skipped.outputs()["duplicate_ids"].tolist() == [b"a"]
        found, missing = search.execute(requests(
            {"video": text("q"), "top_k": np.array([3], np.int32), "rerank": text("1.0")},
            {"video_id": text("nope"), "top_k": np.array([3], np.int32)}))
        assert found.outputs()["video_ids"].tolist() == [b"a"] and found.outputs()["reranked"].tolist() == [True]
        assert found.outputs()["scores"].tolist() == [1.0]
        assert search.code_cache.budget == 384 << 20  # the config's code_cache_mb, one cache per instance
        assert search.warmer is not None and search.warmer.period_s == 60  # its code_cache_warm_s
        (again,) = search.execute(requests({"video": text("q"), "top_k": np.array([3], np.int32),
                                            "rerank": text("1.0")}))  # a's codes from the cache now
        assert again.outputs()["scores"].tolist() == [1.0] and again.outputs()["reranked"].tolist() == [True]
        assert missing.error().code() == "NOT_FOUND"
        assert type(error_from_message(missing.error().message())).__name__ == "NotFound"
        (pictures,) = thumbnails.execute(requests({"video_ids": np.array([b"a", b"b"], object)}))
        assert pictures.outputs()["thumbnails"].tolist() == [thumbnail, b""]  # b was skipped as a duplicate
        (report,) = stats.execute(requests({"request": text("health")}))
        assert json.loads(report.outputs()["report"][0])["videos"] == 1
        (deleted,) = delete.execute(requests({"video_id": text("a")}))
        assert deleted.outputs()["deleted"].tolist() == [True]
    finally:
        for model in (index, search, delete, stats, thumbnails):
            model.finalize()


@pytest.mark.parametrize("keeps_codes", [True, False])
def test_index_adapter_stores_the_crop_views_and_search_meets_them(tmp_path, stand_in, keeps_codes):
    """A repository whose pack indexes by a crop grid: dnsvr_index calls video_views for a video it stores (not for
    one it skips as a duplicate), the store keeps its views, and a query showing a crop finds it by that view; the
    fine student compares that view's codes where the export keeps them (`--view-codes`), else the full frame's."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # the full frame, then 4 crop views
    asked = []
    stand_in["dnsvr_embed"] = lambda inputs: {"coarse": vectors[:1], "selector": np.array([[0.5]], np.float32),
                                              "fine": np.zeros((1, 4, 9, 64), np.uint8),
                                              "thumbnail": np.array([b"\xff\xd8\xff"], object)}
    view_codes = np.arange(1, 5, dtype=np.uint8)[None, :, None, None, None] * np.ones((1, 4, 4, 9, 64), np.uint8)
    if not keeps_codes:
        view_codes = np.zeros((1, 0, 0, 9, 64), np.uint8)  # what video_views answers for such an export
    stand_in["video_views"] = lambda inputs: asked.append(inputs["video"]) or {"views": vectors[None, 1:],
                                                                               "view_codes": view_codes}
    rerank_stand_ins(stand_in)
    compared = []
    fine_similarity = stand_in["fine_similarity_bin"]
    stand_in["fine_similarity_bin"] = lambda inputs: compared.append(inputs["candidates"]) or fine_similarity(inputs)
    repository = tmp_path / "repo"
    write_manifest(repository, index_views={"crop": 0.5, "stride": 0.5}, view_codes=keeps_codes)
    adapter = store_adapters(repository, tmp_path / "store.db")
    index, search = adapter("dnsvr_index"), adapter("dnsvr_search")
    try:
        (stored,) = index.execute(requests({"video_id": text("a"), "video": text("a")}))
        assert stored.outputs()["stored"].tolist() == [True] and asked == [text("a")]
        (skipped,) = index.execute(requests({"video_id": text("b"), "video": text("b"), "on_duplicate": text("skip"),
                                             "duplicate_threshold": np.array([0.9], np.float32)}))
        assert skipped.outputs()["stored"].tolist() == [False] and len(asked) == 1  # no views for a skipped copy
        assert "crop_views" in json.loads(stored.outputs()["timings"][0])
        stand_in["dnsvr_embed"] = lambda inputs: {"coarse": vectors[3:4], "selector": np.array([[0.5]], np.float32),
                                                  "fine": np.zeros((1, 4, 9, 64), np.uint8)}
        (found,) = search.execute(requests({"video": text("q"), "top_k": np.array([1], np.int32),
                                            "rerank": text("0")}))
        assert found.outputs()["video_ids"].tolist() == [b"a"]
        assert found.outputs()["coarse_scores"].tolist() == pytest.approx([1.0], abs=1e-5)  # its third crop view
        stored_video = index.stores.existing().get("a")
        np.testing.assert_allclose(stored_video.views, vectors[1:], atol=1e-6)
        if keeps_codes:
            np.testing.assert_array_equal(stored_video.view_codes, view_codes[0])
        else:
            assert stored_video.view_codes is None
        (reranked,) = search.execute(requests({"video": text("q"), "top_k": np.array([1], np.int32),
                                               "rerank": text("fraction:1")}))
        assert reranked.outputs()["reranked"].tolist() == [True]
        assert [candidates[0, 0, 0, 0] for candidates in compared] == [3 if keeps_codes else 0]  # the codes it saw
    finally:
        for model in (index, search):
            model.finalize()


def test_onnx_adapter_batches_requests_and_isolates_bad_ones(tmp_path):
    import torch

    model_dir = tmp_path / "double"
    (model_dir / VERSION).mkdir(parents=True)
    torch.onnx.export(torch.nn.Linear(2, 2, bias=False), (torch.zeros(1, 2),), model_dir / VERSION / "model.onnx",
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                      dynamo=False)
    spec_ = ModelSpec("double", (TensorSpec("x", "float32", (-1, 2)),), (TensorSpec("y", "float32", (-1, 2)),),
                      max_batch_size=8, dynamic_batching=True)
    model = initialized(ONNX_RUNNER, network_configs(spec_)["configs/cpu_local.pbtxt"], model_dir)
    ones, wrong = np.ones((2, 2), np.float32), np.ones((2, 3), np.float32)
    first, bad, third = model.execute(requests({"x": ones}, {"x": wrong}, {"x": ones[:1]}))
    assert first.outputs()["y"].shape == (2, 2) and third.outputs()["y"].shape == (1, 2)
    np.testing.assert_allclose(third.outputs()["y"], first.outputs()["y"][:1])
    assert bad.error().code() == "INVALID_ARG" and "axis 1 differs" in bad.error().message()
    config = network_configs(spec_)["configs/cpu_local.pbtxt"]
    config.input[0].name = "z"
    with pytest.raises(ValueError, match="differ from the ONNX graph"):
        initialized(ONNX_RUNNER, config, model_dir)


def test_fine_similarity_bin_adapter_runs_the_hamming_kernel_and_isolates_bad_requests(tmp_path, golden_dir):
    """cpu_local fine_similarity_bin: its model.py's adapter scores with the Hamming kernel (hamming_threads from
    the config) and comparator.onnx, like HammingFineSimilarity; a bad mask fails only its own request."""
    from dnsvr.client import spec
    from dnsvr.export.graphs import ComparatorGraph
    from dnsvr.export.hamming import COMPARATOR_FILE, HammingFineSimilarity
    from dnsvr.export.onnx_export import example_feeds, export_onnx
    from dnsvr.training import load_checkpoint

    model_dir = tmp_path / spec.FINE_SIMILARITY_BIN.name
    comparator = export_onnx(ComparatorGraph(load_checkpoint(golden_dir / "fg_bin_student.pth")),
                             spec.FINE_COMPARATOR, model_dir / VERSION / COMPARATOR_FILE)
    config = network_configs(spec.FINE_SIMILARITY_BIN)["configs/cpu_local.pbtxt"]
    config.parameters["hamming_threads"].string_value = "2"
    model = initialized(NETWORK_ADAPTERS[spec.FINE_SIMILARITY_BIN.name], config, model_dir)
    assert model.runner.threads == 2
    first = example_feeds(spec.FINE_SIMILARITY_BIN, [3, 8, 5], 8, 4, 6, seed=2)
    third = example_feeds(spec.FINE_SIMILARITY_BIN, [1], 2, 7, 7, seed=3)
    bad = dict(first, candidate_mask=~first["candidate_mask"])
    answers = model.execute(requests(first, bad, third))
    reference = HammingFineSimilarity(comparator)
    for answer, feeds in ((answers[0], first), (answers[2], third)):
        np.testing.assert_array_equal(answer.outputs()["similarity"], reference.run(feeds)["similarity"])
    assert answers[1].error().code() == "INVALID_ARG" and "prefix mask" in answers[1].error().message()
    model.finalize()
    with pytest.raises(RuntimeError, match="shutdown"):
        model.runner.pool.submit(int)
