"""Evaluation: the official ActivityNet detection protocol, calibration, DETAD's
diagnosis, and the evaluation store.

`DetectionStore` needs torch, so it is imported on first use (PEP 562 module
``__getattr__``): ``import salad_lightning.metrics.functional`` and the
``python -m salad_lightning.evaluate`` command stay free of torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DetectionStore"]


def __getattr__(name: str) -> Any:
    if name == "DetectionStore":
        from salad_lightning.metrics.store import DetectionStore

        return DetectionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
