"""The data layer: annotations, features, datasets, batches, the datamodule.

Exports are resolved lazily: ``import salad_lightning.data.annotations`` (used by the
evaluation command) must not import torch through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassIndex": "annotations",
    "VideoRecord": "annotations",
    "AnnotationSet": "annotations",
    "DataWarning": "annotations",
    "load_annotations": "annotations",
    "TimeMapping": "mapping",
    "index_to_seconds": "mapping",
    "FeatureSource": "features",
    "Batch": "batch",
    "TADDataset": "dataset",
    "collate_videos": "dataset",
    "BucketBatchSampler": "sampler",
    "SaladDataModule": "datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
