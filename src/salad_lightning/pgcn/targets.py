"""P-GCN's training samples: labelling a video's proposals, sampling 8 per video, targets.

Follows P-GCN's ``pgcn_dataset.py`` (``PGCNInstance``, ``PGCNVideoRecord``,
``_video_centric_sampling``, ``_load_prop_data``, ``_compute_regresssion_stats``) and
``ops/detection_metrics.py::name_proposal``; defaults are its THUMOS14 settings
(``data/dataset_cfg.yaml``). Segments in any one unit per video (seconds or index
units); ``video_length`` in the same unit, from the video's start at 0.

**Each proposal's ground truth**: the ground truth with the highest tIoU, the first one
listed among equals, provided the tIoU is > 0 (otherwise none: best tIoU 0, label
background). *Overlap-with-self* is the intersection with that ground truth over the
proposal's own length (P-GCN's ``overlap_over_b``); *coverage* is the proposal's length
over the video's.

**Kinds** (P-GCN's ``prop_type``), per proposal:

- foreground (0): ``best tIoU > 0.7`` (the code's test is strict: a proposal at
  exactly 0.7 is not foreground); the ground truths themselves are added as foreground
  (P-GCN's ``gt_as_fg``);
- incomplete (1): ``best tIoU < 0.3`` and ``overlap-with-self > 0.01``;
- background (2): not incomplete, ``best tIoU < 0.01`` and ``coverage > 0.02``;
- the rest (``0.3 <= tIoU <= 0.7``, and proposals below 0.3 that are neither
  incomplete nor background) is not used for training.

P-GCN's reader leaves out proposals and ground truths with ``end <= start`` or that
start at or after the video's end, and cuts their ends at the video's end; the same
here. As in P-GCN, the labelling quantities (best tIoU, overlap-with-self, coverage)
come from the segments before the cut (P-GCN computes them when it writes its proposal
list), while the pool's segments and the regression targets use the cut ones, against
the ground truth of highest tIoU after the cut (P-GCN looks it up again there). The two
differ only for segments that overflow the video. P-GCN labels against every annotated
ground truth; the ones its reader leaves out (zero length, or starting after the
video's end) are left out of the labelling here too.

**The pool** (:class:`TrainingPool`) is P-GCN's ``video_pool``: foreground (proposals in
input order, then the ground truths), incomplete, background. The training graph is
built over the pool, not over all proposals.

**Sampling** (:func:`sample_centres`): 8 per video in the ratio 1 : 6 : 1 (P-GCN:
``int(8 * 1/8)`` foreground, ``int(8 * 1/8)`` background, the rest incomplete), in that
slot order; each slot draws uniformly, with replacement, from its kind; a slot whose kind
the video lacks draws from the foreground and is then a foreground sample (P-GCN's
code). The completeness loss still takes slots 1..6 as its negatives, whatever they hold
(``pgcn/loss.py``). P-GCN draws each centre just before its neighbourhood; here a
video's centres are drawn first, in one call, then their neighbourhoods
(``pgcn/graph.py::sample_neighbourhoods``): the draws are independent, so the samples
have P-GCN's distribution.

**Regression targets** (foreground only): ``((c_gt - c) / L, log(L_gt / L))`` with the
best ground truth (P-GCN's ``compute_regression_targets``); P-GCN's lengths count frames
inclusively (``end - start + 1``), lengths here are ``end - start``. They are normalised
by the mean and the (population) standard deviation over the training set's foreground
*proposals*, the ground truths left out (P-GCN's ``get_fg(..., False)`` in
``_compute_regresssion_stats``): :class:`RegressionStats`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from salad_lightning.pgcn.graph import segment_array

__all__ = [
    "BACKGROUND",
    "FOREGROUND",
    "INCOMPLETE",
    "RegressionStats",
    "TrainingPool",
    "best_ground_truth",
    "label_proposals",
    "regression_targets",
    "sample_centres",
    "sample_targets",
    "samples_per_kind",
]

FOREGROUND, INCOMPLETE, BACKGROUND = 0, 1, 2  # P-GCN's prop_type

FG_IOU = 0.7  # fg_iou_thresh
INCOMPLETE_IOU = 0.3  # incomplete_iou_thresh
INCOMPLETE_OVERLAP = 0.01  # incomplete_overlap_thresh
BG_IOU = 0.01  # bg_iou_thresh
BG_COVERAGE = 0.02  # bg_coverage_thresh
PER_VIDEO = 8  # prop_per_video
RATIOS = (1, 6, 1)  # fg_ratio, incomplete_ratio, bg_ratio


def _cross_tiou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tIoU (A, B), intersection (A, B)); tIoU 0 where the segments do not overlap."""
    inter = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter = np.clip(inter, 0.0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0), inter


def best_ground_truth(
    segments: np.ndarray, gt_segments: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best tIoU (P,), its ground truth's index (P,) or -1, overlap-with-self (P,)).

    The first ground truth with the highest positive tIoU; -1, 0, 0 when none overlaps.
    Segments of positive length.
    """
    seg, gt = segment_array(segments), segment_array(gt_segments, "gt_segments")
    p = len(seg)
    if len(gt) == 0:
        return np.zeros(p), np.full(p, -1, dtype=np.int64), np.zeros(p)
    tiou, inter = _cross_tiou(seg, gt)
    best = np.argmax(tiou, axis=1)  # first maximum
    rows = np.arange(p)
    best_iou = tiou[rows, best]
    hit = best_iou > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(hit, inter[rows, best] / (seg[:, 1] - seg[:, 0]), 0.0)
    return np.where(hit, best_iou, 0.0), np.where(hit, best, -1), overlap


def regression_targets(segments: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(P, 2) raw targets: centre shift over the length, log of the length ratio."""
    seg, tgt = segment_array(segments), segment_array(targets, "targets")
    length, tlength = seg[:, 1] - seg[:, 0], tgt[:, 1] - tgt[:, 0]
    shift = (0.5 * (tgt[:, 0] + tgt[:, 1]) - 0.5 * (seg[:, 0] + seg[:, 1])) / length
    return np.stack([shift, np.log(tlength / length)], axis=1)


@dataclass(frozen=True)
class TrainingPool:
    """One video's labelled proposals in P-GCN's pool order (fg, incomplete, bg).

    ``segments`` (Q, 2) float64 (ends cut at the video's end); ``kinds`` (Q,) int64;
    ``labels`` (Q,) int64: the class index + 1 (the network's column; 0 background);
    ``reg_targets`` (Q, 2) raw, zero except for foreground; ``is_ground_truth`` (Q,)
    bool; ``source`` (Q,) int64: the row in ``concatenate([segments, gt_segments])``
    as given; ``counts`` the sizes of the three kinds.
    """

    segments: np.ndarray
    kinds: np.ndarray
    labels: np.ndarray
    reg_targets: np.ndarray
    is_ground_truth: np.ndarray
    source: np.ndarray
    counts: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.kinds)


def _kept(seg: np.ndarray, video_length: float) -> tuple[np.ndarray, np.ndarray]:
    """P-GCN's reader: (rows kept, their segments with the end cut at the video's end)."""
    keep = np.flatnonzero((seg[:, 1] > seg[:, 0]) & (seg[:, 0] < video_length))
    cut = seg[keep].copy()
    cut[:, 1] = np.minimum(cut[:, 1], video_length)
    return keep, cut


def label_proposals(
    segments: np.ndarray,
    gt_segments: np.ndarray,
    gt_labels: np.ndarray,
    video_length: float,
    *,
    fg_iou: float = FG_IOU,
    incomplete_iou: float = INCOMPLETE_IOU,
    incomplete_overlap: float = INCOMPLETE_OVERLAP,
    bg_iou: float = BG_IOU,
    bg_coverage: float = BG_COVERAGE,
    gt_as_foreground: bool = True,
) -> TrainingPool:
    """Label one video's proposals as P-GCN does (module docstring) and build its pool.

    ``gt_labels`` are class indices 0..K-1 (the project's convention); the pool's
    labels are those + 1.
    """
    if not video_length > 0:
        raise ValueError(f"video_length must be > 0, found {video_length}")
    seg, gt = segment_array(segments), segment_array(gt_segments, "gt_segments")
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if len(gt_labels) != len(gt):
        raise ValueError(f"{len(gt)} ground truths but {len(gt_labels)} labels")
    p_rows, props = _kept(seg, video_length)
    g_rows, gts = _kept(gt, video_length)
    coverage = (seg[p_rows, 1] - seg[p_rows, 0]) / video_length
    best_iou, best, overlap = best_ground_truth(seg[p_rows], gt[g_rows])
    fg = best_iou > fg_iou
    incomplete = (best_iou < incomplete_iou) & (overlap > incomplete_overlap)
    bg = ~incomplete & (best_iou < bg_iou) & (coverage > bg_coverage)
    kept_labels = gt_labels[g_rows]
    prop_labels = np.zeros(len(props), np.int64)
    prop_labels[best >= 0] = kept_labels[best[best >= 0]] + 1

    nearest = np.argmax(_cross_tiou(props[fg], gts)[0], axis=1) if len(gts) else np.arange(0)
    fg_targets = regression_targets(props[fg], gts[nearest])
    gt_part = np.arange(len(gts)) if gt_as_foreground else np.arange(0)
    parts = [  # (segments, kind, labels, targets, is_gt, source)
        (props[fg], FOREGROUND, prop_labels[fg], fg_targets, False, p_rows[fg]),
        (
            gts[gt_part],
            FOREGROUND,
            kept_labels[gt_part] + 1,
            np.zeros((len(gt_part), 2)),
            True,
            len(seg) + g_rows[gt_part],
        ),
        (props[incomplete], INCOMPLETE, prop_labels[incomplete], None, False, p_rows[incomplete]),
        (props[bg], BACKGROUND, np.zeros(int(bg.sum()), np.int64), None, False, p_rows[bg]),
    ]
    return TrainingPool(
        segments=np.concatenate([x[0] for x in parts]).reshape(-1, 2),
        kinds=np.concatenate([np.full(len(x[0]), x[1], np.int64) for x in parts]),
        labels=np.concatenate([np.asarray(x[2], np.int64) for x in parts]),
        reg_targets=np.concatenate(
            [np.zeros((len(x[0]), 2)) if x[3] is None else x[3] for x in parts]
        ).reshape(-1, 2),
        is_ground_truth=np.concatenate([np.full(len(x[0]), x[4]) for x in parts]),
        source=np.concatenate([np.asarray(x[5], np.int64) for x in parts]),
        counts=(int(fg.sum()) + len(gt_part), int(incomplete.sum()), int(bg.sum())),
    )


def samples_per_kind(
    per_video: int = PER_VIDEO, ratios: tuple[int, int, int] = RATIOS
) -> tuple[int, int, int]:
    """(foreground, incomplete, background) samples per video, P-GCN's rounding: (1, 6, 1)."""
    total = sum(ratios)
    fg, bg = int(per_video * ratios[0] / total), int(per_video * ratios[2] / total)
    return fg, per_video - fg - bg, bg


def sample_centres(
    pool: TrainingPool,
    rng: np.random.Generator,
    *,
    per_video: int = PER_VIDEO,
    ratios: tuple[int, int, int] = RATIOS,
    video_id: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """(centres (S,) indices into the pool, kinds (S,)) of one video's S = ``per_video`` samples.

    Slots in order: foreground, incomplete, background (:func:`samples_per_kind`); one
    ``rng.integers(0, sizes)`` call draws them all. A kind the video lacks is drawn from
    the foreground, and the sample's kind is then foreground.
    """
    if pool.counts[FOREGROUND] == 0:
        raise ValueError(
            f"video {video_id!r}: no foreground proposal or ground truth to sample from "
            "(P-GCN trains only on videos with ground truth)"
        )
    per_kind = samples_per_kind(per_video, ratios)
    kinds = np.repeat(np.arange(3), per_kind)
    kinds = np.where(np.asarray(pool.counts)[kinds] > 0, kinds, FOREGROUND)
    starts = np.concatenate([[0], np.cumsum(pool.counts)[:-1]])
    offsets = rng.integers(0, np.asarray(pool.counts)[kinds])
    return starts[kinds] + offsets, kinds


@dataclass(frozen=True)
class RegressionStats:
    """Mean and standard deviation (2,) of the training set's regression targets."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_pools(cls, pools: Iterable[TrainingPool]) -> RegressionStats:
        """Over the foreground proposals of ``pools``, the ground truths left out (P-GCN)."""
        rows = [p.reg_targets[(p.kinds == FOREGROUND) & ~p.is_ground_truth] for p in pools]
        targets = np.concatenate(rows).reshape(-1, 2) if rows else np.zeros((0, 2))
        if len(targets) == 0:
            raise ValueError("no foreground proposal in the training set: no regression statistics")
        std = targets.std(axis=0)
        if not (std > 0).all():
            raise ValueError(
                f"regression targets with zero spread (std {std.tolist()}): "
                "too few foreground proposals"
            )
        return cls(mean=targets.mean(axis=0), std=std)

    def normalise(self, targets: np.ndarray) -> np.ndarray:
        return (np.asarray(targets, dtype=np.float64) - self.mean) / self.std

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        """JSON- and checkpoint-friendly (P-GCN saves them in its checkpoint)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> RegressionStats:
        return cls(mean=np.asarray(d["mean"], np.float64), std=np.asarray(d["std"], np.float64))


def sample_targets(
    pool: TrainingPool, centres: np.ndarray, kinds: np.ndarray, stats: RegressionStats
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (S,), normalised regression targets (S, 2)) of the sampled centres.

    Labels are the pool's (class + 1; 0 for background); regression targets are
    normalised for foreground samples (ground truths too: their raw target is 0) and
    zero otherwise (P-GCN's ``_load_prop_data``).
    """
    labels = np.where(kinds == BACKGROUND, 0, pool.labels[centres])
    reg = np.where((kinds == FOREGROUND)[:, None], stats.normalise(pool.reg_targets[centres]), 0.0)
    return labels, reg
