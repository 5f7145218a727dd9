"""TensorRT engines (`model.plan`) from the exported ONNX graphs, with frame-axis optimisation profiles.

Needs the `tensorrt` Python package and a CUDA GPU (imported lazily; `TensorRTUnavailable` says what is
missing).  Every dynamic axis gets a (min, opt, max) range from `ProfileConfig`: the batch axis of batched
models (its max is always the spec's `max_batch_size`, which the Triton config promises), frame axes
(`frame_axes` of the spec), the candidate axis of fine_similarity (K) and the rows of selector_score.
A JSON file overrides the defaults:

    {"frames": [1, 60, 300], "batch": [1, 8, 16], "candidates": [1, 32, 64], "extractor_frames": [1, 32, 64]}

The engine's I/O keeps the ONNX dtypes (float32/uint8/bool); `fp16=True` lets TensorRT compute in half
precision inside.  An engine only runs on the GPU model and TensorRT version that built it: build on the
serving machine (or the same image) - see docs/export.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from dnsvr.client import spec


class TensorRTUnavailable(RuntimeError):
    """The tensorrt package or a CUDA GPU is missing."""


@dataclass(frozen=True)
class ProfileConfig:
    """(min, opt, max) sizes of the dynamic axes in the optimisation profile of every engine."""

    frames: tuple[int, int, int] = (1, 60, 300)
    batch: tuple[int, int, int] = (1, 8, 16)
    candidates: tuple[int, int, int] = (1, 32, 64)
    extractor_frames: tuple[int, int, int] = (1, 32, 64)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            low, opt, high = value
            if not 1 <= low <= opt <= high:
                raise ValueError(f"profile {name} must satisfy 1 <= min <= opt <= max, got {list(value)}")

    @classmethod
    def from_json(cls, path: str | Path) -> ProfileConfig:
        data = json.loads(Path(path).read_text())
        unknown = sorted(set(data) - set(asdict(cls())))
        if unknown:
            raise ValueError(f"{path}: unknown profile keys {unknown}; known: {sorted(asdict(cls()))}")
        return cls(**{key: tuple(value) for key, value in data.items()})

    def shapes(self, model: spec.ModelSpec, text: dict | None = None) -> dict[str, tuple[tuple[int, ...], ...]]:
        """{input name: (min shape, opt shape, max shape)} for one model; `text` (the manifest's text
        settings) fixes the text-video student's image size, frames and tokens."""
        frame_axes = dict(model.frame_axes)
        known = text_axes(text) if text else {}
        shapes = {}
        for tensor in model.inputs:
            ranges = []
            for axis, dim in enumerate(tensor.dims):
                if (model.name, tensor.name, axis) in known:
                    ranges.append(known[model.name, tensor.name, axis])
                elif dim != -1:
                    ranges.append((dim, dim, dim))
                elif model.max_batch_size > 0 and axis == 0:
                    extractor = model in (spec.FEATURE_EXTRACTOR, spec.FEATURE_EXTRACTOR_POOLED)
                    low, opt, _ = self.extractor_frames if extractor else self.batch
                    cap = model.max_batch_size
                    ranges.append((min(low, cap), min(opt, cap), cap))
                elif frame_axes.get(tensor.name) == axis:
                    ranges.append(self.frames)
                else:
                    ranges.append(self.candidates)
            shapes[tensor.name] = tuple(tuple(r[i] for r in ranges) for i in range(3))
        return shapes


def text_axes(text: dict) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    """{(model, tensor, axis): (min, opt, max)} of the text-video graphs' dynamic axes other than the batch: the
    tokens, the frames and, for a TeachCLIP student's crops, the image size."""
    kind = spec.text_kind(text["kind"])
    frames, words = text["max_frames"], text["max_words"]
    axes = {(kind.encoder.name, tensor.name, 1): (2, words, words) for tensor in kind.encoder.inputs}
    axes |= {(kind.video.name, tensor, axis): (1, frames, frames) for tensor, axis in kind.video.frame_axes}
    if "image_size" in text:
        axes |= {(kind.video.name, "frames", axis): (text["image_size"],) * 3 for axis in (2, 3)}
    return axes


def import_tensorrt():
    """The tensorrt module, or TensorRTUnavailable naming what to install."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            "TensorRT engines need the `tensorrt` Python package and a CUDA GPU: on the GPU machine run "
            "`pip install tensorrt` (matching its CUDA), or build inside nvcr.io/nvidia/tritonserver:24.10-py3"
        ) from error
    return tensorrt


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    model: spec.ModelSpec,
    profile: ProfileConfig = ProfileConfig(),
    fp16: bool = False,
    workspace_bytes: int = 4 << 30,
    text: dict | None = None,
) -> Path:
    """Parse `onnx_path`, build a serialised engine with one optimisation profile, write `plan_path` (`text`:
    the manifest's text settings, for the text-video graphs)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.shapes(model, text).items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {model.name} (see its log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


class EngineRunner:
    """A built engine loaded once on the GPU; `run(feeds)` copies the inputs in, runs it, copies the outputs out
    ({output name: array}), with buffers as CUDA torch tensors (what a benchmark times per request)."""

    def __init__(self, plan_path: str | Path, model: spec.ModelSpec) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailable("running a TensorRT engine needs a CUDA GPU and a CUDA build of torch")
        self.plan_path, self.model, self.torch = Path(plan_path), model, torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, context, device = self.torch, self.context, self.torch.device("cuda")
        keep = []
        for tensor in self.model.inputs:
            array = torch.from_numpy(np.ascontiguousarray(feeds[tensor.name])).to(device)
            context.set_input_shape(tensor.name, tuple(array.shape))
            context.set_tensor_address(tensor.name, array.data_ptr())
            keep.append(array)
        outputs = {}
        for tensor in self.model.outputs:
            shape = tuple(context.get_tensor_shape(tensor.name))
            array = torch.empty(shape, dtype=getattr(torch, tensor.dtype), device=device)
            context.set_tensor_address(tensor.name, array.data_ptr())
            outputs[tensor.name] = array
        torch.cuda.current_stream().synchronize()  # the inputs' copies, queued on the default stream
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.plan_path}")
        self.stream.synchronize()
        return {name: array.cpu().numpy() for name, array in outputs.items()}


def run_engine(plan_path: str | Path, model: spec.ModelSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a built engine once on the GPU: {output name: array} (`EngineRunner` keeps it loaded)."""
    return EngineRunner(plan_path, model).run(feeds)
