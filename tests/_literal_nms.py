"""Literal loop transcriptions used as test references (plain Python floats and lists).

Independent of the vectorised code in ``salad_lightning.models``: no
torch, no numpy, one proposal at a time. Also the THUMOS14-like proposals that the
soft-NMS tests and ``experiments/benchmarks/postprocess.py`` share.
"""

from __future__ import annotations

import math
import random


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


def thumos_like_proposals(n, classes, mode="even", seed=0):
    """Proposals of one THUMOS14-like video, one per step: ``(segments, scores, labels)``.

    Background steps predict short segments around themselves (up to 50 steps each side)
    with low scores; ``max(1, n // 150)`` actions of 10-100 steps each make a peak: their
    steps predict the action's boundaries with noise, with scores up to 0.95 highest at
    its centre. Labels: ``mode`` "even" (every class alike), "dominant" (90% one class)
    or "two" (two classes); an action's steps take its class 90% of the time.
    """
    rng = random.Random(seed)
    if mode == "even":
        weights = [1.0] * classes
    elif mode == "dominant":
        weights = [0.9] + [0.1 / (classes - 1)] * (classes - 1)
    elif mode == "two":
        weights = [0.5, 0.5] + [0.0] * (classes - 2)
    else:
        raise ValueError(mode)

    def draw_label():
        return rng.choices(range(classes), weights)[0]

    segments, scores, labels = [], [], []
    for t in range(n):
        segments.append([t - rng.uniform(1, 50), t + rng.uniform(1, 50)])
        scores.append(rng.betavariate(1.0, 15.0))
        labels.append(draw_label())
    for _ in range(max(1, n // 150)):
        length = rng.uniform(10, 100)
        centre = rng.uniform(0, n)
        start, end = centre - length / 2, centre + length / 2
        peak = rng.uniform(0.5, 0.95)
        label = draw_label()
        for t in range(max(0, math.ceil(start)), min(n, math.floor(end) + 1)):
            s = start + rng.gauss(0, 0.1 * length)
            e = end + rng.gauss(0, 0.1 * length)
            segments[t] = [s, max(e, s + 0.5)]
            profile = 1 - abs(t - centre) / (length / 2)
            score = peak * (0.3 + 0.7 * profile) + rng.gauss(0, 0.03)
            scores[t] = min(1.0, max(0.0, score))
            if rng.random() < 0.9:
                labels[t] = label
    return segments, scores, labels
