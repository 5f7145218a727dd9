"""OnnxRunner and run_requests (the cpu_local model's batching) on a tiny ONNX graph built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from dnsvr.export.onnx_runner import OnnxInputError, OnnxRunError, OnnxRunner, run_requests
from onnx import TensorProto, helper


def write_add_model(path: Path) -> Path:
    """z = x + y, count = Shape(x): x, y [n, 3] float32 -> z [n, 3] float32, count [2] int64."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"]), helper.make_node("Shape", ["x"], ["count"])],
        "add",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3]) for name in ("x", "y")],
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("count", TensorProto.INT64, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> OnnxRunner:
    return OnnxRunner(write_add_model(tmp_path_factory.mktemp("onnx") / "model.onnx"))


def test_declared_tensors(runner):
    assert [t.describe() for t in runner.inputs] == ["x: float32[?, 3]", "y: float32[?, 3]"]
    assert runner.output_names == ["z", "count"]


def test_run_matches_numpy(runner):
    x, y = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    outputs = runner.run({"x": x, "y": y})
    np.testing.assert_array_equal(outputs["z"], x + y)
    np.testing.assert_array_equal(outputs["count"], [2, 3])
    assert list(runner.run({"x": x, "y": y}, ["count"])) == ["count"]


def test_non_contiguous_input_is_accepted(runner):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, :3]
    np.testing.assert_array_equal(runner.run({"x": x, "y": x})["z"], 2 * x)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"x": np.zeros((2, 3), np.float32)}, r"missing input\(s\) \['y'\].*x: float32\[\?, 3\]"),
        ({"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 3), np.float32), "w": np.zeros(1)},
         r"unknown input\(s\) \['w'\]"),
        ({"x": np.zeros((2, 3), np.float64), "y": np.zeros((2, 3), np.float32)},
         r"input 'x' has dtype float64, the model expects float32"),
        ({"x": np.zeros((2, 3, 1), np.float32), "y": np.zeros((2, 3), np.float32)},
         r"input 'x' has rank 3 \(shape \[2, 3, 1\]\), the model expects rank 2"),
        ({"x": np.zeros((2, 4), np.float32), "y": np.zeros((2, 3), np.float32)},
         r"input 'x' has shape \[2, 4\].*axis 1 differs"),
        ({"x": [[0.0, 0.0, 0.0]], "y": np.zeros((1, 3), np.float32)},
         r"input 'x' is a list, not a numpy array"),
    ],
    ids=["missing", "unknown", "dtype", "rank", "fixed-dim", "not-an-array"],
)
def test_bad_inputs_are_named(runner, feeds, message):
    with pytest.raises(OnnxInputError, match=message):
        runner.run(feeds)


def test_unknown_output_is_named(runner):
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(OnnxInputError, match=r"unknown output\(s\) \['nope'\]"):
        runner.run({"x": x, "y": x}, ["nope"])


def test_inconsistent_dynamic_dims_raise_run_error(runner):
    with pytest.raises(OnnxRunError, match="model.onnx: ONNX Runtime failed"):
        runner.run({"x": np.zeros((2, 3), np.float32), "y": np.zeros((3, 3), np.float32)})


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxRunner(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(OnnxRunError, match="cannot load .*junk.onnx"):
        OnnxRunner(tmp_path / "junk.onnx")


def test_run_requests_merges_compatible_requests_and_isolates_failures(runner):
    rng = np.random.default_rng(0)

    def feeds(rows: int, width: int = 3) -> dict[str, np.ndarray]:
        return {"x": rng.standard_normal((rows, width)).astype(np.float32),
                "y": rng.standard_normal((rows, width)).astype(np.float32)}

    rejected = OnnxInputError("bad request")
    requests = [feeds(1), feeds(2), rejected, feeds(3)]
    results = run_requests(runner, requests, ["z", "count"], batched=True)
    assert results[2] is rejected
    for request, result in zip([requests[0], requests[1], requests[3]], [results[0], results[1], results[3]],
                               strict=True):
        np.testing.assert_array_equal(result["z"], request["x"] + request["y"])
    assert results[0]["count"].tolist() == [6]  # Shape(x) of one merged run, split like any output: 1 + 2 + 3 rows
    unbatched = run_requests(runner, [feeds(1), feeds(2)], ["count"], batched=False)
    assert [r["count"].tolist() for r in unbatched] == [[1, 3], [2, 3]]
    broken = {"x": np.zeros((2, 3), np.float32), "y": np.zeros((3, 3), np.float32)}  # rows disagree at run time
    mixed = run_requests(runner, [feeds(2), broken], ["z"], batched=True)
    assert isinstance(mixed[1], OnnxRunError) and mixed[0]["z"].shape == (2, 3)
