"""DnS networks, video decoding, features, training and evaluation.

The networks and checkpoint loading are exported lazily (PEP 562), so importing a light sub-module such as
`dnsvr.training.cli.features` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FineGrainedStudent": "networks.students",
    "CoarseGrainedStudent": "networks.students",
    "SelectorNetwork": "networks.selector",
    "ViSiLHead": "networks.visil",
    "FeatureExtractor": "networks.resnet50",
    "PCAWhitening": "networks.resnet50",
    "VideoNormalizer": "networks.resnet50",
    "ResNet50": "networks.resnet50",
    "chamfer_similarity": "networks.similarity",
    "load_checkpoint": "networks.checkpoints",
    "download_official": "networks.checkpoints",
    "CheckpointError": "networks.checkpoints",
    "OFFICIAL_URLS": "networks.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
