"""The store a served pipeline writes to and reads from: where it is, and which model version it holds.

Where: model config parameters `store_uri` / `store_prefix` (empty: unset), else DNSVR_MILVUS_URI /
DNSVR_MILVUS_TOKEN / DNSVR_MILVUS_PREFIX and the config file (`dnsvr.serving.store.settings`).  Which models:
the repository's `manifest.json` (`dnsvr.export.manifest.model_version`: the model-pack version, else a hash
of the served ONNX files), so vectors of two different exports are never mixed in one store; and how many crop
views each video is stored with (the pack's `index_views` grid), whether their fine codes are too (the export's
`view_codes`) and how many segment views (the pack's `index_segments`), which the store also records.  How its fine
scores meet coarse ones: the pack's score calibration and default re-rank fusion, from the same manifest.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dnsvr.client import spec
from dnsvr.export.manifest import (
    default_fusion,
    duplicate_threshold,
    fine_kind,
    index_segments,
    index_views,
    model_version,
    read_manifest,
    score_calibration,
    text_settings,
    view_codes,
)
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import StoreError, VideoStore
from dnsvr.training import paths


def store_settings(parameters: dict[str, str] | None = None) -> StoreSettings:
    """Settings from model parameters (`store_uri`, `store_prefix`; empty = unset) over the environment."""
    parameters = parameters or {}
    return StoreSettings.resolve(uri=parameters.get("store_uri") or None,
                                 prefix=parameters.get("store_prefix") or None)


def ranking_consistency(parameters: dict[str, str] | None = None) -> str:
    """The Milvus consistency of a search pipeline's ranking reads: $DNSVR_SEARCH_CONSISTENCY, else the model
    parameter `consistency`, else Session."""
    return paths.environment(paths.SEARCH_CONSISTENCY) or (parameters or {}).get("consistency") or "Session"


class ServiceStore:
    """Opens the VideoStore lazily (its coarse dimension is known from the first embedding) and keeps it."""

    def __init__(self, repository: str | Path, parameters: dict[str, str] | None = None) -> None:
        self.repository = Path(repository)
        manifest = read_manifest(repository)
        self.model_version = model_version(manifest)
        self.fine_kind = fine_kind(manifest)
        self.representation = spec.fine_kind(self.fine_kind).representation
        self.text = text_settings(manifest)
        self.text_dim = self.text["embed_dim"] if self.text else 0
        self.calibration = score_calibration(manifest)  # the fine-to-coarse map of the fusion 'calibrated'
        self.default_fusion = default_fusion(manifest)  # the fusion of a search (or duplicate check) naming none
        self.index_views = index_views(manifest)  # the crop grid indexed videos are also stored by, or None
        self.duplicate_threshold = duplicate_threshold(manifest)  # of an index call that names none
        self.views = len(self.index_views.boxes) if self.index_views else 0  # crop views per stored video
        self.view_codes = view_codes(manifest)  # each crop view's fine codes stored too (`--view-codes`)
        self.index_segments = index_segments(manifest)  # the frame windows indexed videos are also stored by, or None
        self.segments = self.index_segments.count if self.index_segments else 0  # segment views per stored video
        self.settings = store_settings(parameters)
        self._stores: dict[int | None, VideoStore] = {}
        self._opening = threading.Lock()  # a model's requests and its background threads (the code warmer) share it

    def get(self, coarse_dim: int | None = None, create: bool = True) -> VideoStore:
        """The store for this model version; coarse_dim None adopts the existing collections' dimension."""
        key = coarse_dim if create else None
        with self._opening:
            if key not in self._stores:
                self._stores[key] = VideoStore(self.settings, model_version=self.model_version,
                                               coarse_dim=coarse_dim, representation=self.representation,
                                               text_dim=self.text_dim, views=self.views,
                                               view_codes=self.view_codes, segments=self.segments, create=create)
            return self._stores[key]

    def existing(self) -> VideoStore | None:
        """The store if its collections exist (any coarse dimension), else None (nothing indexed yet)."""
        store = self.get(create=False)
        try:
            store.meta  # noqa: B018 - opens and checks the collections
        except StoreError as error:
            if str(error).startswith("no video store"):
                return None
            raise
        return store

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
