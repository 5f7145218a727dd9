"""Fold a zero `Pad` into the `Conv` that reads it: one pass over every exported ONNX graph.

EfficientNet-Lite0's stride-2 convolutions pad the TensorFlow "SAME" way, one pixel more at the bottom and right
than at the top and left, which PyTorch's Conv2d cannot say, so the traced graph holds `Pad -> Conv`.  ONNX's
Conv takes asymmetric `pads`, so the pad can be the convolution's own.  ONNX Runtime keeps a network of Convs in
its blocked (NCHWc) layout, but leaves that layout and comes back around every Pad; without the Pads the served
extractor runs 1.5x faster on CPU (docs/export.md).

    fold_pads_into_convs(proto) -> the number of Pad nodes folded (the graph is edited in place)

A Pad is folded when its mode is constant, its value absent or 0, it has no `axes` input, its `pads` is a
constant (an initializer, or nodes that read constants only) that pads the spatial axes alone, by >= 0, and its
output is read by one Conv only (not a graph output) whose `auto_pad` is NOTSET.  Nodes and initializers left
unread afterwards are dropped.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def fold_pads_into_convs(proto: onnx.ModelProto) -> int:
    """Fold every foldable Pad of `proto`'s main graph into its Conv (see the module); the count folded."""
    graph = proto.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    folded = 0
    for pad in [node for node in graph.node if node.op_type == "Pad"]:
        conv = _only_conv_reader(pad, readers, outputs)
        pads = _spatial_pads(proto, pad) if conv is not None else None
        if conv is None or pads is None:
            continue
        begins, ends = pads
        attributes = {attribute.name: attribute for attribute in conv.attribute}
        old = list(attributes["pads"].ints) if "pads" in attributes else [0] * (2 * len(begins))
        if "pads" in attributes:
            conv.attribute.remove(attributes["pads"])
        spatial = len(begins)
        conv.attribute.append(helper.make_attribute(
            "pads", [old[axis] + begins[axis] for axis in range(spatial)]
            + [old[spatial + axis] + ends[axis] for axis in range(spatial)]))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    if folded:
        _drop_unread(graph)
    return folded


def _only_conv_reader(pad: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]], outputs: set[str]
                      ) -> onnx.NodeProto | None:
    """The Conv that alone reads `pad`'s output as its data input, with auto_pad NOTSET; else None."""
    read_by = readers.get(pad.output[0], [])
    if pad.output[0] in outputs or len(read_by) != 1 or read_by[0].op_type != "Conv":
        return None
    conv = read_by[0]
    auto_pad = next((attribute.s for attribute in conv.attribute if attribute.name == "auto_pad"), b"NOTSET")
    if auto_pad not in (b"NOTSET", b"") or conv.input[0] != pad.output[0] or pad.output[0] in conv.input[1:]:
        return None
    return conv


def _spatial_pads(proto: onnx.ModelProto, pad: onnx.NodeProto) -> tuple[list[int], list[int]] | None:
    """A foldable Pad's (begins, ends) on the spatial axes (after batch and channels); None if it is not one."""
    mode = next((attribute.s for attribute in pad.attribute if attribute.name == "mode"), b"constant")
    if mode != b"constant" or (len(pad.input) > 3 and pad.input[3]):
        return None
    if len(pad.input) > 2 and pad.input[2]:
        value = constant_value(proto, pad.input[2])
        if value is None or np.any(value != 0):
            return None
    pads = constant_value(proto, pad.input[1])
    if pads is None or pads.ndim != 1 or len(pads) < 6 or len(pads) % 2:
        return None
    rank = len(pads) // 2
    pads = [int(value) for value in pads]  # [axis 0 .. rank-1 begins, axis 0 .. rank-1 ends]
    if any(pads[axis] or pads[rank + axis] for axis in (0, 1)) or min(pads) < 0:
        return None
    return pads[2:rank], pads[rank + 2:]


def constant_value(proto: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of tensor `name` of `proto`'s main graph when it depends on constants only (an initializer,
    or nodes reading only initializers and nodes like them), computed by ONNX's reference evaluator; None when
    it depends on a graph input."""
    graph = proto.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    producers = {output: node for node in graph.node for output in node.output}
    needed: set[int] = set()
    used: dict[str, onnx.TensorProto] = {}
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if not tensor or tensor in seen:
            continue
        seen.add(tensor)
        if tensor in initializers:
            used[tensor] = initializers[tensor]
        elif tensor in producers:
            node = producers[tensor]
            needed.add(id(node))
            pending.extend(node.input)
        else:
            return None  # a graph input
    nodes = [node for node in graph.node if id(node) in needed]  # in the graph's (topological) order
    subgraph = helper.make_graph(nodes, "constant", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED,
                                                                                       None)], list(used.values()))
    model = helper.make_model(subgraph, opset_imports=list(proto.opset_import))
    return np.asarray(ReferenceEvaluator(model).run(None, {})[0])


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove the nodes none of whose outputs is read or a graph output, until none is left, then the
    initializers no node reads (and that are no graph input)."""
    outputs = {value.name for value in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [node for node in graph.node if not any(output in read for output in node.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | outputs | {value.name for value in graph.input}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
