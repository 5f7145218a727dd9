"""Text-video models as they are served: index a video once, score captions against what was stored.

The shape `dnsvr.training.evaluation.t2v_evaluate.TextVideoIndex` measures (`index_video(frames)` -> the array
stored per video, `score(captions, stored)` -> `[Nt, Nv]`), for the offline student and for its teachers:
  StudentIndex   stores the student's video vector `[D]` float32; a query is one MiniLM pass + one product
  TeacherIndex   stores the video's pooled frame features `[T, 1280]` float32 (a teacher needs every frame)
Frames are uint8 `[T, 224, 224, 3]` (the DnS decoder's); at most `max_frames` are kept, chosen uniformly
(`clip_frames.select_frame_indices`), and encoded by EfficientNet-Lite0 (`pooled_features`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from dnsvr.training.data.clip_frames import select_frame_indices
from dnsvr.training.distill.t2v_teachers import T2VBatch, T2VTeacher
from dnsvr.training.distill.train_t2v import stack_videos
from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent


class FrameEncoder:
    """uint8 frames `[T, 224, 224, 3]` -> pooled EfficientNet-Lite0 features `[min(T, max_frames), 1280]`."""

    def __init__(self, max_frames: int, model: torch.nn.Module | None = None):
        from dnsvr.training.networks.efficientnet import load_efficientnet_lite0

        self.max_frames = max_frames
        self.model = (model if model is not None else load_efficientnet_lite0()).eval()

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from dnsvr.training.networks.efficientnet import normalize_frames

        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got "
                             f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', None)}")
        kept = np.ascontiguousarray(frames[select_frame_indices(len(frames), self.max_frames)])
        return self.model.pooled_features(normalize_frames(torch.from_numpy(kept))).numpy()


class StudentIndex:
    """The offline student as served: one L2-normalised `[D]` float32 vector per video, cosine scores."""

    def __init__(self, student: OfflineTextVideoStudent, frame_encoder: FrameEncoder | None = None):
        from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer

        self.student = student.eval()
        self.frames = frame_encoder or FrameEncoder(student.max_frames)
        self.tokenizer = MiniLMTokenizer()

    @torch.no_grad()
    def index_video(self, frames: np.ndarray) -> np.ndarray:
        features = torch.from_numpy(self.frames(frames))[None]  # [1, T, 1280]
        return self.student.encode_video(features)[0].numpy()

    @torch.no_grad()
    def score(self, captions: Sequence[str], stored: Sequence[np.ndarray]) -> np.ndarray:
        ids, mask = self.tokenizer.encode(list(captions))
        text = self.student.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))  # [Nt, D]
        return (text @ torch.from_numpy(np.stack(stored)).T).numpy()  # [Nt, D] @ [D, Nv] -> [Nt, Nv]


class TeacherIndex:
    """A feature-based teacher (concept, lexical) as a retrieval model: it stores each video's frame features and
    scores captions with the teacher's similarity."""

    def __init__(self, teacher: T2VTeacher, frame_encoder: FrameEncoder):
        self.teacher = teacher
        self.frames = frame_encoder

    def index_video(self, frames: np.ndarray) -> np.ndarray:
        return self.frames(frames)

    @torch.no_grad()
    def score(self, captions: Sequence[str], stored: Sequence[np.ndarray]) -> np.ndarray:
        names = [str(i) for i in range(len(stored))]
        features, mask = stack_videos(dict(zip(names, stored, strict=True)), names)
        batch = T2VBatch(texts=list(captions), video_ids=names, frame_mask=mask, frame_features=features,
                         pairs=torch.zeros(len(captions), dtype=torch.long))
        return self.teacher(batch).similarity.numpy()
