"""The result of one evaluation epoch, typed: what the module logs, the pipeline writes
and reporting turns into tables and plots. numpy only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


@dataclass
class Evaluation:
    """mAP per tIoU threshold, per-class AP, calibration, and (test) the detections."""

    split: str  # val | test
    tiou_thresholds: tuple[float, ...]
    map_at: tuple[float, ...]  # mAP at each threshold (NaN without ground truth)
    average_map: float
    per_class_ap: np.ndarray  # (C, T) for the classes present in the ground truth
    classes_present: np.ndarray  # (C,) their class indices
    ece: float  # NaN without detections
    confidences: np.ndarray  # the detections' scores
    correct: np.ndarray  # true positive at the calibration tIoU, per detection
    n_bins: int
    # per video, every rank's (test only): video_id, segments (s), scores, labels, gt
    detections: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_metrics(
        cls,
        split: str,
        values: Mapping[str, Any],
        tiou_thresholds: Sequence[float],
        *,
        n_bins: int,
        detections: list[dict[str, Any]] | None = None,
    ) -> Evaluation:
        """From the metric collection's ``compute()`` (mAP and calibration keys)."""
        thresholds = tuple(float(t) for t in tiou_thresholds)
        return cls(
            split=split,
            tiou_thresholds=thresholds,
            map_at=tuple(float(values[f"mAP@{t:g}"]) for t in thresholds),
            average_map=float(values["mAP"]),
            per_class_ap=_np(values["per_class_ap"]).astype(np.float64),
            classes_present=_np(values["classes_present"]).astype(np.int64),
            ece=float(values["ece"]),
            confidences=_np(values["confidences"]).astype(np.float64),
            correct=_np(values["correct"]).astype(bool),
            n_bins=int(n_bins),
            detections=list(detections or []),
        )

    def logs(self) -> dict[str, float]:
        """The scalars logged under ``split/``: ``mAP@t``, ``mAP``, ``ece``."""
        out = {f"{self.split}/mAP@{t:g}": v for t, v in zip(self.tiou_thresholds, self.map_at)}
        out[f"{self.split}/mAP"] = self.average_map
        out[f"{self.split}/ece"] = self.ece
        return out
