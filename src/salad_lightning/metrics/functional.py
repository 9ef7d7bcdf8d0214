"""The official ActivityNet temporal-detection protocol (docs/method.md §6) on numpy arrays.

Everything here is numpy only: `python -m salad_lightning.evaluate` imports this
module and must not pay for importing torch.

Protocol, per class and per tIoU threshold (activitynet/ActivityNet,
``Evaluation/eval_detection.py``): predictions are taken in decreasing score
order; each one tries the ground truths of its class in its video in decreasing
tIoU order, and the first one not yet matched with ``tIoU >= threshold`` makes it a
true positive, otherwise it is a false positive. AP is the VOC all-point
interpolated area under the precision envelope, with ``npos`` = the number of
ground truths of the class (duplicates included). mAP is the mean over the classes
present in the ground truth.

Rules the official code leaves to numpy's sort, fixed here:

- equal scores: lower video key first, then the prediction's position among the
  rows of its video (so the result does not depend on how rows were split
  across processes);
- equal tIoUs: the ground truth listed later in its video is tried first (what
  the official code does: it reverses numpy's ascending argsort, which keeps equal
  values in index order);
- zero-length segments: the official tIoU is ``0 / 0 = NaN`` for a zero-length
  prediction against a zero-length ground truth (wherever they lie); NaN fails
  every ``tiou < threshold`` test, so the official code matches such a pair at
  every threshold and tries it first. It is kept, as tIoU = +inf. Against a
  segment of positive length a zero-length one has tIoU 0.
- segments that end before they start are taken as the official code takes them:
  the intersection is 0, so the tIoU is ``0 / (len_p + len_g)``: NaN (as above)
  when ``len_p == -len_g``, at most 0 otherwise.

Speed, with the same result: a prediction can only be a true positive through a
ground truth whose tIoU with it reaches the lowest threshold; those candidate
pairs come from a range search on ground-truth starts (`_candidate_pairs`). The
greedy matching runs as vectorised rounds of deferred acceptance, all thresholds
at once (`_greedy`), and AP is summed over the true positives only
(`_average_precision`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DetectionEvaluation",
    "Instances",
    "Matching",
    "average_precision",
    "evaluate_detections",
    "match_detections",
    "match_predictions",
    "segment_tiou",
    "video_key",
]


class DetectionEvaluation(NamedTuple):
    """Result of `evaluate_detections`.

    ``labels`` are the classes present in the ground truth (ascending); ``ap`` is
    (C, T) with one row per entry of ``labels``.
    """

    tiou_thresholds: np.ndarray
    labels: np.ndarray
    ap: np.ndarray
    mAP: np.ndarray
    average_mAP: float
    num_ground_truths: np.ndarray


def video_key(video_id: str) -> int:
    """Stable 63-bit key of a video id (BLAKE2b), usable as an int64 video index.

    The command and the torchmetrics metric both use it, so they break ties among
    equal scores in the same order.
    """
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _tiou(a0, a1, b0, b1) -> np.ndarray:
    inter = np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0)
    union = (b1 - b0) + (a1 - a0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def segment_tiou(segments_a: np.ndarray, segments_b: np.ndarray) -> np.ndarray:
    """Element-wise tIoU of (..., 2) segments, with the official formula.

    ``union = len_a + len_b - intersection``; a zero-length segment against a
    zero-length segment gives NaN, as in the official code.
    """
    a = np.asarray(segments_a, dtype=np.float64)
    b = np.asarray(segments_b, dtype=np.float64)
    return _tiou(a[..., 0], a[..., 1], b[..., 0], b[..., 1])


@dataclass(frozen=True)
class Instances:
    """Action instances as flat rows: predictions (with ``scores``) or ground truth.

    ``video`` (N,) int video index or key (`video_key`); ``segments`` (N, 2) start
    and end in any unit (seconds in this project); ``labels`` (N,) int class index; ``scores`` (N,) confidences,
    None for ground truth. Any array-likes; the functions that take instances check
    them and name the field at fault (``pred.scores``, ``gt.labels``).
    """

    video: Any
    segments: Any
    labels: Any
    scores: Any = None


def _check_rows(
    name: str, rows: Instances, *, scored: bool, n_videos: int | None = None
) -> Instances:
    """``rows`` as numpy arrays (int64 video and labels, float64 (N, 2) segments and
    scores), checked; ``scored``: scores required (predictions) or refused (ground
    truth); ``n_videos``: video must index a table of that many videos."""
    if not isinstance(rows, Instances):
        raise TypeError(f"{name}: expected Instances, got {type(rows).__name__}")
    video = np.asarray(rows.video)
    segments = np.asarray(rows.segments, dtype=np.float64)
    labels = np.asarray(rows.labels)
    n = len(video)
    if video.ndim != 1 or (n and not np.issubdtype(video.dtype, np.integer)):
        raise ValueError(
            f"{name}.video: expected a 1-D integer array, got {video.dtype} {video.shape}"
        )
    if n_videos is not None and n and (video.min() < 0 or video.max() >= n_videos):
        raise ValueError(
            f"{name}.video: expected indices into video_duration (0..{n_videos - 1}), "
            f"found {video.min()}..{video.max()}"
        )
    if segments.size == 0:
        segments = segments.reshape(0, 2)
    if segments.shape != (n, 2):
        raise ValueError(f"{name}.segments: expected shape ({n}, 2), got {segments.shape}")
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{name}.labels: expected {n} integers, got {labels.dtype} {labels.shape}")
    if not np.isfinite(segments).all():
        raise ValueError(f"{name}.segments: every start and end must be finite")
    scores = None
    if scored:
        if rows.scores is None:
            raise ValueError(f"{name}.scores: expected {n} scores, got None")
        scores = np.asarray(rows.scores, dtype=np.float64)
        if scores.shape != (n,):
            raise ValueError(f"{name}.scores: expected shape ({n},), got {scores.shape}")
        if not np.isfinite(scores).all():
            raise ValueError(f"{name}.scores: every score must be finite")
    elif rows.scores is not None:
        raise ValueError(f"{name}.scores: ground truth has no scores; expected None")
    return Instances(video.astype(np.int64), segments, labels.astype(np.int64), scores)


def _columns(pred: Instances, gt: Instances) -> tuple[np.ndarray, ...]:
    """`_match`'s first nine arguments, from checked instances."""
    p0, p1 = (np.ascontiguousarray(pred.segments[:, i]) for i in (0, 1))
    g0, g1 = (np.ascontiguousarray(gt.segments[:, i]) for i in (0, 1))
    return pred.video, p0, p1, pred.scores, pred.labels, gt.video, g0, g1, gt.labels


def _check_thresholds(tiou_thresholds: Sequence[float]) -> np.ndarray:
    thr = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 0 or not np.all((thr > 0) & (thr <= 1)):
        raise ValueError(f"tiou_thresholds: expected values in (0, 1], got {thr.tolist()}")
    return thr


def _dense(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted, unique ``universe``; -1 where absent."""
    if len(universe) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    top = int(universe[-1])
    if universe[0] >= 0 and top < 1 << 22:  # small non-negative ints: a lookup table
        table = np.full(top + 3, -1, dtype=np.int64)
        table[universe + 1] = np.arange(len(universe))
        return table[np.clip(values, -1, top + 1) + 1]
    pos = np.minimum(np.searchsorted(universe, values), len(universe) - 1)
    return np.where(universe[pos] == values, pos, -1)


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) for every position in the ranges ``[lo[i], hi[i])``."""
    counts = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), counts)
    first = np.cumsum(counts) - counts
    return owner, lo[owner] + np.arange(len(owner)) - first[owner]


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """For each element of ``sorted_keys``, the index where its run of equal keys starts."""
    new_run = np.ones(len(sorted_keys), dtype=bool)
    new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(new_run)[np.cumsum(new_run) - 1]


def _ranking(video: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row order: score descending, then video key, then position (row order)."""
    order = np.argsort(-scores)  # the fastest sort; runs of equal scores are fixed below
    s = scores[order]
    tie = s[1:] == s[:-1]
    if tie.any():
        run = np.concatenate([[0], np.cumsum(~tie)])
        member = np.zeros(len(order), dtype=bool)
        member[1:] |= tie
        member[:-1] |= tie
        at = np.flatnonzero(member)
        rows = order[at]
        order[at] = rows[np.lexsort((rows, video[rows], run[at]))]
    return order


def _search_keys(group: np.ndarray, start: np.ndarray):
    """A function giving keys that sort like (group, start) pairs, for range searches.

    A float ``group * width + (start - base)`` when that stays far below 2**52
    (rounding is monotone and groups stay apart, so range queries lose nothing),
    else a complex number, which numpy orders lexicographically.
    """
    base = float(start.min())
    span = float(start.max()) - base
    width = span + 1.0
    if (int(group.max()) + 1) * width < 2.0**50:
        return lambda g, x: g * width + np.clip(x - base, 0.0, span)
    return lambda g, x: g + 1j * x


def _degenerate_pairs(p_gid, p_len, g_gid, g_len) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) pairs of one (video, class) group with ``len_p == -len_g`` and one of
    the two lengths <= 0: the pairs whose official tIoU is 0 / 0 = NaN."""
    out_p, out_g = [], []
    # a non-negative prediction against a gt of length <= 0, then the converse
    for p_sel, g_sel, p_sign in (
        (np.flatnonzero((p_gid >= 0) & (p_len >= 0)), np.flatnonzero(g_len <= 0), 1.0),
        (np.flatnonzero((p_gid >= 0) & (p_len < 0)), np.flatnonzero(g_len > 0), -1.0),
    ):
        if not (len(p_sel) and len(g_sel)):
            continue
        # key (group, |length|): complex numbers sort lexicographically
        g_key = g_gid[g_sel] + 1j * (-p_sign * g_len[g_sel])
        g_sel = g_sel[np.argsort(g_key, kind="stable")]
        g_key = np.sort(g_key, kind="stable")
        p_key = p_gid[p_sel] + 1j * (p_sign * p_len[p_sel])
        lo = np.searchsorted(g_key, p_key, side="left")
        hi = np.searchsorted(g_key, p_key, side="right")
        owner, at = _expand(lo, hi)
        out_p.append(p_sel[owner])
        out_g.append(g_sel[at])
    if not out_p:
        none = np.zeros(0, dtype=np.int64)
        return none, none
    return np.concatenate(out_p), np.concatenate(out_g)


def _candidate_pairs(pv, p0, p1, p_class, gv, g0, g1, g_class, t_min):
    """Pairs (pred, gt, tIoU) of one video and class with tIoU >= t_min (or NaN).

    Sorted by prediction, then in the order the prediction tries them: tIoU
    descending (NaN as +inf), the later gt first among equal tIoUs.
    """
    videos = np.unique(gv)
    g_video = np.searchsorted(videos, gv)
    n_class = int(g_class.max()) + 1
    groups, g_gid = np.unique(g_video * n_class + g_class, return_inverse=True)
    # (video, class) -> group id; the extra last row and column (-1) catch
    # predictions of a video or class absent from the ground truth.
    group_of = np.full((len(videos) + 1, n_class + 1), -1, dtype=np.int64)
    group_of[g_video, g_class] = g_gid
    p_gid = group_of[_dense(pv, videos), p_class]
    p_len, g_len = p1 - p0, g1 - g0

    # Positive lengths. tIoU >= t needs hull <= length / t and, when the gt starts
    # inside the prediction, end - gt_start >= t * length: the gt starts in
    # [end - length / t, end - t * length]. The range is searched with a margin and
    # the exact tIoU test follows. A group whose longest gt is shorter than
    # t * length has no candidate (tIoU <= shorter / longer).
    g_pos = np.flatnonzero(g_len > 0)
    by_start = g_pos[np.lexsort((g0[g_pos], g_gid[g_pos]))]
    key = _search_keys(g_gid, g0)
    keys = key(g_gid[by_start], g0[by_start])
    longest = np.zeros(len(groups))
    np.maximum.at(longest, g_gid, g_len)
    pos = np.flatnonzero((p_gid >= 0) & (p_len > 0))
    gid, end, length = p_gid[pos], p1[pos], p_len[pos]
    slack = 1e-9 * (1 + np.abs(end))
    lo = np.searchsorted(keys, key(gid, end - length / t_min * (1 + 1e-6) - slack), side="left")
    hi = np.searchsorted(keys, key(gid, end - length * t_min * (1 - 1e-6) + slack), side="right")
    hi = np.where(longest[gid] >= length * t_min * (1 - 1e-6), hi, lo)
    owner, at = _expand(lo, hi)
    pp, pg = pos[owner], by_start[at]

    # Degenerate pairs: where either length is <= 0 the intersection is 0, so the
    # official tIoU is 0 / (len_p + len_g): NaN (official quirk: matched at every
    # threshold, tried first) exactly when len_p == -len_g, else <= 0. That covers a
    # zero-length prediction on a zero-length gt anywhere in the video, and the rare
    # segment that ends before it starts.
    extra = _degenerate_pairs(p_gid, p_len, g_gid, g_len)
    has_degenerate = len(extra[0]) > 0
    if has_degenerate:
        pp, pg = np.concatenate([pp, extra[0]]), np.concatenate([pg, extra[1]])

    tiou = _tiou(p0[pp], p1[pp], g0[pg], g1[pg])
    nan = np.isnan(tiou)
    keep = nan | (tiou >= t_min)
    tiou[nan] = np.inf
    pp, pg, tiou = pp[keep], pg[keep], tiou[keep]
    if has_degenerate:
        order = np.lexsort((-pg, -tiou, pp))
        return pp[order], pg[order], tiou[order]
    # Already grouped by prediction: sort each row of candidates in a padded
    # (prediction, candidate) table, on the complex key -tIoU + i * -gt.
    count = np.bincount(pp, minlength=len(pv))
    several = np.flatnonzero(count[pp] > 1)
    if len(several):
        first = several[_run_starts(pp[several])]
        col = several - first
        row = np.cumsum(col == 0) - 1
        table = np.full((row[-1] + 1, int(col.max()) + 1), np.inf + 0j)
        table[row, col] = -tiou[several] - 1j * pg[several]
        perm = np.argsort(table, axis=1)
        src = first + perm[row, col]
        pg[several], tiou[several] = pg[src], tiou[src]
    return pp, pg, tiou


def _greedy(n_gt, pp, pg, tiou, grank, thr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives (threshold index, prediction, ground truth) of the official greedy
    matching.

    Taking predictions one by one in rank order, each grabbing its first free
    candidate, is serial dictatorship; with one priority order shared by every
    ground truth (the global rank) its outcome is the one of deferred acceptance,
    which runs in vectorised rounds: every unmatched prediction proposes to its
    next candidate, each ground truth keeps the best-ranked proposer it has seen,
    the others move on. All thresholds run together, keyed by (threshold, gt).
    """
    n_thr = len(thr)
    count = np.bincount(pp, minlength=len(grank))
    first = np.cumsum(count) - count
    active = np.flatnonzero(count)
    # One entry per (threshold, prediction) whose best candidate reaches the threshold.
    e_thr, e_active = np.nonzero(tiou[first[active]][None, :] >= thr[:, None])
    e_pred = active[e_active]
    e_pos = first[e_pred]
    e_end = e_pos + count[e_pred]
    e_rank = grank[e_pred]
    e_cut = thr[e_thr]

    holder_rank = np.full(n_thr * n_gt, np.iinfo(np.int64).max, dtype=np.int64)
    holder = np.full(n_thr * n_gt, -1, dtype=np.int64)
    proposing = np.arange(len(e_pred))
    while len(proposing):
        key = e_thr[proposing] * n_gt + pg[e_pos[proposing]]
        before = holder[key]
        rank = e_rank[proposing]
        np.minimum.at(holder_rank, key, rank)
        won = holder_rank[key] == rank
        holder[key[won]] = proposing[won]
        displaced = before[won]
        rejected = np.concatenate([proposing[~won], displaced[displaced >= 0]])
        e_pos[rejected] += 1
        rejected = rejected[e_pos[rejected] < e_end[rejected]]
        proposing = rejected[tiou[e_pos[rejected]] >= e_cut[rejected]]
    taken = np.flatnonzero(holder >= 0)
    held = holder[taken]
    return e_thr[held], e_pred[held], taken % n_gt


def _match(pv, p0, p1, pscore, pl, gv, g0, g1, gl, thr):
    """True positives as (threshold index, prediction, ground truth) lists, and the ranking."""
    order = _ranking(pv, pscore)
    if len(gv) == 0 or len(pv) == 0:
        none = np.zeros(0, dtype=np.int64)
        return none, none, none, order
    labels = np.unique(gl)
    grank = np.empty(len(order), dtype=np.int64)
    grank[order] = np.arange(len(order))
    pairs = _candidate_pairs(
        pv, p0, p1, _dense(pl, labels), gv, g0, g1, _dense(gl, labels), thr.min()
    )
    return *_greedy(len(gv), *pairs, grank, thr), order


def _average_precision(tp_thr, tp_pred, order, p_class, npos, n_thr) -> np.ndarray:
    """(C, T) VOC all-point interpolated AP, summed over the true positives only.

    Recall changes only at a TP, and the precision envelope at a TP is the largest
    precision at the same or a later TP of the class (precision only rises at a
    TP), so the FPs only count in each TP's rank.
    """
    n_class = len(npos)
    ranked = order[p_class[order] >= 0]
    key = p_class[ranked].astype(np.int16 if n_class < 1 << 15 else np.int64)
    ranked = ranked[np.argsort(key, kind="stable")]
    rank = np.zeros(len(p_class), dtype=np.int64)
    rank[ranked] = np.arange(len(ranked))
    class_start = np.concatenate([[0], np.cumsum(np.bincount(p_class[ranked], minlength=n_class))])

    c = p_class[tp_pred]
    seg = tp_thr * n_class + c
    k = rank[tp_pred] - class_start[c] + 1  # 1-based rank of the TP in its class
    by_seg = np.argsort(seg * (len(p_class) + 1) + k)
    seg, c, k, t = seg[by_seg], c[by_seg], k[by_seg], tp_thr[by_seg]
    tp_cum = np.arange(len(seg)) - _run_starts(seg) + 1
    precision = tp_cum / k
    recall_step = tp_cum / npos[c] - (tp_cum - 1) / npos[c]
    # Suffix maximum within each segment: ranks of (-segment, precision) are
    # smaller in every later segment, so one reversed running max stays inside.
    by_value = np.lexsort((precision, -seg))
    value_rank = np.empty(len(seg), dtype=np.int64)
    value_rank[by_value] = np.arange(len(seg))
    envelope = precision[by_value[np.maximum.accumulate(value_rank[::-1])[::-1]]]
    ap = np.bincount(c * n_thr + t, weights=recall_step * envelope, minlength=n_class * n_thr)
    return ap.reshape(n_class, n_thr)


class Matching(NamedTuple):
    """The official greedy matching of predictions to ground truth at each threshold.

    ``tp`` (T, N_pred): whether each prediction (input order) is a true positive at
    each threshold; ``gt`` (T, N_pred): the ground-truth row it took there, -1 for a
    false positive; ``order`` (N_pred,): the predictions in the order the matching took
    them (score descending, ties as in the module docstring).
    """

    tiou_thresholds: np.ndarray
    tp: np.ndarray
    gt: np.ndarray
    order: np.ndarray

    def at(self, tiou_thresholds: Sequence[float]) -> Matching:
        """The rows of these thresholds, which must be among the matched ones."""
        wanted = _check_thresholds(tiou_thresholds)
        rows = [
            np.flatnonzero(np.isclose(self.tiou_thresholds, t, rtol=0, atol=1e-9)) for t in wanted
        ]
        missing = [float(t) for t, r in zip(wanted, rows) if not len(r)]
        if missing:
            raise ValueError(
                f"tiou_thresholds: {missing} were not matched; matched: "
                f"{self.tiou_thresholds.tolist()}"
            )
        index = np.array([r[0] for r in rows], dtype=np.int64)
        return self._replace(
            tiou_thresholds=self.tiou_thresholds[index], tp=self.tp[index], gt=self.gt[index]
        )


def match_detections(
    pred: Instances, gt: Instances, tiou_thresholds: Sequence[float] = (0.5,)
) -> Matching:
    """The official matching (`Matching`) of ``pred`` (with scores) to ``gt`` (without),
    at each threshold. Ties follow the module docstring. Fastest when the rows of a video
    are contiguous."""
    pred, gt = _check_rows("pred", pred, scored=True), _check_rows("gt", gt, scored=False)
    thr = _check_thresholds(tiou_thresholds)
    tp_thr, tp_pred, tp_gt, order = _match(*_columns(pred, gt), thr)
    tp = np.zeros((len(thr), len(pred.video)), dtype=bool)
    tp[tp_thr, tp_pred] = True
    taken = np.full((len(thr), len(pred.video)), -1, dtype=np.int64)
    taken[tp_thr, tp_pred] = tp_gt
    return Matching(thr, tp, taken, order)


def match_predictions(
    pred: Instances, gt: Instances, tiou_thresholds: Sequence[float] = (0.5,)
) -> np.ndarray:
    """True-positive flags (T, N_pred) of each prediction at each threshold, in input order
    (`match_detections`' ``tp``)."""
    return match_detections(pred, gt, tiou_thresholds).tp


def average_precision(pred: Instances, gt: Instances, matching: Matching) -> DetectionEvaluation:
    """Per-class AP, mAP per threshold and average mAP of a matching (no matching again).

    ``matching`` is `match_detections` of these rows, or of rows whose classes these
    labels refine (e.g. (video, class) pairs as classes, for a per-video AP: the
    matching never pairs rows of different videos or classes). Classes are those present
    in ``gt.labels``; a prediction of another class is a false positive of a class
    outside the mean, so it changes nothing. With no ground truth at all, mAP is NaN.
    """
    pred, gt = _check_rows("pred", pred, scored=True), _check_rows("gt", gt, scored=False)
    if matching.tp.shape != (len(matching.tiou_thresholds), len(pred.video)) or len(
        matching.order
    ) != len(pred.video):
        raise ValueError(
            f"matching: expected flags of shape ({len(matching.tiou_thresholds)}, "
            f"{len(pred.video)}), got {matching.tp.shape}"
        )
    thr = matching.tiou_thresholds
    labels = np.unique(gt.labels)
    p_class = _dense(pred.labels, labels)
    tp_thr, tp_pred = np.nonzero(matching.tp)
    npos = np.bincount(_dense(gt.labels, labels), minlength=len(labels))
    ap = _average_precision(tp_thr, tp_pred, matching.order, p_class, npos, len(thr))
    mean_ap = ap.mean(axis=0) if len(labels) else np.full(len(thr), np.nan)
    return DetectionEvaluation(
        tiou_thresholds=thr,
        labels=labels,
        ap=ap,
        mAP=mean_ap,
        average_mAP=float(mean_ap.mean()),
        num_ground_truths=npos,
    )


def evaluate_detections(
    pred: Instances,
    gt: Instances,
    tiou_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
) -> DetectionEvaluation:
    """Per-class AP, mAP per threshold and average mAP (official protocol): the matching
    (`match_detections`) and its AP (`average_precision`)."""
    return average_precision(pred, gt, match_detections(pred, gt, tiou_thresholds))
