"""P-GCN at test time: class scores, refined boundaries, the top pairs, per-class NMS.

Follows P-GCN's ``pgcn_test.py`` (one forward per proposal, each on its own sampled
neighbourhood: ``pgcn/graph.py``) and ``eval_detection_results.py``:

1. per proposal and class ``k`` (0..K-1): ``score = softmax(activity)[k + 1] x
   exp(completeness[k])`` (the background column dropped after the softmax);
2. keep the ``top_k`` (2000) (proposal, class) pairs of the video by score;
3. per class, NMS on the **unrefined** proposals (P-GCN: hard NMS, tIoU threshold 0.2
   in its config; its ``test.sh`` runs 0.35, its two-stream script 0.32);
4. refine the kept ones with the regression of their class, de-normalised with the
   training statistics: ``centre += shift x length``, ``length *= exp(log ratio)``;
   cut to the video (P-GCN clips to ``[0, 1]`` of the video's length).

Refinement is independent of NMS, so :func:`score_proposals` refines every pair up
front; :func:`detections` runs the NMS on the unrefined segments (``nms_on="proposals"``,
P-GCN's order) or on the refined ones (``"refined"``) and returns the refined segments
of the kept pairs. The NMS is this project's (``models/nms.py``); its ``hard`` method
removes at ``tIoU >= threshold`` where P-GCN's ``temporal_nms`` removes at ``>``.
Segments in any unit (the regression is relative to the proposal's length); seconds is
the natural one, with ``clip=(0, duration)``.

P-GCN's evaluation can also average the scores of several runs (its two-stream script
fuses a flow and an RGB run, weighted 1.2 : 1, with NMS at 0.32) and take an outside
classifier's scores; neither is done here.
Ties in the top-k: lower (proposal, class) position first (P-GCN: numpy's unstable sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from salad_lightning.models.nms import soft_nms_numpy
from salad_lightning.pgcn.targets import RegressionStats

__all__ = [
    "NMS_THRESHOLD",
    "TOP_K",
    "ScoredProposals",
    "class_scores",
    "detections",
    "refine_segments",
    "score_proposals",
]

TOP_K = 2000  # P-GCN's evaluation.top_k (THUMOS14)
NMS_THRESHOLD = 0.2  # P-GCN's evaluation.nms_threshold (THUMOS14 config)


@dataclass(frozen=True)
class ScoredProposals:
    """One video after scoring: ``segments`` (P, 2) the proposals as given, ``scores``
    (P, K), ``refined`` (P, K, 2) each class's refined segment, ``keep`` (P, K) the
    top-k pairs."""

    segments: np.ndarray
    scores: np.ndarray
    refined: np.ndarray
    keep: np.ndarray


def _array(x, what: str, ndim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{what}: expected {ndim} dimensions, found shape {a.shape}")
    return a


def class_scores(activity_logits: np.ndarray, completeness_logits: np.ndarray) -> np.ndarray:
    """(P, K): ``softmax(activity)[:, 1:] * exp(completeness)``."""
    act = _array(activity_logits, "activity logits", 2)
    comp = _array(completeness_logits, "completeness logits", 2)
    if act.shape != (comp.shape[0], comp.shape[1] + 1):
        raise ValueError(
            f"activity logits {act.shape} and completeness {comp.shape}: expected "
            "(P, K+1) and (P, K)"
        )
    e = np.exp(act - act.max(axis=1, keepdims=True))
    return e[:, 1:] / e.sum(axis=1, keepdims=True) * np.exp(comp)


def refine_segments(
    segments: np.ndarray,
    regression: np.ndarray,
    stats: RegressionStats,
    *,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """(P, K, 2) segments refined by the normalised ``regression`` (P, K, 2), cut to ``clip``."""
    seg = _array(segments, "segments", 2)
    reg = stats.denormalise(_array(regression, "regression", 3))
    centre = 0.5 * (seg[:, 0] + seg[:, 1])[:, None]
    length = (seg[:, 1] - seg[:, 0])[:, None]
    new_centre = centre + length * reg[..., 0]
    half = 0.5 * length * np.exp(reg[..., 1])
    out = np.stack([new_centre - half, new_centre + half], axis=-1)
    return out if clip is None else np.clip(out, clip[0], clip[1])


def _top_pairs(scores: np.ndarray, top_k: int | None) -> np.ndarray:
    flat = scores.ravel()
    keep = np.zeros(flat.shape, dtype=bool)
    if top_k is None or top_k >= flat.size:
        keep[:] = True
    else:
        keep[np.argsort(-flat, kind="stable")[:top_k]] = True
    return keep.reshape(scores.shape)


def score_proposals(
    segments: np.ndarray,
    activity_logits: np.ndarray,
    completeness_logits: np.ndarray,
    regression: np.ndarray,
    stats: RegressionStats,
    *,
    top_k: int | None = TOP_K,
    clip: tuple[float, float] | None = None,
) -> ScoredProposals:
    """Steps 1, 2 and 4 of the module docstring for one video's P proposals.

    Network outputs as arrays (``tensor.cpu().numpy()``): (P, K+1), (P, K), (P, K, 2).
    """
    scores = class_scores(activity_logits, completeness_logits)
    refined = refine_segments(segments, regression, stats, clip=clip)
    if refined.shape[:2] != scores.shape:
        raise ValueError(f"regression {refined.shape} does not match the scores {scores.shape}")
    seg = np.asarray(segments, dtype=np.float64)
    return ScoredProposals(seg, scores, refined, _top_pairs(scores, top_k))


def detections(
    scored: ScoredProposals,
    *,
    nms_on: str = "proposals",
    method: str = "hard",
    iou_threshold: float = NMS_THRESHOLD,
    min_score: float = 0.0,
    max_segments: int | None = None,
    **nms: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The video's detections after per-class NMS: (segments (M, 2) refined, scores (M,),
    labels (M,) class index 0..K-1), by score descending.

    Defaults are P-GCN's (hard NMS at 0.2 on the unrefined proposals, no score floor, no
    cap); ``method``, ``sigma`` etc. are :class:`salad_lightning.models.nms.NMSSettings`
    fields, so this project's Gaussian soft-NMS is one argument away.
    """
    if nms_on not in ("proposals", "refined"):
        raise ValueError(f"nms_on must be 'proposals' or 'refined', found {nms_on!r}")
    rows, labels = np.nonzero(scored.keep)
    refined = scored.refined[rows, labels]
    boxes = scored.segments[rows] if nms_on == "proposals" else refined
    index, score = soft_nms_numpy(
        boxes,
        scored.scores[rows, labels],
        labels,
        method=method,
        iou_threshold=iou_threshold,
        min_score=min_score,
        max_segments=max_segments,
        **nms,
    )
    return refined[index], score, labels[index]
