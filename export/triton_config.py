"""Write (and read back) Triton `config.pbtxt` files from one tensor-spec source of truth.

The export step describes each model once, as `TensorSpec(name, dtype, dims)` lists, and writes both files
Triton needs for it with `write_onnx_model_configs(model_dir, name, inputs, outputs, ...)`:

    <model_dir>/config.pbtxt              platform "onnxruntime_onnx", KIND_GPU instances (production)
    <model_dir>/configs/cpu_local.pbtxt   backend "python" running the same model.onnx with ONNX Runtime

`render_config(ModelConfig(...))` writes any config (ensembles included); `parse_config(text)` reads one back.
Field names follow Triton's model_config.proto exactly: the parser is protobuf's own text-format parser over
the `ModelConfig` message shipped with tritonclient, so a misspelt field fails here, not in the server.

`dims` exclude the batch axis when `max_batch_size > 0` (Triton's convention); -1 marks a variable axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dnsvr.training.data.files import atomic_write_text
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

CPU_LOCAL_CONFIG_NAME = "cpu_local"

NUMPY_TO_TRITON = {
    np.dtype(np.bool_): "TYPE_BOOL",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.uint16): "TYPE_UINT16",
    np.dtype(np.uint32): "TYPE_UINT32",
    np.dtype(np.uint64): "TYPE_UINT64",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.int16): "TYPE_INT16",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.object_): "TYPE_STRING",
}
TRITON_TO_NUMPY = {name: dtype for dtype, name in NUMPY_TO_TRITON.items()}
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype, dims without the batch axis (-1 = variable)."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        if dtype not in NUMPY_TO_TRITON:
            raise ValueError(f"tensor '{self.name}': dtype {dtype} has no Triton data type")
        dims = tuple(int(d) for d in self.dims)
        if any(d == 0 or d < -1 for d in dims):
            raise ValueError(f"tensor '{self.name}': dims {list(dims)} must be positive or -1")
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "dims", dims)

    @property
    def data_type(self) -> str:
        return NUMPY_TO_TRITON[self.dtype]


@dataclass(frozen=True)
class InstanceGroup:
    """`instance_group` entry: `count` instances of `kind` (KIND_GPU/KIND_CPU/...), optionally on `gpus`."""

    kind: str = "KIND_CPU"
    count: int = 1
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in INSTANCE_KINDS:
            raise ValueError(f"instance kind {self.kind!r} is not one of {INSTANCE_KINDS}")
        if self.count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.count}")


@dataclass(frozen=True)
class DynamicBatching:
    """`dynamic_batching`: let Triton merge requests, waiting at most `max_queue_delay_microseconds`."""

    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0


@dataclass(frozen=True)
class EnsembleStep:
    """One `ensemble_scheduling.step`: maps are {step model's tensor name: ensemble tensor name}."""

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    model_version: int = -1


@dataclass
class ModelConfig:
    """The parts of Triton's ModelConfig message this project writes.

    Exactly one of `platform` (e.g. "onnxruntime_onnx", "tensorrt_plan", "ensemble") or `backend` (e.g.
    "python") is set. `parameters` become string-valued `parameters` entries.
    """

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    platform: str = ""
    backend: str = ""
    max_batch_size: int = 0
    instance_groups: list[InstanceGroup] = field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    ensemble_steps: list[EnsembleStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        if bool(self.platform) == bool(self.backend):
            raise ValueError(f"model '{self.name}': set exactly one of platform or backend")
        if (self.platform == "ensemble") != bool(self.ensemble_steps):
            raise ValueError(f"model '{self.name}': ensemble_steps belong to platform 'ensemble' only")
        if self.max_batch_size < 0:
            raise ValueError(f"model '{self.name}': max_batch_size must be >= 0")
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ValueError(f"model '{self.name}': dynamic_batching needs max_batch_size > 0")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(tensor: TensorSpec) -> list[str]:
    dims = ", ".join(str(d) for d in tensor.dims)
    return [
        "  {",
        f"    name: {_quote(tensor.name)}",
        f"    data_type: {tensor.data_type}",
        f"    dims: [ {dims} ]",
        "  }",
    ]


def _tensor_list(kind: str, tensors: Sequence[TensorSpec]) -> list[str]:
    if not tensors:
        return []
    lines = [f"{kind} ["]
    for index, tensor in enumerate(tensors):
        block = _tensor_block(tensor)
        if index < len(tensors) - 1:
            block[-1] += ","
        lines += block
    return lines + ["]"]


def _map_block(field_name: str, mapping: Mapping[str, str]) -> list[str]:
    lines = []
    for key, value in mapping.items():
        lines += [f"      {field_name} {{ key: {_quote(key)} value: {_quote(value)} }}"]
    return lines


def render_config(config: ModelConfig) -> str:
    """The `config.pbtxt` text for `config` (validated by parsing it back into Triton's proto message)."""
    lines = [f"name: {_quote(config.name)}"]
    if config.platform:
        lines.append(f"platform: {_quote(config.platform)}")
    else:
        lines.append(f"backend: {_quote(config.backend)}")
    lines.append(f"max_batch_size: {config.max_batch_size}")
    lines += _tensor_list("input", config.inputs)
    lines += _tensor_list("output", config.outputs)
    for group in config.instance_groups:
        gpus = f" gpus: [ {', '.join(str(g) for g in group.gpus)} ]" if group.gpus else ""
        lines.append(f"instance_group {{ kind: {group.kind} count: {group.count}{gpus} }}")
    if config.dynamic_batching is not None:
        batching = config.dynamic_batching
        lines.append("dynamic_batching {")
        if batching.preferred_batch_size:
            sizes = ", ".join(str(s) for s in batching.preferred_batch_size)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
        lines.append("}")
    for key, value in config.parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(str(value))} }} }}")
    if config.ensemble_steps:
        lines.append("ensemble_scheduling {")
        for step in config.ensemble_steps:
            lines += [
                "  step {",
                f"    model_name: {_quote(step.model_name)}",
                f"    model_version: {step.model_version}",
                *_map_block("input_map", step.input_map),
                *_map_block("output_map", step.output_map),
                "  }",
            ]
        lines.append("}")
    text = "\n".join(lines) + "\n"
    text_format.Parse(text, model_config_pb2.ModelConfig())
    return text


def _tensors_from_proto(entries) -> list[TensorSpec]:
    type_names = model_config_pb2.DataType.Name
    specs = []
    for entry in entries:
        type_name = type_names(entry.data_type)
        if type_name not in TRITON_TO_NUMPY:
            raise ValueError(f"tensor '{entry.name}': data_type {type_name} has no numpy equivalent here")
        specs.append(TensorSpec(entry.name, TRITON_TO_NUMPY[type_name], tuple(entry.dims)))
    return specs


def parse_config(text: str) -> ModelConfig:
    """Read a `config.pbtxt` text back (fields outside ModelConfig above are accepted and ignored)."""
    try:
        proto = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ValueError(f"not a valid Triton model config: {error}") from error
    kind_name = model_config_pb2.ModelInstanceGroup.Kind.Name
    batching = None
    if proto.HasField("dynamic_batching"):
        batching = DynamicBatching(
            tuple(proto.dynamic_batching.preferred_batch_size),
            proto.dynamic_batching.max_queue_delay_microseconds,
        )
    steps = [
        EnsembleStep(step.model_name, dict(step.input_map), dict(step.output_map), step.model_version)
        for step in proto.ensemble_scheduling.step
    ]
    return ModelConfig(
        name=proto.name,
        inputs=_tensors_from_proto(proto.input),
        outputs=_tensors_from_proto(proto.output),
        platform=proto.platform,
        backend=proto.backend,
        max_batch_size=proto.max_batch_size,
        instance_groups=[
            InstanceGroup(kind_name(group.kind), group.count or 1, tuple(group.gpus))
            for group in proto.instance_group
        ],
        dynamic_batching=batching,
        parameters={key: value.string_value for key, value in proto.parameters.items()},
        ensemble_steps=steps,
    )


def read_config(path: str | Path) -> ModelConfig:
    """`parse_config` on a file, naming the file in errors."""
    path = Path(path)
    try:
        return parse_config(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def write_config(config: ModelConfig, path: str | Path) -> Path:
    """Write `render_config(config)` to `path` atomically (a reader never sees half a file)."""
    return atomic_write_text(path, render_config(config))


def onnx_model_configs(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int = 0,
    dynamic_batching: DynamicBatching | None = None,
    gpu_instances: int = 1,
    cpu_instances: int = 1,
    intra_op_threads: int = 1,
) -> tuple[ModelConfig, ModelConfig]:
    """(production, cpu_local) configs for one ONNX model, from one list of input and output specs.

    Production: platform onnxruntime_onnx on `gpu_instances` KIND_GPU instances (the export step may
    switch a TensorRT plan's config to platform tensorrt_plan). cpu_local: the python backend running
    the same model.onnx with ONNX Runtime (`dnsvr.serving.triton.onnx_model`), `intra_op_threads` each.
    """
    shared = dict(
        name=name, inputs=list(inputs), outputs=list(outputs),
        max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
    )
    production = ModelConfig(
        platform="onnxruntime_onnx", instance_groups=[InstanceGroup("KIND_GPU", gpu_instances)], **shared
    )
    cpu_local = ModelConfig(
        backend="python",
        instance_groups=[InstanceGroup("KIND_CPU", cpu_instances)],
        parameters={"intra_op_threads": str(intra_op_threads)},
        **shared,
    )
    return production, cpu_local


def write_onnx_model_configs(
    model_dir: str | Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int = 0,
    dynamic_batching: DynamicBatching | None = None,
    gpu_instances: int = 1,
    cpu_instances: int = 1,
    intra_op_threads: int = 1,
) -> tuple[Path, Path]:
    """Write `config.pbtxt` and `configs/cpu_local.pbtxt` for the ONNX model in `model_dir` (named after it).

    Arguments as in `onnx_model_configs`; returns the two paths written.
    """
    model_dir = Path(model_dir)
    production, cpu_local = onnx_model_configs(
        model_dir.name, inputs, outputs, max_batch_size, dynamic_batching,
        gpu_instances, cpu_instances, intra_op_threads,
    )
    return (
        write_config(production, model_dir / "config.pbtxt"),
        write_config(cpu_local, model_dir / "configs" / f"{CPU_LOCAL_CONFIG_NAME}.pbtxt"),
    )
