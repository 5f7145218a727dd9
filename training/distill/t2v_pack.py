"""Writing a trained offline text-video student into a model pack (its `text_video` role).

The head (`OfflineTextVideoStudent.head_state_dict()`: tensors only, float32) goes to `offline_t2v_head.pth`
(`torch.save`; read back with `torch.load(..., weights_only=True)`), and pack.json gets
  files.text_video    "offline_t2v_head.pth"
  text_kind           "offline_minilm_effnet"
  text_max_frames     the head's frame slots
  text_encoder        the MiniLM package: distribution, version, sha256 of its weights (checked when loading)
  text_training       the training settings, corpus, teachers, per-epoch history and time
A folder without pack.json starts as a copy of the bundled pack (the DnS networks serve beside the text student).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from dnsvr.training.files import atomic_path, update_json_keys
from dnsvr.training.networks.minilm import minilm_files
from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent
from dnsvr.training.packs.model_pack import TEXT_KIND_OFFLINE, TEXT_ROLE, ModelPack

HEAD_FILE = "offline_t2v_head.pth"


def save_head(path: str | Path, student: OfflineTextVideoStudent) -> Path:
    """The student's head tensors (contiguous float32 copies) to `path`, atomically."""
    head = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in student.head_state_dict().items()}
    with atomic_path(path) as partial:
        torch.save(head, partial)
    return Path(path)


def write_t2v_pack(out: str | Path, student: OfflineTextVideoStudent, training: dict[str, Any]) -> ModelPack:
    """Add (or replace) the `text_video` role of the pack in `out` (created from the bundled pack if it has no
    pack.json) -> the pack, re-read."""
    out = Path(out)
    manifest = out / "pack.json"
    if not manifest.is_file():
        bundled = ModelPack.bundled()
        out.mkdir(parents=True, exist_ok=True)
        for name in {*bundled.files.values(), "pack.json"}:
            shutil.copy2(bundled.root / name, out / name)
    files = {**json.loads(manifest.read_text()).get("files", {}), TEXT_ROLE: HEAD_FILE}
    save_head(out / HEAD_FILE, student)
    update_json_keys(manifest, {"files": files, "text_kind": TEXT_KIND_OFFLINE, "text_max_frames": student.max_frames,
                                "text_encoder": asdict(minilm_files()), "text_training": training})
    return ModelPack.from_dir(out)
