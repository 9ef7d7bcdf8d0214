"""Literal loop transcriptions used as test references (plain Python floats and lists).

Independent of the vectorised code in ``salad_lightning.models.postprocess``: no
torch, no numpy, one proposal at a time.
"""

from __future__ import annotations

import math


def literal_tiou(a, b):
    """Evaluator's tIoU: intersection / (len(a) + len(b) - intersection); 0 if union is 0."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter < 0:
        inter = 0.0
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    if union <= 0:
        return 0.0
    return inter / union


def literal_soft_nms(
    segments,
    scores,
    labels,
    method="gaussian",
    sigma=0.5,
    iou_threshold=0.5,
    min_score=0.001,
    max_segments=200,
    class_agnostic=False,
):
    """Returns a list of ``(original_index, score_when_kept)`` in pick order."""
    current = [float(s) for s in scores]
    remaining = []
    for i in range(len(current)):
        if current[i] >= min_score:
            remaining.append(i)
    kept = []
    while len(remaining) > 0:
        if max_segments is not None and len(kept) >= max_segments:
            break
        best = remaining[0]
        for i in remaining:
            if current[i] > current[best] or (current[i] == current[best] and i < best):
                best = i
        kept.append((best, current[best]))
        remaining.remove(best)
        survivors = []
        for i in remaining:
            if class_agnostic or labels[i] == labels[best]:
                iou = literal_tiou(segments[i], segments[best])
                if method == "gaussian":
                    current[i] = current[i] * math.exp(-(iou * iou) / sigma)
                elif method == "linear":
                    if iou >= iou_threshold:
                        current[i] = current[i] * (1.0 - iou)
                elif method == "hard":
                    if iou >= iou_threshold:
                        continue  # removed
                else:
                    raise ValueError(method)
            if current[i] >= min_score:
                survivors.append(i)
        remaining = survivors
    return kept


def literal_topk(scores, k):
    """Indices of the k highest scores, ties to the lower index (selection by repeated max)."""
    left = list(range(len(scores)))
    out = []
    while left and len(out) < k:
        best = left[0]
        for i in left:
            if scores[i] > scores[best]:
                best = i
        out.append(best)
        left.remove(best)
    return out
