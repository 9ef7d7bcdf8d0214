"""Evaluation: the official ActivityNet detection mAP and calibration of the scores.

`TemporalActionDetectionMAP` needs torch, so it is imported on first use (PEP 562
module ``__getattr__``): ``import salad_lightning.metrics.functional`` and the
``python -m salad_lightning.evaluate`` command stay free of torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TemporalActionDetectionMAP"]


def __getattr__(name: str) -> Any:
    if name == "TemporalActionDetectionMAP":
        from salad_lightning.metrics.tad_map import TemporalActionDetectionMAP

        return TemporalActionDetectionMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
