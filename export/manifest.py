"""`manifest.json`: what an exported model repository serves and where it came from (written by `dnsvr export`).

    {"format": 3, "source": "model pack /.../bundled", "pack_version": "bundled@e0b44a98dfe1",
     "extractor": "efficientnet_lite0", "fine": ["bin"], "opset": 17,
     "weights": {role: {"path", "sha256"}}, "tools": {...}, "served": [network names],
     "pipelines": [pipeline names], "models": {network: {"onnx_sha256", "max_abs_error", "tolerance", ...}},
     "text": {"kind": "teachclip", "afa": "official", "max_frames": 12, "image_size": 224, "embed_dim": 512,
              "max_words": 32} or {"kind": "offline_minilm_effnet", "afa": "real_frames", "max_frames": 12,
              "embed_dim": 256, "max_words": 32} or null,
     "text_weights": the TeachCLIP checkpoint given with --text-weights in place of the pack's student, or null,
     "calibration": the pack's fine-to-coarse score map {"fine": [...], "coarse": [...]} or null,
     "fusion": the pack's default re-rank fusion ("mix", "cascade" or "calibrated"; absent before stop 27: mix),
     "index_views": the pack's crop grid of indexed videos {"crop": 0.5, "stride": 0.25}, or null: full frames,
     "view_codes": whether the store also keeps each crop view's fine codes (`dnsvr export --view-codes`),
     "index_segments": the pack's frame windows of indexed videos {"lengths": [0.5, 0.333]}, or null: none,
     "duplicate_threshold": the pack's near-duplicate threshold, or null: DEFAULT_DUPLICATE_THRESHOLD}

Readers: `read_manifest(repository)`, `fine_kind(manifest)` (the one fine student the pipelines serve),
`text_settings(manifest)` (the text-video student's, None without one), `score_calibration(manifest)` (the map
of the re-rank fusion 'calibrated', None without one), `default_fusion(manifest)` (the fusion of a search that
names none), `index_views(manifest)` (the crop grid indexed videos are also stored by, None without one),
`view_codes(manifest)` (whether each crop view's fine codes are stored too, for the fine student's best view),
`index_segments(manifest)` (the frame windows indexed videos are also stored by, None without them),
`duplicate_threshold(manifest)` (the near-duplicate threshold of an index call that names none),
`model_version(manifest)` (what the store records, so vectors of two exports are never mixed) and
`changed_weights(repository)` (weight files that changed since the export, e.g. a retrained pack).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dnsvr.client import spec
from dnsvr.client.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicatePolicy
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.files import file_sha256
from dnsvr.training.ranking import DEFAULT_FUSION, ScoreCalibration, check_fusion

MANIFEST = "manifest.json"
FORMAT = 11  # 3: the text-video student ("text", dnsvr_search_text); 4: fine_similarity_bin/1/comparator.onnx
# (its CPU Hamming path); 5: the student's kind ("text"."kind"), "text_weights"; 6: video thumbnails
# (video_decode's and dnsvr_embed's `thumbnail`, dnsvr_thumbnails); 7: the pack's score "calibration"; 8:
# video_features (decoding and the extractor side by side) in place of video_decode -> frame_features; 9: the
# pack's crop grid of indexed videos ("index_views") and the video_views pipeline; 10: "view_codes" and
# video_views's `view_codes`; 11: the pack's frame windows of indexed videos ("index_segments") and dnsvr_embed's
# `features` and `mask`, from which dnsvr_index embeds them.
# Older exports are re-exported.
TEXT_KEYS = {"kind", "afa", "max_frames", "embed_dim", "max_words"}  # + "image_size" for a TeachCLIP student


class ManifestError(RuntimeError):
    """The model repository has no usable manifest.json (run `dnsvr export`)."""


def read_manifest(repository: str | Path) -> dict:
    """The manifest of `repository`; ManifestError when it is missing or not JSON."""
    path = Path(repository) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} not found: export the models first (`dnsvr export --weights ...`)") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} is not valid JSON: {error}") from error


def fine_kind(manifest: dict) -> str:
    """'bin' or 'att': the fine student the repository serves."""
    kinds = manifest.get("fine") or []
    if len(kinds) != 1 or kinds[0] not in spec.FINE_KINDS:
        raise ManifestError(f"manifest names fine students {kinds}; the pipelines serve exactly one of bin/att")
    return kinds[0]


def text_settings(manifest: dict) -> dict | None:
    """The text-video student's serving settings (see the module docstring), None when there is none."""
    text = manifest.get("text")
    if not text:
        return None
    missing = sorted(TEXT_KEYS - set(text))
    if missing:
        raise ManifestError(f"the manifest's text settings lack {', '.join(missing)}: re-export the repository")
    if text["kind"] not in spec.TEXT_KINDS:
        raise ManifestError(f"the manifest's text-video student is of kind {text['kind']!r}, not one of "
                            f"{', '.join(spec.TEXT_KINDS)}: re-export the repository")
    return text


def score_calibration(manifest: dict) -> ScoreCalibration | None:
    """The pack's fine-to-coarse score map the repository was exported with, None when it has none."""
    data = manifest.get("calibration")
    if data is None:
        return None
    try:
        return ScoreCalibration.from_dict(data)
    except ValueError as error:
        raise ManifestError(f"the manifest's calibration is invalid ({error}): re-export the repository") from None


def default_fusion(manifest: dict) -> str:
    """The pack's default re-rank fusion the repository was exported with (`ranking.DEFAULT_FUSION` for an export
    that records none); ManifestError when it is unknown or 'calibrated' without the calibration."""
    fusion = str(manifest.get("fusion") or DEFAULT_FUSION)
    try:
        check_fusion(fusion, score_calibration(manifest))
    except ValueError as error:
        raise ManifestError(f"the manifest's default fusion is invalid ({error}): re-export the repository") from None
    return fusion


def duplicate_threshold(manifest: dict) -> float:
    """The near-duplicate threshold of an index call that names none: the pack's (its "duplicate_threshold"),
    else `DEFAULT_DUPLICATE_THRESHOLD`; ManifestError when it is not a score in [0, 1]."""
    value = manifest.get("duplicate_threshold")
    if value is None:
        return DEFAULT_DUPLICATE_THRESHOLD
    try:
        return DuplicatePolicy(threshold=value).threshold
    except ValueError as error:
        raise ManifestError(f"the manifest's duplicate_threshold is invalid ({error}): re-export the repository"
                            ) from None


def index_views(manifest: dict) -> CropLayout | None:
    """The crop grid indexed videos are also stored by (`video_views`; the pack's "index_views"), None when the
    repository indexes full frames alone (also an export that records none)."""
    data = manifest.get("index_views")
    if data is None:
        return None
    try:
        return CropLayout.from_record(data)
    except ValueError as error:
        raise ManifestError(f"the manifest's index_views is invalid ({error}): re-export the repository") from None


def index_segments(manifest: dict) -> SegmentLayout | None:
    """The frame windows indexed videos are also stored by (segment views, embedded by dnsvr_index; the pack's
    "index_segments"), None when the repository stores none."""
    data = manifest.get("index_segments")
    if data is None:
        return None
    try:
        return SegmentLayout.from_record(data)
    except ValueError as error:
        raise ManifestError(f"the manifest's index_segments is invalid ({error}): re-export the repository") from None


def view_codes(manifest: dict) -> bool:
    """Whether indexed videos also store each crop view's fine codes (`video_views`' `view_codes`; the fine
    student then compares each candidate's best view): only with a crop grid, and only where the export asked."""
    value = manifest.get("view_codes", False)
    if not isinstance(value, bool):
        raise ManifestError(f"the manifest's view_codes must be true or false, got {value!r}: re-export the "
                            "repository")
    return value and index_views(manifest) is not None


def model_version(manifest: dict) -> str:
    """The model-pack version, else 'onnx@' + a hash of the served graphs' hashes."""
    if manifest.get("pack_version"):
        return str(manifest["pack_version"])
    digest = hashlib.sha256()
    for name, info in sorted(manifest.get("models", {}).items()):
        digest.update(f"{name}={info.get('onnx_sha256', '')};".encode())
    return f"onnx@{digest.hexdigest()[:12]}"


def changed_weights(repository: str | Path) -> list[str]:
    """Weight files recorded in the manifest that still exist but no longer hash as exported (e.g. a retrained
    bundled pack) -> their paths; [] when the export is current."""
    recorded = read_manifest(repository).get("weights", {}).values()
    return [entry["path"] for entry in recorded
            if Path(entry["path"]).is_file() and file_sha256(entry["path"]) != entry["sha256"]]
