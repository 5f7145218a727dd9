"""Load official DnS / ViSiL checkpoints (and ours) into the networks of `dnsvr.training`.

`load_checkpoint(path)` reads a file with `torch.load(weights_only=True)`, accepts the official release format
`{'model': state_dict}` or a bare state_dict, recognises the network from its keys, infers the constructor
arguments from the tensor shapes, loads with `strict=True` and returns the module in eval mode.

Kinds and what they return:
  fg_att_student,
  fg_bin_student,
  fg_student         -> FineGrainedStudent (attention / binarization / neither)
  cg_student         -> CoarseGrainedStudent (NetVLAD clusters/outdims, dims, layers and feed-forward width
                        read from the shapes; heads cannot be, default 8)
  selector           -> SelectorNetwork (dims, hidden_size, num_layers from shapes)
  teacher            -> ViSiLHead (official `visil.pth`, a bare state_dict)
  feature_extractor  -> FeatureExtractor (a full FeatureExtractor state_dict)
  pca                -> PCAWhitening (the official `pca_resnet50_vcdb_1M.pth`, a dict mean/d/V; plug it into
                        a FeatureExtractor with `extractor.pca = load_checkpoint(...)`; n_components from
                        `pca_components`, default 512).  The file has no ResNet weights, so it cannot be a
                        whole FeatureExtractor.
  resnet50           -> ResNet50 (a torchvision ImageNet state_dict)
  teachclip_student  -> TeachCLIPStudent (a TeachCLIP / CLIP4Clip seqTransf checkpoint: `clip.*` in fp16 + head;
                        every hyper-parameter from the shapes; overrides: `max_frames`)
  clip               -> TeachCLIPStudent over a bare OpenAI CLIP state dict, with a fresh head
                        (`dnsvr.training.networks.teachclip`)
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from dnsvr.training.networks.resnet50 import FeatureExtractor, PCAWhitening, ResNet50
from dnsvr.training.networks.selector import SelectorNetwork
from dnsvr.training.networks.students import CoarseGrainedStudent, FineGrainedStudent
from dnsvr.training.networks.visil import ViSiLHead
from torch import Tensor, nn

OFFICIAL_URLS: dict[str, str] = {
    "dns_fg_att_student.pth": "https://mever.iti.gr/distill-and-select/models/dns_fg_att_student.pth",
    "dns_fg_bin_student.pth": "https://mever.iti.gr/distill-and-select/models/dns_fg_bin_student.pth",
    "dns_cg_student.pth": "https://mever.iti.gr/distill-and-select/models/dns_cg_student.pth",
    "dns_selector_cg-fg_att.pth": "https://mever.iti.gr/distill-and-select/models/dns_selector_cg-fg_att.pth",
    "dns_selector_cg-fg_bin.pth": "https://mever.iti.gr/distill-and-select/models/dns_selector_cg-fg_bin.pth",
    "itq_resnet50W_dns100k_1M.pth": (
        "https://mever.iti.gr/distill-and-select/models/itq_resnet50W_dns100k_1M.pth"
    ),
    "pca_resnet50_vcdb_1M.pth": "http://ndd.iti.gr/visil/pca_resnet50_vcdb_1M.pth",
    "visil.pth": "http://ndd.iti.gr/visil/visil.pth",
    "visil_symmetric.pth": "http://ndd.iti.gr/visil/visil_symmetric.pth",
}

KINDS = ("fg_att_student", "fg_bin_student", "fg_student", "cg_student", "selector", "teacher",
         "feature_extractor", "pca", "resnet50", "teachclip_student", "clip")
TEXT_VIDEO_KINDS = ("teachclip_student", "clip")


class CheckpointError(Exception):
    """A checkpoint file that is missing, unreadable, of an unknown layout, or not of the requested kind."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file (`{'model': sd}` unwrapped), read with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc
    if isinstance(obj, Mapping) and set(obj) == {"model"} and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: expected a state_dict (or {{'model': state_dict}}) of named tensors")
    return dict(obj)


def infer_kind(state_dict: Mapping[str, Tensor]) -> str | None:
    """The network a state_dict belongs to (one of KINDS), or None."""
    keys = set(state_dict)
    if any(k.startswith("clip.") for k in keys):
        return "teachclip_student"
    if "visual.proj" in keys or "text_projection" in keys:  # before cg_student: CLIP has transformer.* too
        return "clip"
    if keys == {"mean", "d", "V"}:
        return "pca"
    if "cnn.conv1.weight" in keys and ("pca.DVt" in keys or "normalizer.scale" in keys):
        return "feature_extractor"
    if "conv1.weight" in keys and "layer4.2.conv3.weight" in keys:
        return "resnet50"
    if "video_comperator.conv1.weight" in keys or keys == {"attention.context_vector.weight"}:
        return "teacher"
    if "mlp.model.0.weight" in keys:
        return "selector"
    if any(k.startswith(("netvlad.", "transformer.")) for k in keys):
        return "cg_student"
    if "visil_head.conv1.weight" in keys:
        if "binarization.W" in keys:
            return "fg_bin_student"
        if "attention.transform.weight" in keys:
            return "fg_att_student"
        return "fg_student"
    return None


def _count_indices(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def constructor_arguments(kind: str, state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Constructor arguments of the `kind` network that the tensor shapes of `state_dict` determine."""
    sd = state_dict
    if kind in ("fg_att_student", "fg_bin_student", "fg_student"):
        dims = 512
        if kind == "fg_bin_student":
            dims = sd["binarization.W"].shape[0]
        elif kind == "fg_att_student":
            dims = sd["attention.transform.weight"].shape[1]
        return {"dims": dims, "attention": kind == "fg_att_student", "binarization": kind == "fg_bin_student"}
    if kind == "cg_student":
        has_vlad = "netvlad.centroids" in sd
        has_tf = "transformer.layers.0.linear1.weight" in sd
        dims = next(v.shape[-1] for k, v in sd.items()
                    if k.endswith(("transform.weight", "centroids", "in_proj_weight")))
        return {
            "dims": dims,
            "attention": "attention.transform.weight" in sd,
            "transformer": has_tf,
            "transformer_feedforward_dims": (sd["transformer.layers.0.linear1.weight"].shape[0] if has_tf
                                             else 2048),
            "transformer_layers": max(1, _count_indices(sd, r"transformer\.layers\.(\d+)\.")),
            "netvlad": has_vlad,
            "netvlad_clusters": sd["netvlad.centroids"].shape[0] if has_vlad else 64,
            "netvlad_outdims": (sd["netvlad.reduction_layer.weight"].shape[0]
                                if "netvlad.reduction_layer.weight" in sd else None),
        }
    if kind == "selector":
        return {
            "dims": sd["attention.transform.weight"].shape[1],
            "hidden_size": sd["mlp.model.0.weight"].shape[0],
            "num_layers": sum(1 for k in sd if re.fullmatch(r"mlp\.model\.\d+\.running_mean", k)) - 1,
        }
    if kind == "teacher":
        has_attention = "attention.context_vector.weight" in sd
        return {
            "dims": sd["attention.context_vector.weight"].shape[1] if has_attention else 3840,
            "attention": has_attention,
            "video_comperator": "video_comperator.conv1.weight" in sd,
        }
    if kind == "feature_extractor":
        return {"dims": sd["pca.DVt"].shape[1] if "pca.DVt" in sd else 3840}
    if kind == "resnet50":
        return {"num_classes": sd["fc.weight"].shape[0]}
    raise CheckpointError(f"no constructor for checkpoint kind {kind!r}")


CLASSES: dict[str, type[nn.Module]] = {
    "fg_att_student": FineGrainedStudent,
    "fg_bin_student": FineGrainedStudent,
    "fg_student": FineGrainedStudent,
    "cg_student": CoarseGrainedStudent,
    "selector": SelectorNetwork,
    "teacher": ViSiLHead,
    "feature_extractor": FeatureExtractor,
    "resnet50": ResNet50,
}


def load_checkpoint(
    path: str | Path, kind: str | None = None, pca_components: int = 512, **overrides: Any
) -> nn.Module:
    """Checkpoint file -> network of the right kind with its weights, in eval mode.

    kind: one of KINDS, or None to infer it from the keys.  overrides: constructor arguments the shapes
    cannot tell (e.g. `transformer_heads` of the coarse student, `symmetric=True` for `visil_symmetric.pth`,
    `reference_padding=True` for the fine students and the selector).  Raises CheckpointError for a missing
    or unreadable file, keys that match no network, a file of another kind than `kind`, or weights that do
    not fit.
    """
    if kind is not None and kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {', '.join(KINDS)}")
    sd = read_state_dict(path)
    found = infer_kind(sd)
    if found is None:
        sample = ", ".join(sorted(sd)[:5])
        raise CheckpointError(f"{path}: the keys ({sample}, ...) match no DnS/ViSiL network")
    if kind is not None and kind != found:
        raise CheckpointError(f"{path}: holds a {found} checkpoint, not {kind}")
    if found in TEXT_VIDEO_KINDS:
        from dnsvr.training.networks.teachclip import TeachCLIPStudent

        try:
            return TeachCLIPStudent.from_state_dict(sd, **overrides)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    try:
        if found == "pca":
            return PCAWhitening.from_eigen(sd["mean"], sd["d"], sd["V"], pca_components).eval()
        arguments = {**constructor_arguments(found, sd), **overrides}
    except (RuntimeError, KeyError, StopIteration, IndexError) as exc:
        raise CheckpointError(f"{path}: weights do not fit a {found} network ({exc})") from exc
    try:
        model = CLASSES[found](**arguments)
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(f"{path}: bad constructor arguments {arguments} for {found} ({exc})") from exc
    if found == "fg_bin_student":
        model.binarization.W = nn.Parameter(torch.empty_like(sd["binarization.W"]))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit a {found} network ({exc})") from exc
    return model.eval()


def download_official(dest_dir: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Download official weights (OFFICIAL_URLS keys; all by default) into dest_dir; existing files are kept.

    Needs network access; never called by tests or at serving time.  -> paths of the files.
    """
    from dnsvr.training.files import atomic_path

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names if names is not None else OFFICIAL_URLS:
        if name not in OFFICIAL_URLS:
            raise ValueError(f"unknown official file {name!r}; known: {', '.join(OFFICIAL_URLS)}")
        target = dest / name
        if not target.exists():
            with atomic_path(target) as partial, urllib.request.urlopen(OFFICIAL_URLS[name]) as response, \
                    open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        paths.append(target)
    return paths
