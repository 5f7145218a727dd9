"""Triton python (BLS) model `video_views`: an encoded video (or RGB frames) -> the S^c vectors and fine codes of
its crop views, what `dnsvr_index` stores beside the full frame's when the pack indexes by a crop grid.

The grid, the extractor and the fine student come from the repository's manifest (`index_views`, the text-video
student's kind: `spec.extractor`, `fine_kind`); decoding from the config parameters, as video_features's
(`Decoding.from_parameters`).  The crop views' fine codes are computed only for an export whose store keeps them
(`view_codes`); otherwise `view_codes` holds no view.  A repository that indexes full frames alone answers every
request with an error saying so.  The work: `dnsvr.serving.pipelines.views.view_vectors`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.export.manifest import fine_kind, index_views, read_manifest, text_settings, view_codes
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.video import Decoding
from dnsvr.serving.pipelines.views import view_vectors
from dnsvr.serving.triton.base import PythonModel, call
from dnsvr.serving.triton.calls import coarse_embed


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        manifest = read_manifest(self.repository)
        self.layout = index_views(manifest)
        text = text_settings(manifest)
        self.extractor = spec.extractor(text["kind"] if text else None)
        kind = spec.fine_kind(fine_kind(manifest))
        self.fine_model = kind.index_model
        self.keeps_codes = view_codes(manifest)  # else `view_codes` answers with no view: [1, 0, 0, 9, W]
        self.no_codes = np.zeros((1, 0, 0, spec.REGIONS, kind.width), kind.dtype)
        self.decoding = Decoding.from_parameters(self.parameters)

    def extract(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return call(self.extractor.name, {"frames": frames}, ["features"])

    def fine(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return call(self.fine_model, {"features": features, "mask": mask}, ["indexed"])["indexed"]

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        if self.layout is None:
            raise BadRequest("this repository indexes full frames alone (its pack has no index_views): video_views "
                             "has nothing to compute")
        outputs = view_vectors(inputs, self.decoding, self.layout, self.extract, coarse_embed,
                               self.fine if self.keeps_codes else None, self.extractor.max_batch_size)
        return {"view_codes": self.no_codes, **outputs}
