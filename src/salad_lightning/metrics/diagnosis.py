"""DETAD's error diagnosis of a temporal action detector, on numpy arrays.

The analyses of Alwassel et al., "Diagnosing Error in Temporal Action Detectors"
(ECCV 2018), with the defaults and rules of their code (HumamAlwassel/DETAD,
``src/action_detector_diagnosis.py`` and the three ``*_analysis.py`` scripts).
numpy only: the evaluation command imports it and must not pay for torch.

Ground truth. Instances of zero length (or that end before they start: files are
taken as published) and instances longer than their video (coverage > 1) are dropped
before anything else, as DETAD does when it loads the file. A prediction that ends
before it starts is typed by the official tIoU like any other. The classes are those of the remaining ground truth; predictions of any other
class are ignored. G_j is the number of ground truths of class j and N = (number of
ground truths) / (number of classes) (DETAD's Python 2 code floors this ratio; the
paper's N is the plain average, used here).

Matching: the official ActivityNet protocol (`match_predictions`), with its tie rules.
Wherever predictions are ranked (the matching, the top-k cut, the profile's groups,
AP_N), equal scores rank the lower video index first, then the earlier row; DETAD
leaves these to pandas' and numpy's unstable sorts. A prediction is typed at each tIoU threshold: a true
positive, or else by the ground truth of its video with the highest tIoU, of any
label (equal tIoUs: the first in row order, as numpy's argmax): tIoU >= threshold and
the same label is a double detection, another label a wrong label; tIoU >= min_tiou
(0.1) and the same label a localization error, another label a confusion; otherwise,
or when the video has no ground truth, background.

AP_N (normalized AP): the precision at each rank is ``R * N / (R * N + FP)``, with R
the recall and FP the false positives so far, interpolated as in VOC; average-mAP_N
is its mean over classes and thresholds (`Diagnosis.average_mAP_N`: all predictions).
Each analysis uses the predictions that DETAD's script for it uses:

- false-positive profile and removed-error gain (``false_positive_analysis.py``,
  ``limit_factor=10``): each class's top ``limit_factor * G_j`` predictions by score.
  The profile pools, over classes, the predictions ranked 1..G_j ("1G"),
  G_j+1..2G_j ("2G"), ... and gives the share of each type, averaged over thresholds.
  The gain of an error type is the average-mAP_N of those predictions with that
  type's predictions removed (the matching is not redone) minus their average-mAP_N
  (`Diagnosis.average_mAP_N_top`);
- sensitivity (``sensitivity_analysis.py``): all predictions. The value of a bin is
  the mean, over the classes with a ground truth in the bin, of the class's AP_N
  (mean over thresholds) with recall counted over the bin's ground truths of the
  class. A prediction matched, at any threshold, to a ground truth outside the bin is
  left out of the bin's AP_N at every threshold; unmatched predictions stay, as false
  positives, in every bin (DETAD keeps the rows whose matched ground truth is in the
  bin or is none, threshold after threshold);
- false-negative rate (``false_negative_analysis.py``): all predictions, and a match
  only counts when the prediction's normalized precision at its rank is above
  ``false_negative_min_precision`` (0.05, DETAD's
  ``minimum_normalized_precision_threshold_for_detection``). The rate of a bin is its
  share of unmatched ground truths, averaged over thresholds.

Characteristics of a ground truth: length (seconds), coverage (length / video
duration) and the number of ground-truth rows of its video (all classes, counted on
the input before dropping, as DETAD's data files count them). Bins are closed on the
right, the first one closed on both sides (``pandas.cut(include_lowest=True)``).

Empty cases: a bin with no ground truth (sensitivity, false-negative rate) and a
profile group with no prediction are NaN in the arrays and ``null`` in the JSON. A
class with no prediction has AP_N 0 (DETAD's sensitivity script stops on it); a
video with no ground truth makes background errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from salad_lightning.metrics import _diagnosis_core as core
from salad_lightning.metrics.functional import (
    Instances,
    Matching,
    _check_rows,
    _check_thresholds,
    match_detections,
)

__all__ = [
    "CHARACTERISTICS",
    "ERROR_TYPES",
    "PRESETS",
    "Bins",
    "Diagnosis",
    "diagnose",
]

ERROR_TYPES = (
    "true_positive",
    "double_detection",
    "wrong_label",
    "localization",
    "confusion",
    "background",
)
CHARACTERISTICS = ("length", "coverage", "num_instances")


@dataclass(frozen=True)
class Bins:
    """Bin edges (increasing, ``len(names) + 1`` of them) and the bins' names."""

    edges: tuple[float, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges)
        names = tuple(str(n) for n in self.names)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "names", names)
        if len(edges) != len(names) + 1 or not all(a < b for a, b in zip(edges, edges[1:])):
            raise ValueError(
                f"Bins: expected increasing edges, one more than the names; got edges "
                f"{list(edges)} and names {list(names)}"
            )

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Index of each value's bin, ``(lo, hi]`` (the first ``[lo, hi]``); -1 outside."""
        edges = np.asarray(self.edges)
        index = np.searchsorted(edges, values, side="left") - 1
        index[values == edges[0]] = 0
        index[(values < edges[0]) | (values > edges[-1]) | np.isnan(values)] = -1
        return index


class Preset(TypedDict):
    """Keyword arguments of `diagnose` that DETAD sets per dataset."""

    tiou_thresholds: tuple[float, ...]
    length_bins: Bins
    coverage_bins: Bins
    instance_bins: Bins


_SIZES = ("XS", "S", "M", "L", "XL")
# DETAD's defaults: false_positive_analysis.py (and the two others), ``main``.
PRESETS: dict[str, Preset] = {
    "thumos14": Preset(
        tiou_thresholds=(0.5,),
        length_bins=Bins((0, 3, 6, 12, 18, math.inf), _SIZES),
        coverage_bins=Bins((0, 0.02, 0.04, 0.06, 0.08, 1), _SIZES),
        instance_bins=Bins((-1, 1, 40, 80, math.inf), _SIZES[:4]),
    ),
    "activitynet": Preset(
        tiou_thresholds=tuple(round(0.5 + 0.05 * i, 2) for i in range(10)),
        length_bins=Bins((0, 30, 60, 120, 180, math.inf), _SIZES),
        coverage_bins=Bins((0, 0.2, 0.4, 0.6, 0.8, 1), _SIZES),
        instance_bins=Bins((-1, 1, 4, 8, math.inf), _SIZES[:4]),
    ),
}
_DEFAULT = PRESETS["activitynet"]


@dataclass(frozen=True)
class Diagnosis:
    """Result of `diagnose`. Arrays hold fractions; NaN marks an empty group or bin.

    ``average_mAP_N`` is over all predictions (the JSON's), ``average_mAP_N_top`` over
    each class's top ``limit_factor * G_j``, the base of ``removed_error_gain``.
    ``false_positive_profile`` is (limit_factor, 6): rows "1G", "2G", ..., columns
    `ERROR_TYPES`. ``removed_error_gain`` is (5,), the error types of `ERROR_TYPES`
    after the first. ``sensitivity``, ``false_negative_rate`` and
    ``ground_truths_per_bin`` map each of `CHARACTERISTICS` to one value per bin of
    ``bins[name]``. ``prediction_type`` is (T, N_pred), the index in `ERROR_TYPES` of
    each input prediction at each threshold, -1 outside the top ``limit_factor * G_j``.
    """

    tiou_thresholds: np.ndarray
    average_mAP_N: float
    average_mAP_N_top: float
    false_positive_profile: np.ndarray
    removed_error_gain: np.ndarray
    bins: dict[str, Bins]
    sensitivity: dict[str, np.ndarray]
    false_negative_rate: dict[str, np.ndarray]
    ground_truths_per_bin: dict[str, np.ndarray]
    prediction_type: np.ndarray
    num_ground_truths: int
    num_dropped_ground_truths: int

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values (NaN as None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        def per_bin(values: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
            return {
                name: {b: num(v) for b, v in zip(self.bins[name].names, values[name])}
                for name in CHARACTERISTICS
            }

        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "average_mAP_N": num(self.average_mAP_N),
            "false_positive_profile": {
                f"{g + 1}G": {k: num(v) for k, v in zip(ERROR_TYPES, row)}
                for g, row in enumerate(self.false_positive_profile)
            },
            "removed_error_gain": {
                k: num(v) for k, v in zip(ERROR_TYPES[1:], self.removed_error_gain)
            },
            "sensitivity": per_bin(self.sensitivity),
            "false_negative_rate": per_bin(self.false_negative_rate),
        }


def diagnose(
    pred: Instances,
    gt: Instances,
    video_duration,
    *,
    tiou_thresholds: Sequence[float] = _DEFAULT["tiou_thresholds"],
    length_bins: Bins = _DEFAULT["length_bins"],
    coverage_bins: Bins = _DEFAULT["coverage_bins"],
    instance_bins: Bins = _DEFAULT["instance_bins"],
    limit_factor: int = 10,
    min_tiou: float = 0.1,
    false_negative_min_precision: float = 0.05,
    matching: Matching | None = None,
) -> Diagnosis:
    """DETAD's false-positive, sensitivity and false-negative analyses (module docstring).

    ``pred`` and ``gt`` as in `match_detections`, with video indices into
    ``video_duration`` (seconds). Index videos in the order of `video_key` so that
    equal scores rank as in the project's evaluator. Defaults: ActivityNet
    (``PRESETS["activitynet"]``); ``diagnose(pred, gt, duration, **PRESETS["thumos14"])``
    for THUMOS14.

    ``matching``: the evaluation's matching of these rows (an `Evaluation`'s), used as
    it is when it holds the diagnosis' thresholds and DETAD's drops leave every ground
    truth in place; otherwise (a dropped ground truth changes who matches whom) the
    rows are matched here, on the ground truth DETAD keeps.
    """
    duration = np.asarray(video_duration, dtype=np.float64).reshape(-1)
    pred = _check_rows("pred", pred, scored=True, n_videos=len(duration))
    pv, ps, pl, score = pred.video, pred.segments, pred.labels, pred.scores
    n_pred = len(pv)
    gt = _check_rows("gt", gt, scored=False, n_videos=len(duration))
    gv_all, gs_all, gl_all = gt.video, gt.segments, gt.labels
    thr = _check_thresholds(tiou_thresholds)
    if isinstance(limit_factor, bool) or int(limit_factor) != limit_factor or limit_factor < 1:
        raise ValueError(f"limit_factor: expected a positive integer, got {limit_factor!r}")
    bad = np.flatnonzero(~(duration[gv_all] > 0) | ~np.isfinite(duration[gv_all]))
    if len(bad):
        v = gv_all[bad[0]]
        raise ValueError(
            f"video_duration: expected a positive duration for every video with ground truth, "
            f"found {duration[v]} for video {v}"
        )

    # Ground truth: characteristics on the input rows, then DETAD's drops.
    length = gs_all[:, 1] - gs_all[:, 0]
    coverage = length / duration[gv_all]
    instances = np.bincount(gv_all, minlength=len(duration))[gv_all].astype(np.float64)
    kept = (length > 0) & (coverage <= 1)
    gv, gs, gl = gv_all[kept], gs_all[kept], gl_all[kept]
    classes = np.unique(gl)
    if len(classes) == 0:
        raise ValueError(
            f"diagnose: no ground truth left to diagnose ({len(gv_all)} rows, "
            f"{int((length <= 0).sum())} of zero length, {int((coverage > 1).sum())} longer "
            f"than their video)"
        )
    gc = np.searchsorted(classes, gl)
    n_cls, n_thr = len(classes), len(thr)

    # Predictions of the evaluated classes, by dense class index.
    at = np.minimum(np.searchsorted(classes, pl), n_cls - 1)
    used = np.flatnonzero(classes[at] == pl)
    pv, ps, score, pc = pv[used], ps[used], score[used], at[used]
    known = matching is not None and all(
        np.isclose(matching.tiou_thresholds, t, rtol=0, atol=1e-9).any() for t in thr
    )
    if known and kept.all():
        given = matching.at(thr)
        tp, taken = given.tp[:, used], given.gt[:, used]
    else:
        found = match_detections(Instances(pv, ps, pc, score), Instances(gv, gs, gc), thr)
        tp, taken = found.tp, found.gt
    m = core.match(pv, score, pc, gc, tp, taken)
    ap, precision = m.ap(np.ones(len(m.t), dtype=bool), m.pos[m.p] + 1.0)
    profile, average_top, gain, sel, types = core.false_positive_analysis(
        m, pv, ps, gv, gs, gc, thr, limit_factor=limit_factor, min_tiou=min_tiou
    )
    unmatched = core.unmatched_ground_truths(m, precision, false_negative_min_precision)
    bins = {"length": length_bins, "coverage": coverage_bins, "num_instances": instance_bins}
    values = {"length": length, "coverage": coverage, "num_instances": instances}
    sensitivity, fn_rate, per_bin = {}, {}, {}
    for name in CHARACTERISTICS:
        gbin = bins[name].assign(values[name][kept])
        n_bins = len(bins[name].names)
        sensitivity[name] = core.sensitivity(m, gc, gbin, n_bins)
        fn_rate[name] = core.false_negative_rate(unmatched, gbin, n_bins)
        per_bin[name] = np.bincount(gbin[gbin >= 0], minlength=n_bins)
    prediction_type = np.full((n_thr, n_pred), -1, dtype=np.int8)
    prediction_type[:, used[sel]] = types
    return Diagnosis(
        tiou_thresholds=thr,
        average_mAP_N=float(ap.mean()),
        average_mAP_N_top=average_top,
        false_positive_profile=profile,
        removed_error_gain=gain,
        bins=bins,
        sensitivity=sensitivity,
        false_negative_rate=fn_rate,
        ground_truths_per_bin=per_bin,
        prediction_type=prediction_type,
        num_ground_truths=int(len(gv)),
        num_dropped_ground_truths=int((~kept).sum()),
    )
