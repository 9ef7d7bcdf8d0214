"""`DetectionCalibrationError`: calibration of the detection scores as a torchmetrics metric.

The label of a detection is "true positive at ``tiou`` under the official greedy
matching", computed once for every video in `compute` (the evaluator's
``match_predictions``, keyed by video: it matches within each video); the error is the ECE of :mod:`salad_lightning.metrics.calibration` (equal-width
bins, each ``(lower, upper]``, 0 in the first). torchmetrics' own
``BinaryCalibrationError`` bins ``[lower, upper)`` and needs the labels computed
outside, so it is not used (``tests/test_calibration.py`` shows where the two differ).

`update` takes the same per-video lists as
:class:`~salad_lightning.metrics.tad_map.TemporalActionDetectionMAP`, so both sit in
one ``MetricCollection``. States are flat 1-D tensors in lists gathered with
``dist_reduce_fx="cat"``; a video seen twice (a distributed sampler's padding) counts
once, as in the mAP metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from salad_lightning.metrics.calibration import expected_calibration_error
from salad_lightning.metrics.functional import Instances, match_predictions, video_key
from salad_lightning.metrics.tad_map import first_copies, source_id, state_array

__all__ = ["DetectionCalibrationError"]

_STATES = {
    "video_keys": torch.int64,
    "video_sources": torch.int64,
    "det_keys": torch.int64,
    "det_sources": torch.int64,
    "det_segments": torch.float64,  # flattened (M * 2,)
    "scores": torch.float64,
    "det_labels": torch.int64,
    "gt_keys": torch.int64,
    "gt_sources": torch.int64,
    "gt_segments": torch.float64,
    "gt_labels": torch.int64,
}


def _numpy(x: Any, dtype) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


class DetectionCalibrationError(Metric):
    """Expected calibration error of detection scores against "true positive at ``tiou``".

    Args:
        n_bins: equal-width bins of the scores.
        tiou: the tIoU a detection needs to be a true positive.

    `compute()` returns ``ece`` (0-d float64, NaN without detections), and the
    ``confidences`` and ``correct`` (1-D) it was computed from, for the reliability diagram.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = 15, tiou: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
        if not 0 < float(tiou) <= 1:
            raise ValueError(f"tiou: expected a value in (0, 1], got {tiou}")
        self.n_bins, self.tiou = int(n_bins), float(tiou)
        self._seen = 0
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[dict[str, Any]], target: Sequence[dict[str, Any]]) -> None:
        """One dict per video in each list: ``segments``, ``scores``, ``labels`` (and the
        ground truth's ``segments``, ``labels``), ``video_id`` in both. The rows are only
        stored: the matching runs once, over every video, in `compute`."""
        batch: dict[str, list[np.ndarray]] = {name: [] for name in _STATES}
        for p, t in zip(preds, target, strict=True):
            key, source = video_key(p["video_id"]), source_id(self._seen)
            self._seen += 1
            scores = _numpy(p["scores"], np.float64).reshape(-1)
            gt_labels = _numpy(t["labels"], np.int64).reshape(-1)
            batch["video_keys"].append(np.array([key]))
            batch["video_sources"].append(np.array([source]))
            for prefix, n in (("det", len(scores)), ("gt", len(gt_labels))):
                batch[f"{prefix}_keys"].append(np.full(n, key))
                batch[f"{prefix}_sources"].append(np.full(n, source))
            batch["det_segments"].append(_numpy(p["segments"], np.float64).reshape(-1))
            batch["scores"].append(scores)
            batch["det_labels"].append(_numpy(p["labels"], np.int64).reshape(-1))
            batch["gt_segments"].append(_numpy(t["segments"], np.float64).reshape(-1))
            batch["gt_labels"].append(gt_labels)
        for name, dtype in _STATES.items():
            parts = batch[name]
            value = np.concatenate(parts) if parts else np.zeros(0)
            getattr(self, name).append(torch.as_tensor(value, dtype=dtype, device=self.device))

    def compute(self) -> dict[str, Tensor]:
        s = {name: state_array(self, name, dtype) for name, dtype in _STATES.items()}
        keep = {
            x: first_copies(s["video_keys"], s["video_sources"], s[f"{x}_keys"], s[f"{x}_sources"])
            for x in ("det", "gt")
        }
        d, g = keep["det"], keep["gt"]
        conf = s["scores"][d]
        det = Instances(
            s["det_keys"][d], s["det_segments"].reshape(-1, 2)[d], s["det_labels"][d], conf
        )
        gt = Instances(s["gt_keys"][g], s["gt_segments"].reshape(-1, 2)[g], s["gt_labels"][g])
        correct = match_predictions(det, gt, tiou_thresholds=[self.tiou])[0]
        ece = expected_calibration_error(conf, correct, n_bins=self.n_bins)
        return {
            "ece": torch.tensor(ece, dtype=torch.float64),
            "confidences": torch.from_numpy(conf),
            "correct": torch.from_numpy(correct),
        }
