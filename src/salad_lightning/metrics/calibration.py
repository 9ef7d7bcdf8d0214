"""Calibration of detection scores: ECE, reliability-diagram data, and the TP labels.

The self-assessment score p_t of SALAD is meant to say "this proposal is good".
Here "good" is "a true positive at tIoU 0.5 under the official greedy matching"
(`true_positive_flags`), and the calibration of the scores against that label is
measured with the expected calibration error. numpy only.

Bins: ``n_bins`` equal-width bins with edges ``np.linspace(0, 1, n_bins + 1)``,
each bin ``(lower, upper]`` and the first one also holding 0 (the convention of
Guo et al. 2017 and torchmetrics).
"""

from __future__ import annotations

import numpy as np

from salad_lightning.metrics.functional import Instances, match_predictions

__all__ = ["expected_calibration_error", "reliability_diagram_data", "true_positive_flags"]


def _check(confidences, correct, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct)
    if conf.ndim != 1 or hit.shape != conf.shape:
        raise ValueError(
            f"confidences and correct: expected two 1-D arrays of one length, got {conf.shape} and {hit.shape}"
        )
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError("confidences: expected values in [0, 1] (NaN is not allowed)")
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    return conf, hit.astype(bool)


def reliability_diagram_data(confidences, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per bin: ``bin_edges`` (n_bins + 1,), ``accuracy``, ``confidence`` (mean), ``counts``.

    ``accuracy`` and ``confidence`` are NaN in empty bins.
    """
    conf, hit = _check(confidences, correct, n_bins)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(index, minlength=int(n_bins))
    sum_conf = np.bincount(index, weights=conf, minlength=int(n_bins))
    sum_hit = np.bincount(index, weights=hit.astype(np.float64), minlength=int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, sum_hit / counts, np.nan)
        mean_conf = np.where(counts > 0, sum_conf / counts, np.nan)
    return {"bin_edges": edges, "accuracy": accuracy, "confidence": mean_conf, "counts": counts}


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """``sum_b (n_b / N) * |accuracy_b - mean confidence_b|``; NaN when there is no input."""
    data = reliability_diagram_data(confidences, correct, n_bins)
    counts = data["counts"]
    if counts.sum() == 0:
        return float("nan")
    used = counts > 0
    gap = np.abs(data["accuracy"][used] - data["confidence"][used])
    return float(np.sum(counts[used] / counts.sum() * gap))


def true_positive_flags(
    pred_segments, pred_scores, pred_labels, gt_segments, gt_labels, tiou: float = 0.5
) -> np.ndarray:
    """For the predictions of one video: is each a true positive at ``tiou``? (N,) bool.

    Official greedy matching: per class, predictions in decreasing score order
    (equal scores: earlier row first) take the free same-class ground truth of
    highest tIoU, if it reaches ``tiou``.
    """
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    pred = Instances(
        video=np.zeros(len(pred_scores), dtype=np.int64),
        segments=np.asarray(pred_segments, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(pred_labels).reshape(-1),
        scores=pred_scores,
    )
    gt = Instances(
        video=np.zeros(len(gt_labels), dtype=np.int64),
        segments=np.asarray(gt_segments, dtype=np.float64).reshape(-1, 2),
        labels=gt_labels,
    )
    tp = match_predictions(pred, gt, tiou_thresholds=[tiou])
    return tp[0]
