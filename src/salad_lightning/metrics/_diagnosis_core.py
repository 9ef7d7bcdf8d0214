"""The computations behind `salad_lightning.metrics.diagnosis` (numpy only).

Flat rows, no loop over predictions: which ground truth each true positive took, the
false-positive types, the normalized AP, and DETAD's three analyses on top of them.
The rules are written down in the docstring of `salad_lightning.metrics.diagnosis`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from salad_lightning.metrics.functional import _expand, _run_starts, segment_tiou

DOUBLE, WRONG_LABEL, LOCALIZATION, CONFUSION, BACKGROUND = 1, 2, 3, 4, 5


def within_class_cumsum(flags: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Running count of ``flags`` (..., S) along rows sorted by class, restarting at each
    class; ``start``: for each row, the index of its class's first row."""
    total = np.cumsum(flags, axis=-1)
    before = np.where(start > 0, total[..., np.maximum(start - 1, 0)], 0)
    return total - before


def _error_types(tp, pv, ps, pc, gv, gs, gc, thr, min_tiou: float) -> np.ndarray:
    """(T, S) type of each prediction: 0 true positive, else DOUBLE ... BACKGROUND.

    Typed by the ground truth of the video with the highest tIoU, any label; on equal
    tIoUs the first in row order (numpy's argmax, as DETAD).
    """
    g_order = np.argsort(gv, kind="stable")
    g_sorted = gv[g_order]
    owner, at = _expand(
        np.searchsorted(g_sorted, pv, "left"), np.searchsorted(g_sorted, pv, "right")
    )
    gt = g_order[at]  # pairs in (prediction, ground-truth row) order
    tiou = segment_tiou(ps[owner], gs[gt])
    best = np.full(len(pv), -np.inf)
    with np.errstate(invalid="ignore"):  # a 0/0 tIoU wins, as in DETAD's max: background
        np.maximum.at(best, owner, tiou)
    top = np.flatnonzero(tiou == best[owner])
    top = top[np.unique(owner[top], return_index=True)[1]]  # first of each prediction
    same = np.zeros(len(pv), dtype=bool)
    same[owner[top]] = gc[gt[top]] == pc[owner[top]]
    hit = best[None, :] >= thr[:, None]
    near = best >= min_tiou
    kind = np.where(
        hit,
        np.where(same, DOUBLE, WRONG_LABEL),
        np.where(near, np.where(same, LOCALIZATION, CONFUSION), BACKGROUND),
    )
    return np.where(tp, 0, kind).astype(np.int8)


def _suffix_max(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """For each element, the largest value at or after it within its run of ``group``.

    Ranks sorted by (group descending, value) grow from one group to the previous
    one, so a reversed running maximum of the ranks never leaves its group.
    """
    by_value = np.lexsort((values, -group))
    rank = np.empty(len(values), dtype=np.int64)
    rank[by_value] = np.arange(len(values))
    return values[by_value[np.maximum.accumulate(rank[::-1])[::-1]]]


def _normalized_ap(t, c, kept_upto, npos, n_avg: float, shape: tuple[int, int]):
    """(T, C) AP_N and each true positive's normalized precision.

    One entry per kept true positive, sorted by (threshold, class, rank);
    ``kept_upto``: the kept predictions of its class ranked at or above it. Recall
    only grows at a true positive and precision only rises there, so the
    interpolated area is a sum over the true positives of the best precision at or
    after them.
    """
    n_thr, n_cls = shape
    group = t * n_cls + c
    tp_cum = np.arange(1, len(group) + 1) - _run_starts(group)
    recall = tp_cum / npos[c]
    fp_cum = kept_upto - tp_cum
    precision = recall * n_avg / (recall * n_avg + fp_cum)
    envelope = _suffix_max(precision, group)
    recall_step = recall - (tp_cum - 1) / npos[c]
    ap = np.bincount(group, weights=envelope * recall_step, minlength=n_thr * n_cls)
    return ap.reshape(n_thr, n_cls), precision


class Matches(NamedTuple):
    """The matching, read the way the analyses need it.

    ``t``, ``p``, ``g``: threshold, prediction and ground truth of each true positive,
    sorted by (threshold, class, rank). Per prediction: ``pclass``, ``pos`` (rank
    within its class), ``index`` (its row in ``by_class``, the predictions in (class,
    rank) order) and ``start`` (per row of ``by_class``, where its class begins).
    """

    tp: np.ndarray
    t: np.ndarray
    p: np.ndarray
    g: np.ndarray
    pclass: np.ndarray
    pos: np.ndarray
    index: np.ndarray
    by_class: np.ndarray
    start: np.ndarray
    npos: np.ndarray
    n_avg: float

    def ap(self, mask: np.ndarray, kept_upto: np.ndarray, npos: np.ndarray | None = None):
        """AP_N (T, C) and precisions of the true positives in ``mask`` (see `_normalized_ap`)."""
        npos = self.npos if npos is None else npos
        shape = (len(self.tp), len(self.npos))
        return _normalized_ap(
            self.t[mask], self.pclass[self.p[mask]], kept_upto, npos, self.n_avg, shape
        )


def match(pv, score, pc, gc, tp, taken) -> Matches:
    """The analyses' view of the official matching of predictions (video ``pv``, class
    ``pc``, dense 0..C-1) to ground truths of class ``gc``: ``tp`` (T, N) its
    true-positive flags and ``taken`` (T, N) the ground-truth row of each true positive
    (`functional.Matching`)."""
    n_cls = len(np.bincount(gc))
    npos = np.bincount(gc, minlength=n_cls)
    order = np.lexsort((np.arange(len(pv)), pv, -score))  # the matching's rank order
    by_class = order[np.argsort(pc[order], kind="stable")]
    index = np.empty(len(pv), dtype=np.int64)
    index[by_class] = np.arange(len(pv))
    size = np.bincount(pc, minlength=n_cls)
    pos = index - (np.cumsum(size) - size)[pc]
    t, p = np.nonzero(tp)
    g = taken[t, p]
    sort = np.lexsort((pos[p], pc[p], t))
    start = index[by_class] - pos[by_class]
    return Matches(
        tp, t[sort], p[sort], g[sort], pc, pos, index, by_class, start, npos, len(gc) / n_cls
    )


def false_positive_analysis(
    m: Matches, pv, ps, gv, gs, gc, thr, limit_factor: int, min_tiou: float
):
    """(profile (limit_factor, 6), top average-mAP_N, gains (5,), selected rows, types (T, S)).

    On each class's top ``limit_factor * G_j`` predictions (the selected rows, in
    (class, rank) order).
    """
    n_thr, n_types = len(thr), 6
    top = m.pos < limit_factor * m.npos[m.pclass]
    sel = m.by_class[top[m.by_class]]
    sc = m.pclass[sel]
    types = _error_types(m.tp[:, sel], pv[sel], ps[sel], sc, gv, gs, gc, thr, min_tiou)
    group = m.pos[sel] // m.npos[sc]
    in_group = np.bincount(group, minlength=limit_factor)
    counts = np.bincount((group * n_types + types).ravel(), minlength=limit_factor * n_types)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = counts.reshape(limit_factor, n_types) / n_thr / in_group[:, None]

    mine = top[m.p]
    rank_upto = m.pos[m.p[mine]] + 1.0
    ap_top = m.ap(mine, rank_upto)[0].mean()
    sel_index = np.empty(len(m.pclass), dtype=np.int64)
    sel_index[sel] = np.arange(len(sel))
    sel_start = np.searchsorted(sc, sc, "left")
    gain = np.empty(n_types - 1)
    for k in range(1, n_types):
        # Removing a type's predictions (false positives only) lowers the FP counts.
        removed = within_class_cumsum(types == k, sel_start)
        kept_upto = rank_upto - removed[m.t[mine], sel_index[m.p[mine]]]
        gain[k - 1] = m.ap(mine, kept_upto)[0].mean() - ap_top
    return profile, float(ap_top), gain, sel, types


def sensitivity(m: Matches, gc: np.ndarray, gbin: np.ndarray, n_bins: int) -> np.ndarray:
    """Average-mAP_N of each bin (``gbin``: each ground truth's bin, -1 for none); NaN if empty."""
    n_cls = len(m.npos)
    # A prediction counts in bin b when every ground truth it matched is in b.
    lo = np.full(len(m.pclass), n_bins, dtype=np.int64)
    hi = np.full(len(m.pclass), -1, dtype=np.int64)
    np.minimum.at(lo, m.p, gbin[m.g])
    np.maximum.at(hi, m.p, gbin[m.g])
    pred_bin = np.where(lo == hi, lo, -1)
    never_matched = lo == n_bins
    inside = gbin >= 0
    npos = np.zeros((n_bins, n_cls), dtype=np.int64)
    np.add.at(npos, (gbin[inside], gc[inside]), 1)
    class_ap = np.zeros((n_bins, n_cls))
    for b in range(n_bins):
        keep = (pred_bin == b) | never_matched
        mine = pred_bin[m.p] == b
        kept_upto = within_class_cumsum(keep[m.by_class], m.start)[m.index[m.p[mine]]]
        class_ap[b] = m.ap(mine, kept_upto, np.maximum(npos[b], 1))[0].mean(axis=0)
    has = npos > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(has, class_ap, 0.0).sum(axis=1) / has.sum(axis=1)


def unmatched_ground_truths(m: Matches, precision: np.ndarray, min_precision: float):
    """(T, G) True where no true positive with a normalized precision (``precision``, one
    per true positive of ``m``) above ``min_precision`` took the ground truth."""
    counted = precision > min_precision
    unmatched = np.ones((len(m.tp), int(m.npos.sum())), dtype=bool)
    unmatched[m.t[counted], m.g[counted]] = False
    return unmatched


def false_negative_rate(unmatched: np.ndarray, gbin: np.ndarray, n_bins: int) -> np.ndarray:
    """Share of each bin's ground truths left unmatched, averaged over thresholds; NaN if empty."""
    g = np.nonzero(unmatched)[1]
    g = g[gbin[g] >= 0]
    missed = np.bincount(gbin[g], minlength=n_bins) / len(unmatched)
    with np.errstate(invalid="ignore", divide="ignore"):
        return missed / np.bincount(gbin[gbin >= 0], minlength=n_bins)
