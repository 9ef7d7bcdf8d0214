"""A straightforward transcription of the official ActivityNet detection protocol.

Written from activitynet/ActivityNet ``Evaluation/eval_detection.py``
(``compute_average_precision_detection``) and ``Evaluation/utils.py``
(``segment_iou``, ``interpolated_prec_rec``): loops per class, per prediction and
per threshold, in Python 3 with no pandas. It is deliberately slow and simple; the
fast evaluator in ``salad_lightning.metrics.functional`` is tested against it.

Orders the official code leaves to numpy's sort are written out explicitly, with
the rules documented in docs/evaluation.md:

- predictions: score descending, then video key ascending, then row position;
- ground truths with equal tIoU (NaN counts as the largest): the later row first,
  which is what reversing a stable ascending argsort gives.
"""

from __future__ import annotations

import math


def official_tiou(pred: tuple[float, float], gt: tuple[float, float]) -> float:
    """tIoU as ``segment_iou`` computes it (0/0 gives NaN)."""
    inter = max(min(pred[1], gt[1]) - max(pred[0], gt[0]), 0.0)
    union = (gt[1] - gt[0]) + (pred[1] - pred[0]) - inter
    if union == 0:
        return math.nan if inter == 0 else math.copysign(math.inf, inter)
    return inter / union


def interpolated_prec_rec(prec: list[float], rec: list[float]) -> float:
    """VOC all-point interpolation, as ``interpolated_prec_rec`` does it."""
    mprec = [0.0] + list(prec) + [0.0]
    mrec = [0.0] + list(rec) + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mprec[i]
    return ap


def class_average_precision(
    gts: list[tuple[int, float, float]],
    preds: list[tuple[int, float, float, float, int]],
    thresholds: list[float],
) -> list[float]:
    """AP of one class at each threshold.

    ``gts``: (video, start, end) in row order; ``preds``: (video, start, end, score, row).
    """
    if not preds:
        return [0.0] * len(thresholds)
    npos = float(len(gts))
    preds = sorted(preds, key=lambda p: (-p[3], p[0], p[4]))
    locked = [[False] * len(gts) for _ in thresholds]
    tp = [[0] * len(preds) for _ in thresholds]
    fp = [[0] * len(preds) for _ in thresholds]
    for i, (video, start, end, _score, _row) in enumerate(preds):
        mine = [j for j, g in enumerate(gts) if g[0] == video]
        if not mine:
            for t in range(len(thresholds)):
                fp[t][i] = 1
            continue
        tious = {j: official_tiou((start, end), (gts[j][1], gts[j][2])) for j in mine}

        # Decreasing tIoU (NaN sorts as the largest), the later gt first on ties.
        tried = sorted(
            mine, key=lambda j, ts=tious: (-math.inf if math.isnan(ts[j]) else -ts[j], -j)
        )
        for t, thr in enumerate(thresholds):
            for j in tried:
                if tious[j] < thr:  # False for NaN, as in the official code
                    fp[t][i] = 1
                    break
                if locked[t][j]:
                    continue
                tp[t][i] = 1
                locked[t][j] = True
                break
            if tp[t][i] == 0 and fp[t][i] == 0:
                fp[t][i] = 1
    aps = []
    for t in range(len(thresholds)):
        tp_cum, fp_cum, prec, rec = 0, 0, [], []
        for i in range(len(preds)):
            tp_cum += tp[t][i]
            fp_cum += fp[t][i]
            rec.append(tp_cum / npos)
            prec.append(tp_cum / (tp_cum + fp_cum))
        aps.append(interpolated_prec_rec(prec, rec))
    return aps


def reference_evaluate(
    pred_video,
    pred_segments,
    pred_scores,
    pred_labels,
    gt_video,
    gt_segments,
    gt_labels,
    thresholds,
) -> tuple[list[int], list[list[float]], list[float], float]:
    """(classes, ap[class][threshold], mAP per threshold, average mAP)."""
    thresholds = [float(t) for t in thresholds]
    classes = sorted({int(c) for c in gt_labels})
    ap = []
    for c in classes:
        gts = [
            (int(v), float(s[0]), float(s[1]))
            for v, s, lab in zip(gt_video, gt_segments, gt_labels)
            if int(lab) == c
        ]
        preds = [
            (int(v), float(s[0]), float(s[1]), float(sc), row)
            for row, (v, s, sc, lab) in enumerate(
                zip(pred_video, pred_segments, pred_scores, pred_labels)
            )
            if int(lab) == c
        ]
        ap.append(class_average_precision(gts, preds, thresholds))
    if not classes:
        return [], [], [math.nan] * len(thresholds), math.nan
    mean_ap = [
        sum(ap[c][t] for c in range(len(classes))) / len(classes) for t in range(len(thresholds))
    ]
    return classes, ap, mean_ap, sum(mean_ap) / len(mean_ap)


def as_instances(*flat):
    """The project's (pred, gt) `Instances` of the flat rows this transcription takes
    (pred video, segments, scores, labels, gt video, segments, labels)."""
    from salad_lightning.metrics.functional import Instances

    pv, ps, scores, pl, gv, gs, gl = flat
    return Instances(pv, ps, pl, scores), Instances(gv, gs, gl)
