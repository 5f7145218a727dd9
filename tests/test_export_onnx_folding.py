"""`fold_pads_into_convs`: a zero Pad read by a Conv alone becomes the Conv's padding, the outputs unchanged;
every other Pad is left as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from dnsvr.export.onnx_folding import constant_value, fold_pads_into_convs
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)
WEIGHT = numpy_helper.from_array(RNG.standard_normal((3, 2, 3, 3)).astype(np.float32), "weight")
X = RNG.standard_normal((1, 2, 8, 7)).astype(np.float32)
ANY_4D = ["n", "c", "h", "w"]


def model(pads: list[int], *, mode: str = "constant", value: float | None = None, conv_pads: list[int] | None = None,
          pad_is_output: bool = False, second_reader: bool = False, pads_from_shape: bool = False
          ) -> onnx.ModelProto:
    """x [1, 2, 8, 7] -> Pad(pads, computed by Constant nodes) -> Conv 3x3 stride 2 -> y (and what the flags add)."""
    nodes = [helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(
                 np.array(pads, np.int64) // 2, "half")),
             helper.make_node("Mul", ["half", "two"], ["twice"]),
             helper.make_node("Add", ["twice", "odd"], ["pads"])]
    initializers = [WEIGHT, numpy_helper.from_array(np.array(2, np.int64), "two"),
                    numpy_helper.from_array(np.array(pads, np.int64) % 2, "odd")]
    pad_inputs = ["x", "pads"]
    if pads_from_shape:
        nodes += [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Sub", ["shape", "shape"], ["zeros"]),
                  helper.make_node("Concat", ["zeros", "zeros"], ["no_pads"], axis=0),
                  helper.make_node("Add", ["pads", "no_pads"], ["shaped_pads"])]
        pad_inputs = ["x", "shaped_pads"]
    if value is not None:
        initializers.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes.append(helper.make_node("Pad", pad_inputs, ["padded"], mode=mode))
    conv_attributes = {"strides": [2, 2]} | ({"pads": conv_pads} if conv_pads else {})
    nodes.append(helper.make_node("Conv", ["padded", "weight"], ["y"], **conv_attributes))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ANY_4D)]
    if pad_is_output:
        outputs.append(helper.make_tensor_value_info("padded", TensorProto.FLOAT, ANY_4D))
    if second_reader:
        nodes.append(helper.make_node("Relu", ["padded"], ["relu"]))
        outputs.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, ANY_4D))
    graph = helper.make_graph(nodes, "padded_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [1, 2, 8, 7])],
                              outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run(proto: onnx.ModelProto) -> list[np.ndarray]:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})


@pytest.mark.parametrize(("pads", "conv_pads", "folded_pads"), [
    ([0, 0, 0, 0, 0, 0, 1, 1], None, [0, 0, 1, 1]),  # TensorFlow SAME at stride 2: one more at the end
    ([0, 0, 1, 2, 0, 0, 2, 1], None, [1, 2, 2, 1]),
    ([0, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 1], [1, 2, 2, 1]),  # added to the conv's own padding
])
def test_a_zero_pad_becomes_the_convs_padding(pads, conv_pads, folded_pads) -> None:
    proto = model(pads, conv_pads=conv_pads)
    before = run(proto)
    assert fold_pads_into_convs(proto) == 1
    onnx.checker.check_model(proto, full_check=True)
    assert [node.op_type for node in proto.graph.node] == ["Conv"]  # the pads' Constant/Mul/Add dropped too
    assert [initializer.name for initializer in proto.graph.initializer] == ["weight"]
    conv = proto.graph.node[0]
    assert list(conv.input) == ["x", "weight"]
    assert next(list(a.ints) for a in conv.attribute if a.name == "pads") == folded_pads
    np.testing.assert_allclose(run(proto)[0], before[0], rtol=0, atol=1e-5)


def test_an_explicit_zero_value_folds_too() -> None:
    proto = model([0, 0, 0, 0, 0, 0, 1, 1], value=0.0)
    before = run(proto)
    assert fold_pads_into_convs(proto) == 1
    np.testing.assert_allclose(run(proto)[0], before[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("change", [
    {"mode": "reflect"},
    {"value": 1.0},
    {"pad_is_output": True},
    {"second_reader": True},
    {"pads_from_shape": True},  # depends on a graph input: not a constant
])
def test_other_pads_are_left_alone(change) -> None:
    proto = model([0, 0, 0, 0, 0, 0, 1, 1], **change)
    before = proto.SerializeToString()
    assert fold_pads_into_convs(proto) == 0
    assert proto.SerializeToString() == before


def test_a_pad_of_the_batch_axis_is_left_alone() -> None:
    proto = model([1, 0, 0, 0, 0, 0, 1, 1])
    assert fold_pads_into_convs(proto) == 0
    assert "Pad" in [node.op_type for node in proto.graph.node]


def test_constant_value_evaluates_constant_nodes_and_refuses_graph_inputs() -> None:
    proto = model([0, 0, 1, 2, 0, 0, 3, 1], pads_from_shape=True)
    assert constant_value(proto, "pads").tolist() == [0, 0, 1, 2, 0, 0, 3, 1]
    assert constant_value(proto, "two").tolist() == 2
    assert constant_value(proto, "shaped_pads") is None
