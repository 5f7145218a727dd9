"""Assemble the Triton model repository: configs from the spec, ONNX graphs, CPU runners, plans, manifest.

Layout of every network model of `dnsvr.client.spec.NETWORKS`:

    <repo>/<model>/config.pbtxt              production: onnxruntime_onnx, KIND_GPU (in git)
    <repo>/<model>/configs/cpu_local.pbtxt   python backend running model.onnx on ONNX Runtime (in git)
    <repo>/<model>/configs/tensorrt.pbtxt    tensorrt_plan, KIND_GPU: `--model-config-name=tensorrt` (in git)
    <repo>/<model>/1/model.onnx              written by `dnsvr export` (git-ignored)
    <repo>/<model>/1/model.py                the cpu_local runner (git-ignored)
    <repo>/<model>/1/model.plan              with --tensorrt (git-ignored)
    <repo>/manifest.json                     weights' hashes, opset, tool versions, measured errors

The configs are generated from the spec only (`write_configs`, `dnsvr export --write-configs`), and a test
checks that the committed ones equal the generated ones, so they cannot drift.  Only the models the weights
provide get a version folder (one fine student: bin or att); `manifest.json` lists them under `served`.

Atomic replacement: the new repository is built completely in a staging folder beside `<repo>`
(`.<repo>.staging-*`: a copy of the entries of `<repo>` the export does not own, e.g. ensembles, plus every
network model), checked (ONNX checker, parity with PyTorch), and only then swapped in with two renames:
`<repo>` -> `.<repo>.previous`, staging -> `<repo>`, then the previous tree is deleted.  A failure before the
swap leaves `<repo>` untouched; a crash between the two renames leaves `<repo>` missing and the complete
previous tree in `.<repo>.previous`, which the next export (or `recover_interrupted`) puts back first.  So
`<repo>` is never a mix of two exports.
"""

from __future__ import annotations

import fcntl
import json
import platform
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dnsvr.client import spec
from dnsvr.export.triton_config import (
    CPU_LOCAL_CONFIG_NAME,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    TensorSpec,
    onnx_model_configs,
    render_config,
    write_config,
)
from dnsvr.serving.cpu_local import install_cpu_runner

if TYPE_CHECKING:
    from dnsvr.export.tensorrt import ProfileConfig
    from dnsvr.export.weights import ExportSource

TENSORRT_CONFIG_NAME = "tensorrt"
VERSION = "1"
MANIFEST = "manifest.json"
QUEUE_DELAY_US = 1000


def _triton_tensors(model: spec.ModelSpec, tensors: tuple[spec.TensorSpec, ...]) -> list[TensorSpec]:
    strip = 1 if model.max_batch_size > 0 else 0
    return [TensorSpec(t.name, t.numpy_dtype, t.dims[strip:]) for t in tensors]


def model_configs(model: spec.ModelSpec) -> dict[str, ModelConfig]:
    """{path relative to the model folder: config} for one network: production, cpu_local, tensorrt."""
    batching = DynamicBatching(max_queue_delay_microseconds=QUEUE_DELAY_US) if model.dynamic_batching else None
    inputs, outputs = _triton_tensors(model, model.inputs), _triton_tensors(model, model.outputs)
    production, cpu_local = onnx_model_configs(model.name, inputs, outputs, model.max_batch_size, batching)
    tensorrt = ModelConfig(
        name=model.name, inputs=inputs, outputs=outputs, platform="tensorrt_plan",
        max_batch_size=model.max_batch_size, dynamic_batching=batching,
        instance_groups=[InstanceGroup("KIND_GPU", 1)],
    )
    return {
        "config.pbtxt": production,
        f"configs/{CPU_LOCAL_CONFIG_NAME}.pbtxt": cpu_local,
        f"configs/{TENSORRT_CONFIG_NAME}.pbtxt": tensorrt,
    }


def write_configs(repository: str | Path, models: list[str] | None = None) -> list[Path]:
    """Write every config of `models` (default: all networks of the spec) under `repository`."""
    paths = []
    for name in models or list(spec.NETWORKS):
        for relative, config in model_configs(spec.NETWORKS[name]).items():
            paths.append(write_config(config, Path(repository) / name / relative))
    return paths


def stale_configs(repository: str | Path) -> list[str]:
    """Config files under `repository` that are missing or differ from the spec (relative paths)."""
    stale = []
    for name, model in spec.NETWORKS.items():
        for relative, config in model_configs(model).items():
            path = Path(repository) / name / relative
            if not path.is_file() or path.read_text() != render_config(config):
                stale.append(f"{name}/{relative}")
    return stale


def tensor_table() -> str:
    """The markdown table of every network's tensors (docs/export.md embeds it; a test keeps it current)."""
    lines = ["| model | max batch | input / output | name | dtype (numpy / Triton) | dims |",
             "|---|---|---|---|---|---|"]
    for model in spec.NETWORKS.values():
        for kind, tensors in (("input", model.inputs), ("output", model.outputs)):
            for t in tensors:
                dims = "[" + ", ".join(str(d) for d in t.dims) + "]"
                lines.append(f"| {model.name} | {model.max_batch_size} | {kind} | `{t.name}` | "
                             f"{t.dtype} / {t.config_data_type} | {dims} |")
    return "\n".join(lines)


def _sibling(repository: Path, tag: str) -> Path:
    return repository.parent / f".{repository.name}.{tag}"


def recover_interrupted(repository: str | Path) -> str | None:
    """Finish or undo a swap that a crash interrupted; returns what was done (None: nothing to do)."""
    repository = Path(repository)
    previous = _sibling(repository, "previous")
    if not previous.exists():
        return None
    if repository.exists():
        shutil.rmtree(previous)
        return f"removed the replaced repository left at {previous}"
    previous.rename(repository)
    return f"restored {repository} from {previous} (an export was interrupted mid-swap)"


def _copy_unowned(repository: Path, staging: Path) -> None:
    """Copy the entries of an existing repository that the export does not own (ensembles, BLS, ...)."""
    staging.mkdir(parents=True)
    if not repository.is_dir():
        return
    owned = set(spec.NETWORKS) | {MANIFEST}
    for entry in repository.iterdir():
        if entry.name in owned:
            continue
        target = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)


def swap_in(staging: Path, repository: Path) -> None:
    """Replace `repository` by the complete tree `staging` (see the module docstring for crash safety)."""
    previous = _sibling(repository, "previous")
    if repository.exists():
        repository.rename(previous)
    staging.rename(repository)
    if previous.exists():
        shutil.rmtree(previous)


def tool_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
    try:
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return versions


def build_repository(
    source: ExportSource,
    repository: str | Path,
    opset: int = spec.OPSET,
    tensorrt_profile: ProfileConfig | None = None,
    fp16: bool = False,
    on_model: Callable[[str], None] | None = None,
) -> dict:
    """Export every network of `source` (`dnsvr.export.weights.ExportSource`) into `repository`, atomically.

    Writes the graphs, their parity with PyTorch (raises `ParityError` beyond tolerance), cpu_local runners,
    TensorRT plans when `tensorrt_profile` (a `ProfileConfig`) is given, configs and the manifest, into a
    staging tree, then swaps it in.  `on_model(name)` is called after each model (progress).  A lock file
    beside the repository (`.<repo>.lock`) makes a concurrent export fail with ExportError.  -> manifest.
    """
    from dnsvr.export.onnx_export import ExportError, check_opset

    check_opset(opset)
    repository = Path(repository).resolve()
    repository.parent.mkdir(parents=True, exist_ok=True)
    with open(_sibling(repository, "lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ExportError(f"another export is writing {repository}; wait for it to finish") from error
        recover_interrupted(repository)
        return _build_locked(source, repository, opset, tensorrt_profile, fp16, on_model)


def _build_locked(
    source: ExportSource,
    repository: Path,
    opset: int,
    tensorrt_profile: ProfileConfig | None,
    fp16: bool,
    on_model: Callable[[str], None] | None,
) -> dict:
    from dnsvr.export.graphs import GRAPH_CLASSES
    from dnsvr.export.onnx_export import example_feeds, export_onnx
    from dnsvr.export.parity import TOLERANCES, check_parity
    from dnsvr.training.packs.model_pack import file_sha256

    staging = _sibling(repository, f"staging-{uuid.uuid4().hex[:8]}")
    models: dict[str, dict] = {}
    try:
        _copy_unowned(repository, staging)
        write_configs(staging)
        for name, network in source.networks.items():
            model = spec.NETWORKS[name]
            onnx_path = staging / name / VERSION / "model.onnx"
            example = example_feeds(model, frames=2) if name == spec.FEATURE_EXTRACTOR.name else None
            export_onnx(GRAPH_CLASSES[name](network), model, onnx_path, opset=opset, example=example)
            error = check_parity(name, network, onnx_path)
            install_cpu_runner(staging / name, VERSION)
            atol, rtol = TOLERANCES[name]
            models[name] = {"onnx_sha256": file_sha256(onnx_path), "max_abs_error": error,
                            "tolerance": {"atol": atol, "rtol": rtol}}
            if tensorrt_profile is not None:
                from dnsvr.export.tensorrt import build_engine

                plan = build_engine(onnx_path, onnx_path.with_name("model.plan"), model, tensorrt_profile, fp16)
                models[name]["plan"] = {"sha256": file_sha256(plan), "fp16": fp16,
                                        "profile": tensorrt_profile.shapes(model)}
            if on_model:
                on_model(name)
        manifest = {
            "format": 1,
            "source": source.description,
            "pack_version": source.pack_version,
            "extractor": source.extractor,
            "fine": source.fine_kinds,
            "weights": source.file_hashes(),
            "opset": opset,
            "tools": tool_versions(),
            "served": sorted(models),
            "models": models,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_in(staging, repository)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest
