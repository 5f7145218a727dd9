"""Assemble the whole Triton model repository: one owner, one command (`dnsvr export --weights ... --out DIR`).

    <repo>/<network>/config.pbtxt              production: onnxruntime_onnx, KIND_GPU
    <repo>/<network>/configs/cpu_local.pbtxt   python backend running model.onnx with ONNX Runtime
    <repo>/<network>/configs/tensorrt.pbtxt    tensorrt_plan, KIND_GPU (`--model-config-name=tensorrt`)
    <repo>/<network>/1/model.onnx              the parity-checked graph
    <repo>/<network>/1/model.py                the cpu_local adapter (one import line)
    <repo>/fine_similarity_bin/1/comparator.onnx   its cpu_local path's learned part, after the Hamming kernel of
                                               dnsvr.export.hamming (model.onnx stays for GPU and TensorRT)
    <repo>/<network>/1/model.plan              with --tensorrt
    <repo>/dnsvr_embed/config.pbtxt, 1/        the ensemble video_features -> the video models
    <repo>/dnsvr_text_embed/config.pbtxt, 1/   the ensemble text_tokenize -> text_encoder (text-video student)
    <repo>/<python model>/config.pbtxt, 1/model.py   video_features, video_views, dnsvr_index, dnsvr_search,
                                                      dnsvr_search_text, dnsvr_delete, dnsvr_stats,
                                                      dnsvr_thumbnails,
                                                      text_tokenize (one import line each)
    <repo>/manifest.json                       weights' hashes, opset, tool versions, measured errors,
                                               the text-video student's settings

Only the networks the weights provide are written (one fine student: bin or att; the text-video student's two
graphs when there is one), and the pipelines when they provide every network the DnS pipelines call.  The
repository is then complete: Triton serves it as it is, locally
(`dnsvr serve`, `dnsvr serve-triton`) or in the production image (docker/Dockerfile.triton runs this same
export).  The `model.py` adapters import their `TritonPythonModel` from `dnsvr.serving.triton` (this package
names the modules; it imports nothing of serving).  The committed `model_repository/` holds the text files
of the bundled pack's export (configs and adapters); a test keeps them equal to `repository_files`.

Atomic replacement: the new repository is built completely in a staging folder beside `<repo>`, checked
(ONNX checker, parity with PyTorch), and only then swapped in with two renames: `<repo>` ->
`.<repo>.previous`, staging -> `<repo>`, then the previous tree is deleted.  A failure before the swap leaves
`<repo>` untouched; a crash between the two renames leaves `<repo>` missing and the complete previous tree
in `.<repo>.previous`, which the next export (or `recover_interrupted`) puts back first.  A folder that is
not a model repository is never replaced.
"""

from __future__ import annotations

import fcntl
import json
import platform
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dnsvr.client import spec
from dnsvr.export.hamming import COMPARATOR_FILE
from dnsvr.export.manifest import FORMAT, MANIFEST, changed_weights, read_manifest, view_codes
from dnsvr.export.onnx_export import ExportError, check_opset
from dnsvr.export.triton_config import network_configs, pipeline_config, render
from dnsvr.training.files import atomic_write_text

if TYPE_CHECKING:
    from dnsvr.export.tensorrt import ProfileConfig
    from dnsvr.export.weights import ExportSource
    from torch import nn

VERSION = "1"
ADAPTERS = "dnsvr.serving.triton"
ONNX_RUNNER = f"{ADAPTERS}.onnx_model"
NETWORK_ADAPTERS = {  # networks whose cpu_local adapter is not ONNX_RUNNER
    spec.FINE_SIMILARITY_BIN.name: f"{ADAPTERS}.hamming_model",  # Hamming kernel + comparator.onnx
}
PYTHON_MODELS = {  # pipeline -> the module whose TritonPythonModel serves it
    "video_features": f"{ADAPTERS}.video_features",
    "video_views": f"{ADAPTERS}.video_views",
    "dnsvr_index": f"{ADAPTERS}.index",
    "dnsvr_search": f"{ADAPTERS}.search",
    "dnsvr_search_text": f"{ADAPTERS}.search_text",
    "dnsvr_delete": f"{ADAPTERS}.delete",
    "dnsvr_stats": f"{ADAPTERS}.stats",
    "dnsvr_thumbnails": f"{ADAPTERS}.thumbnails",
    "text_tokenize": f"{ADAPTERS}.tokenize",
}
ENSEMBLES = ("dnsvr_embed", "dnsvr_text_embed")


def pipeline_networks(fine: str, text: str | None = None) -> list[str]:
    """The networks the DnS pipelines call when they serve fine student `fine` (bin or att), beside a
    text-video student of kind `text` (None: none), which decides the extractor (`spec.extractor`)."""
    kind = spec.fine_kind(fine)
    return [spec.extractor(text).name, spec.COARSE_EMBED.name, kind.index_model, kind.similarity_model,
            spec.SELECTOR_INDEX.name, spec.SELECTOR_SCORE.name]


def servable_fine(networks: Iterable[str], fine_kinds: list[str], text: str | None = None) -> str | None:
    """The fine kind the pipelines can serve over `networks` (with a text-video student of kind `text`), None when
    they cannot be served (a network missing, or two fine students)."""
    if len(fine_kinds) != 1 or not set(pipeline_networks(fine_kinds[0], text)) <= set(networks):
        return None
    return fine_kinds[0]


def bundled_layout(fine: str = "bin") -> tuple[list[str], dict | None]:
    """The networks and text-video settings of the bundled pack's repository with fine student `fine`: what the
    committed `model_repository/` holds the configs of (its text-video student, when it has one, is loaded to
    read its settings)."""
    from dnsvr.export.weights import resolve_weights

    source = resolve_weights(["bundled"])
    text_networks = list(spec.text_kind(source.text_kind).networks) if source.text_kind else []
    return pipeline_networks(fine, source.text_kind) + text_networks, source.text_settings()


def adapter_source(module: str) -> str:
    """A python model's `model.py`: one import of the TritonPythonModel that serves it."""
    return (f"# Generated by `dnsvr export` (dnsvr.export.repository); do not edit.\n"
            f"from {module} import TritonPythonModel  # noqa: F401\n")


def network_files(model: spec.ModelSpec) -> dict[str, str]:
    """{path relative to the repository: text} of one ONNX network's configs and its cpu_local adapter."""
    files = {f"{model.name}/{relative}": render(config) for relative, config in network_configs(model).items()}
    files[f"{model.name}/{VERSION}/model.py"] = adapter_source(NETWORK_ADAPTERS.get(model.name, ONNX_RUNNER))
    return files


def repository_files(networks: Iterable[str], fine: str | None, text: dict | None = None) -> dict[str, str]:
    """{path relative to the repository: text} of every config and adapter for these networks and, when
    `fine` is given, the pipelines serving it (with `text`, the text-video student's settings, the text path
    too): everything but graphs, plans and the manifest."""
    files: dict[str, str] = {}
    for name in sorted(networks):
        files.update(network_files(spec.NETWORKS[name]))
    if fine is not None:
        for name in spec.pipeline_specs(fine, text["kind"] if text else None):
            files[f"{name}/config.pbtxt"] = render(pipeline_config(name, fine, text))
            if name in PYTHON_MODELS:
                files[f"{name}/{VERSION}/model.py"] = adapter_source(PYTHON_MODELS[name])
    return files


def write_repository_files(repository: str | Path, networks: Iterable[str], fine: str | None,
                           text: dict | None = None) -> list[Path]:
    """Write `repository_files(...)` under `repository` (each file atomically); the ensembles' version folders
    too (Triton wants one, empty)."""
    repository = Path(repository)
    files = repository_files(networks, fine, text)
    written = [atomic_write_text(repository / relative, content) for relative, content in files.items()]
    for ensemble in ENSEMBLES:
        if f"{ensemble}/config.pbtxt" in files:
            (repository / ensemble / VERSION).mkdir(parents=True, exist_ok=True)
    return written


def stale_files(repository: str | Path, networks: Iterable[str], fine: str | None,
                text: dict | None = None) -> list[str]:
    """Files of `repository_files(...)` that are missing under `repository` or differ (relative paths)."""
    repository = Path(repository)
    return [relative for relative, content in repository_files(networks, fine, text).items()
            if not (repository / relative).is_file() or (repository / relative).read_text() != content]


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


def check_replaceable(repository: Path) -> None:
    """Raise ExportError unless `repository` is absent, empty, or a model repository (a manifest, or only model
    folders with a config.pbtxt): an export never replaces a folder of other files."""
    if not repository.exists():
        return
    if not repository.is_dir():
        raise ExportError(f"{repository} is a file, not a model repository")
    entries = list(repository.iterdir())
    foreign = [e.name for e in entries if e.name != MANIFEST and not (e / "config.pbtxt").is_file()]
    if foreign and not (repository / MANIFEST).is_file():
        raise ExportError(f"refusing to replace {repository}: it is not a model repository (it holds "
                          f"{', '.join(sorted(foreign)[:5])}); choose another --out")


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
    """Export every network of `source` (`dnsvr.export.weights.ExportSource`) and the pipelines into
    `repository`, replacing it atomically.

    Writes the graphs, their parity with PyTorch (raises `ParityError` beyond tolerance), configs, adapters,
    TensorRT plans when `tensorrt_profile` (a `ProfileConfig`) is given, and the manifest, into a staging tree,
    then swaps it in.  `on_model(name)` is called after each network (progress).  A lock file beside the
    repository (`.<repo>.lock`) makes a concurrent export fail with ExportError.  -> the manifest.
    """
    check_opset(opset)
    repository = Path(repository).resolve()
    repository.parent.mkdir(parents=True, exist_ok=True)
    with open(_sibling(repository, "lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ExportError(f"another export is writing {repository}; wait for it to finish") from error
        recover_interrupted(repository)
        check_replaceable(repository)
        return _build_locked(source, repository, opset, tensorrt_profile, fp16, on_model)


def _build_locked(
    source: ExportSource,
    repository: Path,
    opset: int,
    tensorrt_profile: ProfileConfig | None,
    fp16: bool,
    on_model: Callable[[str], None] | None,
) -> dict:
    from dnsvr.export.graphs import ComparatorGraph, build_graph
    from dnsvr.export.onnx_export import export_onnx
    from dnsvr.export.parity import KERNEL_VS_GRAPH, TOLERANCES, check_comparator_parity, check_parity
    from dnsvr.training.files import file_sha256

    staging = _sibling(repository, f"staging-{uuid.uuid4().hex[:8]}")
    models: dict[str, dict] = {}
    fine = servable_fine(source.networks, source.fine_kinds, source.text_kind)
    text = source.text_settings()
    try:
        staging.mkdir(parents=True)
        for name, network in source.networks.items():
            model = spec.NETWORKS[name]
            onnx_path = staging / name / VERSION / "model.onnx"
            export_onnx(build_graph(name, network, source.afa), model, onnx_path, opset=opset,
                        example=_trace_example(name, network))
            error = check_parity(name, network, onnx_path, afa=source.afa)
            atol, rtol = TOLERANCES[name]
            models[name] = {"onnx_sha256": file_sha256(onnx_path), "max_abs_error": error,
                            "tolerance": {"atol": atol, "rtol": rtol}}
            if name == spec.FINE_SIMILARITY_BIN.name:
                comparator = export_onnx(ComparatorGraph(network), spec.FINE_COMPARATOR,
                                         onnx_path.with_name(COMPARATOR_FILE), opset=opset)
                vs_student, vs_graph = check_comparator_parity(network, onnx_path, comparator)
                models[name]["comparator"] = {"onnx_sha256": file_sha256(comparator), "max_abs_error": vs_student,
                                              "max_abs_error_vs_graph": vs_graph, "tolerance_vs_graph": KERNEL_VS_GRAPH}
            if tensorrt_profile is not None:
                from dnsvr.export.tensorrt import build_engine

                plan = build_engine(onnx_path, onnx_path.with_name("model.plan"), model, tensorrt_profile, fp16,
                                    text=text)
                models[name]["plan"] = {"sha256": file_sha256(plan), "fp16": fp16,
                                        "profile": tensorrt_profile.shapes(model, text)}
            if on_model:
                on_model(name)
        write_repository_files(staging, models, fine, text)
        manifest = {
            "format": FORMAT,
            "source": source.description,
            "pack_version": source.pack_version,
            "extractor": source.extractor,
            "fine": source.fine_kinds,
            "weights": source.file_hashes(),
            "opset": opset,
            "tools": tool_versions(),
            "served": sorted(models),
            "pipelines": list(spec.pipeline_specs(fine, source.text_kind)) if fine else [],
            "models": models,
            "text": text,
            "text_weights": str(source.text_weights) if source.text_weights else None,
            "calibration": source.calibration,
            "fusion": source.fusion,
            "index_views": source.index_views,
            "view_codes": source.view_codes,
            "index_segments": source.index_segments,
            "duplicate_threshold": source.duplicate_threshold,
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_in(staging, repository)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def _trace_example(name: str, network: nn.Module) -> dict | None:
    """The inputs a graph is traced on, when not `example_feeds(model)`'s default."""
    from dnsvr.export.onnx_export import example_feeds

    if name in (spec.FEATURE_EXTRACTOR.name, spec.FEATURE_EXTRACTOR_POOLED.name):
        return example_feeds(spec.NETWORKS[name], frames=2)
    if name in spec.TEXT_NETWORKS:
        from dnsvr.export.text_kinds import text_export

        return text_export(name).example_feeds(name, network, [5, 3], frames=min(network.max_frames, 5))
    return None


def ensure_exported(repository: str | Path, weights: list[str], on_model: Callable[[str], None] | None = None) -> bool:
    """Export `weights` into `repository` unless it holds a current export of them; True if it exported.

    A repository exported from the same source whose weight files have changed since (or by an older dnsvr: its
    manifest format is not FORMAT) is exported again, with the same text-video student, crop grid and settings;
    one exported from another source is left alone (ValueError if it needs a new export: re-export it by hand).
    """
    from dnsvr.export.weights import resolve_weights

    repository = Path(repository)
    if (repository / MANIFEST).is_file():
        manifest = read_manifest(repository)
        changed = changed_weights(repository)
        if manifest.get("format") != FORMAT:
            changed.append(f"manifest format {manifest.get('format')} (now {FORMAT})")
        if not changed:
            return False
        text, added = manifest.get("text"), manifest.get("text_weights")
        if text:
            source = resolve_weights(weights, text_weights=Path(added) if added else None,
                                     text_max_frames=text["max_frames"], afa=text["afa"])
        else:
            source = resolve_weights(weights)
        if "index_views" in manifest:  # keep the export's own choices (`--index-views`, `--view-codes`,
            source.index_views = manifest["index_views"]  # `--index-segments`)
        if "index_segments" in manifest:
            source.index_segments = manifest["index_segments"]
        source.view_codes = view_codes(manifest)
        exported_from = manifest.get("source")
        if source.description != exported_from:
            raise ValueError(f"{repository} was exported from {exported_from} and needs a new export "
                             f"({', '.join(changed)}); re-export it: dnsvr export --weights ... --out {repository}")
        build_repository(source, repository, on_model=on_model)
        return True
    build_repository(resolve_weights(weights), repository, on_model=on_model)
    return True
