"""Run one ONNX graph on the CPU with ONNX Runtime, checking every input against the graph first.

`OnnxRunner(path).run({"x": array})` takes numpy arrays named as the graph's inputs and returns a dict of
numpy arrays named as its outputs. Before running, each array is checked against the graph's declared
element type, rank and fixed dimensions, so a caller gets `OnnxInputError: input 'x' has dtype float64, the
model expects float32` instead of an ONNX Runtime stack trace. Nothing is cast silently.

This is the engine of the `cpu_local` Triton python models (see `dnsvr.serving.triton.onnx_model`), and is
equally usable on its own, e.g. to compare a served model with the file it was exported to.
`run_requests(runner, feeds_per_request, batched)` runs the requests Triton's dynamic batcher hands over
together: concatenated on the batch axis and run once where their other dims agree, request by request
where a merged run fails, each request's failure its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

ONNX_TO_NUMPY = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}


class OnnxInputError(ValueError):
    """The arrays given do not match the graph's inputs (names, dtypes, ranks or fixed dimensions)."""

    tag = "invalid_video"  # how a served model reports it (dnsvr.client.errors): the request is wrong


class OnnxRunError(RuntimeError):
    """ONNX Runtime failed while running valid-looking inputs (e.g. inconsistent dynamic dimensions)."""


@dataclass(frozen=True)
class GraphTensor:
    """An input or output as the graph declares it; `shape`: an int per fixed axis, None per dynamic one."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


def _graph_tensor(node: ort.NodeArg) -> GraphTensor:
    if node.type not in ONNX_TO_NUMPY:
        raise OnnxInputError(f"tensor '{node.name}' has ONNX type {node.type}, not supported by OnnxRunner")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in node.shape)
    return GraphTensor(node.name, ONNX_TO_NUMPY[node.type], shape)


def check_feeds(label: str, inputs: Sequence[GraphTensor], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check `feeds` against `inputs` (names, dtypes, ranks, fixed dims); return them as C-contiguous arrays.
    Raises OnnxInputError naming `label` (the model file) and what the model takes."""
    names = [tensor.name for tensor in inputs]
    unknown = sorted(set(feeds) - set(names))
    missing = [name for name in names if name not in feeds]
    if unknown or missing:
        problems = []
        if missing:
            problems.append(f"missing input(s) {missing}")
        if unknown:
            problems.append(f"unknown input(s) {unknown}")
        raise OnnxInputError(
            f"{label}: {' and '.join(problems)}; the model takes "
            + ", ".join(tensor.describe() for tensor in inputs)
        )
    checked = {}
    for tensor in inputs:
        array = feeds[tensor.name]
        if not isinstance(array, np.ndarray):
            raise OnnxInputError(f"input '{tensor.name}' is a {type(array).__name__}, not a numpy array")
        if array.dtype != tensor.dtype:
            raise OnnxInputError(
                f"input '{tensor.name}' has dtype {array.dtype.name}, the model expects "
                f"{tensor.dtype.name} ({tensor.describe()})"
            )
        if array.ndim != len(tensor.shape):
            raise OnnxInputError(
                f"input '{tensor.name}' has rank {array.ndim} (shape {list(array.shape)}), the model "
                f"expects rank {len(tensor.shape)} ({tensor.describe()})"
            )
        pairs = enumerate(zip(array.shape, tensor.shape, strict=True))
        wrong_axes = [axis for axis, (got, want) in pairs if want not in (None, got)]
        if wrong_axes:
            raise OnnxInputError(
                f"input '{tensor.name}' has shape {list(array.shape)}, the model expects "
                f"{tensor.describe()} (axis {wrong_axes[0]} differs)"
            )
        checked[tensor.name] = np.ascontiguousarray(array)
    return checked


class OnnxRunner:
    """An ONNX Runtime CPU session over one `.onnx` file, with input validation.

    model_path: the `.onnx` file. intra_op_threads: threads ONNX Runtime uses inside one operator (keep it
    small when several model instances share the cores; 0 lets ONNX Runtime use every core).
    allow_spinning=False: the intra-op threads sleep at once after a run instead of spinning a while (for a
    graph that alternates with other CPU work in the same process, which the spinning would slow down).
    """

    def __init__(self, model_path: str | Path, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 allow_spinning: bool = True) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise OnnxRunError(f"ONNX Runtime cannot load {self.model_path}: {error}") from error
        self.inputs = [_graph_tensor(node) for node in self.session.get_inputs()]
        self.outputs = [_graph_tensor(node) for node in self.session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.outputs]

    def validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check `feeds` against the graph; return them as C-contiguous arrays. Raises OnnxInputError."""
        return check_feeds(self.model_path.name, self.inputs, feeds)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Validate `feeds`, run the graph, return {output name: array} for `output_names` (default: all)."""
        wanted = list(output_names) if output_names is not None else self.output_names
        unknown = [name for name in wanted if name not in self.output_names]
        if unknown:
            raise OnnxInputError(
                f"{self.model_path.name}: unknown output(s) {unknown}; the model has {self.output_names}"
            )
        checked = self.validate(feeds)
        try:
            results = self.session.run(wanted, checked)
        except Exception as error:
            raise OnnxRunError(f"{self.model_path.name}: ONNX Runtime failed: {error}") from error
        return dict(zip(wanted, results, strict=True))


def _batchable_groups(feeds: Sequence[Mapping[str, np.ndarray] | Exception], batched: bool) -> list[list[int]]:
    """Positions of the valid requests grouped so each group can run as one concatenated batch."""
    valid = [index for index, item in enumerate(feeds) if not isinstance(item, Exception)]
    if not batched:
        return [[index] for index in valid]
    groups: dict[tuple, list[int]] = {}
    for index in valid:
        key = tuple((name, array.shape[1:]) for name, array in sorted(feeds[index].items()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _run_group(runner: OnnxRunner, group: list[dict[str, np.ndarray]],
               output_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One merged run of `group` (axis 0 concatenated) -> each request's outputs, split back."""
    if len(group) == 1:
        return [runner.run(group[0], output_names)]
    merged = {name: np.concatenate([feeds[name] for feeds in group]) for name in group[0]}
    results = runner.run(merged, output_names)
    bounds = np.cumsum([0, *(len(next(iter(feeds.values()))) for feeds in group)])
    return [{name: results[name][start:stop] for name in output_names}
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def run_requests(runner: OnnxRunner, feeds: Sequence[Mapping[str, np.ndarray] | Exception],
                 output_names: Sequence[str], batched: bool) -> list[dict[str, np.ndarray] | Exception]:
    """Several requests' feeds (an Exception where a request was already found bad) -> per request its outputs
    or its error.  `batched` (the model has a batch axis 0): requests whose other dims agree run as one batch;
    a failed merged run is retried request by request, so one bad request cannot fail the others."""
    results: list[dict[str, np.ndarray] | Exception] = list(feeds)
    for group in _batchable_groups(feeds, batched):
        try:
            outputs = _run_group(runner, [feeds[index] for index in group], output_names)
        except Exception as error:
            if len(group) == 1:
                results[group[0]] = error
                continue
            outputs = [run_requests(runner, [feeds[index]], output_names, batched)[0] for index in group]
        for index, output in zip(group, outputs, strict=True):
            results[index] = output
    return results
