"""The result of one evaluation, typed: what the module logs and the report writes,
tables, figures and the diagnosis included. numpy only.

Made by the evaluation store (`salad_lightning.metrics.store.DetectionStore.evaluate`)
from the rows it holds, matched once (`salad_lightning.metrics.functional.match_detections`)
at the mAP's thresholds and at every other threshold a reader needs (the calibration's,
the diagnosis'): nothing after it matches again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.metrics.calibration import expected_calibration_error
from salad_lightning.metrics.functional import (
    DetectionEvaluation,
    Instances,
    Matching,
    average_precision,
    match_detections,
    video_key,
)

__all__ = ["Evaluation", "evaluate_videos"]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One split's detections and ground truth, their matching and what it gives.

    Videos are indexed in the order of their key (`functional.video_key`), the order in
    which equal scores rank, as in the evaluation command. ``pred`` and ``gt`` are the
    flat rows (``video``: the index into ``video_ids``), each video's rows contiguous and
    in the order its post-processing gave them; ``matching`` is theirs, at
    ``matching.tiou_thresholds`` (those of the mAP and at least the calibration tIoU).
    """

    split: str
    video_ids: tuple[str, ...]
    durations: np.ndarray  # (V,) seconds, NaN where unknown
    best_scores: np.ndarray  # (V,) the highest score before NMS (NaN for no detection run)
    pred: Instances
    gt: Instances
    matching: Matching
    tiou_thresholds: tuple[float, ...]  # the mAP's
    calibration_tiou: float
    n_bins: int

    @classmethod
    def assemble(
        cls,
        *,
        video_ids: Sequence[str],
        durations: Sequence[float],
        best_scores: Sequence[float],
        pred: Instances,
        gt: Instances,
        tiou_thresholds: Sequence[float],
        split: str = "test",
        calibration_tiou: float = 0.5,
        n_bins: int = 15,
        extra_tiou_thresholds: Sequence[float] = (),
    ) -> Evaluation:
        """The evaluation of per-video rows: ``pred`` / ``gt`` rows whose ``video`` indexes
        ``video_ids`` (rows of video -1 are left out), in any video order; the result
        orders the videos by key and matches once, at the mAP's thresholds, the
        calibration tIoU and ``extra_tiou_thresholds``."""
        names = list(video_ids)
        if len(set(names)) != len(names):
            raise ValueError("assemble: a video id appears twice; store each video once")
        rank = np.argsort(np.argsort(np.array([video_key(v) for v in names], dtype=np.int64)))
        order = np.argsort(rank)
        pred, gt = _contiguous(pred, rank), _contiguous(gt, rank)
        thresholds = tuple(float(t) for t in tiou_thresholds)
        matched = sorted({*thresholds, float(calibration_tiou), *map(float, extra_tiou_thresholds)})
        return cls(
            split=split,
            video_ids=tuple(names[i] for i in order),
            durations=np.asarray(durations, dtype=np.float64)[order],
            best_scores=np.asarray(best_scores, dtype=np.float64)[order],
            pred=pred,
            gt=gt,
            matching=match_detections(pred, gt, matched),
            tiou_thresholds=thresholds,
            calibration_tiou=float(calibration_tiou),
            n_bins=int(n_bins),
        )

    # -- the mAP ------------------------------------------------------------------
    @cached_property
    def detection(self) -> DetectionEvaluation:
        """Per-class AP, mAP per threshold and average mAP (official protocol)."""
        return average_precision(self.pred, self.gt, self.matching.at(self.tiou_thresholds))

    @property
    def map_at(self) -> tuple[float, ...]:
        """mAP at each threshold (NaN without ground truth)."""
        return tuple(float(v) for v in self.detection.mAP)

    @property
    def average_map(self) -> float:
        return self.detection.average_mAP

    @property
    def per_class_ap(self) -> np.ndarray:
        """(C, T) AP of the C classes present in the ground truth (`classes_present`)."""
        return self.detection.ap

    @property
    def classes_present(self) -> np.ndarray:
        return self.detection.labels

    # -- calibration --------------------------------------------------------------
    @property
    def confidences(self) -> np.ndarray:
        """Every detection's score (the reliability diagram's x)."""
        return self.pred.scores

    @property
    def correct(self) -> np.ndarray:
        """Whether each detection is a true positive at the calibration tIoU."""
        return self.matching.at([self.calibration_tiou]).tp[0]

    @property
    def scores_are_probabilities(self) -> bool:
        """Whether every score lies in [0, 1] (SALAD's p_t does; P-GCN's product with
        exp(completeness) need not): only then are the ECE and the reliability diagram
        defined."""
        c = self.confidences
        return bool(((c >= 0) & (c <= 1)).all())

    @cached_property
    def ece(self) -> float:
        """Expected calibration error of the scores against `correct` (NaN without
        detections, or when the scores are not probabilities)."""
        if not self.scores_are_probabilities:
            return float("nan")
        return expected_calibration_error(self.confidences, self.correct, n_bins=self.n_bins)

    # -- per video ----------------------------------------------------------------
    def _video_slices(self, video: np.ndarray) -> np.ndarray:
        return np.searchsorted(video, np.arange(len(self.video_ids) + 1))

    def videos(self) -> list[VideoDetections]:
        """Each video's detections with ``matched`` / ``matched_gt`` at the matching's
        thresholds (``matched_gt``: a row of that video's `ground_truth`)."""
        p = self._video_slices(self.pred.video)
        g = self._video_slices(self.gt.video)
        taken = np.where(self.matching.gt >= 0, self.matching.gt - g[self.pred.video], -1)
        return [
            VideoDetections(
                vid,
                self.pred.segments[p[i] : p[i + 1]],
                self.pred.scores[p[i] : p[i + 1]],
                self.pred.labels[p[i] : p[i + 1]],
                best_score=float(self.best_scores[i]),
                matched=self.matching.tp[:, p[i] : p[i + 1]],
                matched_gt=taken[:, p[i] : p[i + 1]],
            )
            for i, vid in enumerate(self.video_ids)
        ]

    def ground_truth(self) -> list[VideoGroundTruth]:
        """Each video's ground truth as published, in `video_ids` order."""
        g = self._video_slices(self.gt.video)
        return [
            VideoGroundTruth(
                vid,
                self.gt.segments[g[i] : g[i + 1]],
                self.gt.labels[g[i] : g[i + 1]],
                float(self.durations[i]),
            )
            for i, vid in enumerate(self.video_ids)
        ]

    @property
    def num_detections(self) -> int:
        return len(self.pred.video)

    def logs(self) -> dict[str, float]:
        """The scalars logged under ``split/``: ``mAP@t``, ``mAP``, ``ece``."""
        out = {f"{self.split}/mAP@{t:g}": v for t, v in zip(self.tiou_thresholds, self.map_at)}
        out[f"{self.split}/mAP"] = self.average_map
        out[f"{self.split}/ece"] = self.ece
        return out


def _contiguous(rows: Instances, rank: np.ndarray) -> Instances:
    """The rows whose video is not -1, renumbered by ``rank``, each video's rows together
    in their given order."""
    video = np.asarray(rows.video, dtype=np.int64)
    take = np.flatnonzero(video >= 0)
    new = rank[video[take]]
    take = take[np.argsort(new, kind="stable")]
    return Instances(
        rank[video[take]],
        np.asarray(rows.segments, dtype=np.float64).reshape(-1, 2)[take],
        np.asarray(rows.labels, dtype=np.int64)[take],
        None if rows.scores is None else np.asarray(rows.scores, dtype=np.float64)[take],
    )


def evaluate_videos(
    detections: Sequence[VideoDetections],
    ground_truth: Sequence[VideoGroundTruth],
    tiou_thresholds: Sequence[float],
    **kwargs: Any,
) -> Evaluation:
    """`Evaluation.assemble` of typed per-video records: ``detections`` of some videos,
    ``ground_truth`` of every evaluated video (a video with detections and no ground
    truth needs an empty `VideoGroundTruth`). ``kwargs``: `assemble`'s."""
    truth = {g.video_id: g for g in ground_truth}
    if len(truth) != len(ground_truth):
        raise ValueError("evaluate_videos: a video's ground truth is given twice")
    unknown = [d.video_id for d in detections if d.video_id not in truth]
    if unknown:
        raise ValueError(
            f"evaluate_videos: detections of videos without ground truth: {unknown[:5]}; "
            "give them an empty VideoGroundTruth"
        )
    names = list(truth)
    where = {v: i for i, v in enumerate(names)}
    best = np.full(len(names), np.nan)
    for d in detections:
        best[where[d.video_id]] = d.best_score

    def flat(items, scored: bool) -> Instances:
        video = [np.full(len(x.labels), where[x.video_id], dtype=np.int64) for x in items]
        return Instances(
            np.concatenate([np.zeros(0, dtype=np.int64), *video]),
            np.concatenate([np.zeros((0, 2)), *(x.segments for x in items)]),
            np.concatenate([np.zeros(0, dtype=np.int64), *(x.labels for x in items)]),
            np.concatenate([np.zeros(0), *(x.scores for x in items)]) if scored else None,
        )

    return Evaluation.assemble(
        video_ids=names,
        durations=[truth[v].duration for v in names],
        best_scores=best,
        pred=flat(detections, True),
        gt=flat(list(truth.values()), False),
        tiou_thresholds=tiou_thresholds,
        **kwargs,
    )
