"""Trace one `dnsvr.export.graphs` module to a deterministic, checked ONNX file named as in the spec.

`export_onnx(graph, model_spec, path)`: inputs/outputs named and typed as `dnsvr.client.spec` says, every -1
axis of the spec dynamic, opset `spec.OPSET` (or another supported one), `onnx.checker` run on the result.
A zero Pad feeding a Conv becomes the Conv's own padding (`onnx_folding`).  The file is byte-for-byte
reproducible: doc strings (which hold source locations) are dropped and the producer fields are fixed.
`example_feeds(model_spec, ...)` builds valid random inputs for any model.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from dnsvr.client import spec
from dnsvr.export.onnx_folding import fold_pads_into_convs
from torch import nn

SUPPORTED_OPSETS = range(17, 21)  # 17: LayerNormalization; TensorRT 8.6+ and Triton 24.10's ORT run these
PRODUCER = "dnsvr.export"


class ExportError(Exception):
    """An export that cannot be done (unsupported opset, a graph failing the ONNX checker, a busy or foreign
    output folder)."""


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"unsupported ONNX opset {opset}: use one of {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
            f" (default {spec.OPSET})"
        )
    return opset


def dynamic_axes(model: spec.ModelSpec) -> dict[str, dict[int, str]]:
    """{tensor: {axis: symbolic name}} for every -1 axis of the spec, inputs and outputs."""
    axes = {}
    for tensor in model.inputs + model.outputs:
        dynamic = {axis: f"{tensor.name}_{axis}" for axis, dim in enumerate(tensor.dims) if dim == -1}
        if dynamic:
            axes[tensor.name] = dynamic
    return axes


def _lengths_mask(lengths: list[int], frames: int) -> np.ndarray:
    return np.arange(frames)[None, :] < np.asarray(lengths)[:, None]


def random_features(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Temporally correlated L2-normalised region features `[..., T, R, D]` float32."""
    x = rng.standard_normal(shape).astype(np.float32).cumsum(axis=-3)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def example_feeds(
    model: spec.ModelSpec,
    lengths: list[int] | None = None,
    frames: int | None = None,
    query_length: int = 5,
    query_frames: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Valid random inputs for `model`: videos with `lengths` real frames, zero-padded to `frames`.

    For fine_similarity_*: a query of `query_length` real frames padded to `query_frames`, and
    `len(lengths)` candidates.  Padded positions hold 0; features are L2-normalised.  For fine_comparator:
    random frame-to-frame matrices in [-1, 1] of `query_length` x `lengths[0]` real frames.
    """
    rng = np.random.default_rng(seed)
    lengths = lengths or [5, 3]
    frames = frames or max(lengths)
    names = model.input_names
    if names == ("frames",):
        return {"frames": rng.integers(0, 256, (frames, spec.FRAME_SIZE, spec.FRAME_SIZE, 3), dtype=np.uint8)}
    if names == ("pair_features",):
        return {"pair_features": rng.uniform(-1, 1, (len(lengths), 3)).astype(np.float32)}
    if names == ("features", "mask"):
        mask = _lengths_mask(lengths, frames)
        features = random_features(rng, (len(lengths), frames, spec.REGIONS, spec.FEATURE_DIMS))
        return {"features": features * mask[:, :, None, None], "mask": mask}
    query_frames = query_frames or query_length
    query_mask = _lengths_mask([query_length], query_frames)
    candidate_mask = _lengths_mask(lengths, frames)
    if names == spec.FINE_COMPARATOR.input_names:  # no padding: the query's and the first length's real cells
        return {"f2f": rng.uniform(-1, 1, (len(lengths), query_length, lengths[0])).astype(np.float32)}
    query = random_features(rng, (1, query_frames, spec.REGIONS, spec.FEATURE_DIMS)) * query_mask[..., None, None]
    candidates = random_features(rng, (len(lengths), frames, spec.REGIONS, spec.FEATURE_DIMS))
    candidates[1::2, : min(frames, query_frames)] += query[0, : min(frames, query_frames)]  # some copies
    candidates = candidates / np.linalg.norm(candidates, axis=-1, keepdims=True) * candidate_mask[..., None, None]
    if model.input("query").dtype == "uint8":
        from dnsvr.training.networks.codes import pack_codes

        query = pack_codes(query @ rng.standard_normal((spec.FEATURE_DIMS,) * 2).astype(np.float32))
        candidates = pack_codes(candidates @ rng.standard_normal((spec.FEATURE_DIMS,) * 2).astype(np.float32))
        query, candidates = query * query_mask[..., None, None], candidates * candidate_mask[..., None, None]
    return {
        "query": np.ascontiguousarray(query[0].astype(model.input("query").numpy_dtype)),
        "query_mask": query_mask[0],
        "candidates": np.ascontiguousarray(candidates.astype(model.input("candidates").numpy_dtype)),
        "candidate_mask": candidate_mask,
    }


def _strip_doc_strings(proto: onnx.ModelProto) -> None:
    proto.doc_string = ""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        for node in graph.node:
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def export_onnx(
    graph: nn.Module,
    model: spec.ModelSpec,
    path: str | Path,
    opset: int = spec.OPSET,
    example: dict[str, np.ndarray] | None = None,
    fold_pads: bool = True,
) -> Path:
    """Trace `graph` (a `dnsvr.export.graphs` module) on `example` (default: `example_feeds(model)`) and
    write `path`: an ONNX model with the spec's tensor names, dtypes and dynamic axes (`fold_pads=False`: the
    Pads left as traced, for benchmarks/extractor_bench.py).

    Raises ExportError for an unsupported opset, a traced graph whose inputs/outputs differ from the spec, or
    one that `onnx.checker` rejects.
    """
    check_opset(opset)
    path = Path(path)
    feeds = example if example is not None else example_feeds(model, lengths=[7, 5], frames=9)
    args = tuple(torch.from_numpy(feeds[name]) for name in model.input_names)
    buffer = io.BytesIO()
    graph = graph.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        torch.onnx.export(
            graph, args, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=list(model.input_names), output_names=list(model.output_names),
            dynamic_axes=dynamic_axes(model),
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if fold_pads:
        fold_pads_into_convs(proto)
    _strip_doc_strings(proto)
    proto.producer_name = PRODUCER
    proto.producer_version = f"torch-{torch.__version__}"
    proto.graph.name = model.name
    _check_interface(proto, model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{model.name}: the exported graph fails the ONNX checker: {error}") from error
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString(deterministic=True))
    return path


def _check_interface(proto: onnx.ModelProto, model: spec.ModelSpec) -> None:
    """Raise ExportError unless the graph's inputs and outputs have the spec's names, dtypes and ranks."""
    declared = {"input": model.inputs, "output": model.outputs}
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        found = [(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type),
                  len(v.type.tensor_type.shape.dim)) for v in values]
        wanted = [(t.name, t.numpy_dtype, len(t.dims)) for t in declared[kind]]
        if found != wanted:
            raise ExportError(f"{model.name}: traced {kind}s {found} differ from the spec's {wanted}")
