"""The typed records of one video's evaluation: its ground truth as published and the
detections a model made for it. numpy only (the evaluation command reads them too).

- :class:`VideoGroundTruth` comes from the data layer
  (:meth:`~salad_lightning.data.annotations.VideoRecord.ground_truth`): every annotation
  exactly as written, what the official evaluator reads, and the video's duration.
- :class:`VideoDetections` is what post-processing makes (segments in seconds, scores,
  class indices) and what the evaluation store, the report, the plots and the diagnosis
  read; once evaluated it carries which detections were true positives, and of which
  ground truth, at each of the evaluation's tIoU thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["VideoDetections", "VideoGroundTruth", "as_detections", "as_ground_truth"]


def _array(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _rows(video_id: Any, segments: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(video_id, str):
        raise TypeError(f"{what}.video_id: expected a str, got {type(video_id).__name__}")
    segs = _array(segments, np.float64)
    labs = _array(labels, None)
    if segs.size == 0:
        segs = segs.reshape(0, 2)
    if segs.ndim != 2 or segs.shape[1] != 2:
        raise ValueError(f"{what} of video {video_id!r}: segments must be (N, 2), got {segs.shape}")
    labs = labs.reshape(-1) if labs.size else labs.reshape(0).astype(np.int64)
    if labs.dtype.kind == "f":  # integer-valued floats (a tensor of labels, a JSON list)
        if not np.array_equal(labs, np.round(labs)):
            raise ValueError(f"{what} of video {video_id!r}: labels must be integers")
    elif labs.dtype.kind not in "iub":
        raise ValueError(f"{what} of video {video_id!r}: labels must be integers, got {labs.dtype}")
    if len(labs) != len(segs):
        raise ValueError(
            f"{what} of video {video_id!r}: {len(segs)} segments but {len(labs)} labels"
        )
    if len(labs) and labs.min() < 0:
        raise ValueError(
            f"{what} of video {video_id!r}: labels must be class indices >= 0, "
            f"found {int(labs.min())}"
        )
    return segs, labs.astype(np.int64)


@dataclass(frozen=True, eq=False)
class VideoGroundTruth:
    """One video's annotations exactly as published (seconds; class indices)."""

    video_id: str
    segments: np.ndarray = field(repr=False)  # (N, 2) float64
    labels: np.ndarray = field(repr=False)  # (N,) int64
    duration: float = math.nan  # seconds; NaN where the annotation file gives none

    def __post_init__(self) -> None:
        segs, labs = _rows(self.video_id, self.segments, self.labels, "ground truth")
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "labels", labs)
        object.__setattr__(self, "duration", float(self.duration))

    @classmethod
    def empty(cls, video_id: str, duration: float = math.nan) -> VideoGroundTruth:
        """A video with no annotation (predicting on a new video)."""
        return cls(video_id, np.zeros((0, 2)), np.zeros(0, dtype=np.int64), duration)


@dataclass(frozen=True, eq=False)
class VideoDetections:
    """One video's detections: segments in seconds, scores, class indices (0..K-1).

    ``best_score``: the highest score of any proposal before NMS and the score floor
    (NaN when unknown), which tells a video with no detection why it has none.
    ``matched`` / ``matched_gt`` (set once evaluated, :meth:`Evaluation.videos`): (T, M)
    true positive at each of the evaluation's thresholds, and the row of the video's
    ground truth it took (-1 for a false positive).
    """

    video_id: str
    segments: np.ndarray = field(repr=False)  # (M, 2) float64
    scores: np.ndarray = field(repr=False)  # (M,) float64
    labels: np.ndarray = field(repr=False)  # (M,) int64
    best_score: float = math.nan
    matched: np.ndarray | None = field(default=None, repr=False)
    matched_gt: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        segs, labs = _rows(self.video_id, self.segments, self.labels, "detections")
        scores = _array(self.scores, np.float64).reshape(-1)
        if len(scores) != len(segs):
            raise ValueError(
                f"detections of video {self.video_id!r}: {len(segs)} segments but "
                f"{len(scores)} scores"
            )
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labs)
        object.__setattr__(self, "best_score", float(self.best_score))

    def __len__(self) -> int:
        return len(self.scores)


_DETECTION_KEYS = ("video_id", "segments", "scores", "labels", "best_score")


def as_detections(item: VideoDetections | Mapping[str, Any]) -> VideoDetections:
    """A :class:`VideoDetections`, or a mapping with its fields (``video_id``,
    ``segments``, ``scores``, ``labels``), as one."""
    if isinstance(item, VideoDetections):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"expected VideoDetections or a mapping, got {type(item).__name__}")
    missing = [k for k in ("video_id", "segments", "scores", "labels") if k not in item]
    if missing:
        raise ValueError(f"detections: missing key(s) {missing} in {sorted(item)}")
    return VideoDetections(**{k: item[k] for k in _DETECTION_KEYS if k in item})


def as_ground_truth(item: VideoGroundTruth | Mapping[str, Any]) -> VideoGroundTruth:
    """A :class:`VideoGroundTruth`, or a mapping with its fields (``video_id``,
    ``segments``, ``labels``, ``duration`` optional), as one."""
    if isinstance(item, VideoGroundTruth):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"expected VideoGroundTruth or a mapping, got {type(item).__name__}")
    missing = [k for k in ("video_id", "segments", "labels") if k not in item]
    if missing:
        raise ValueError(f"ground truth: missing key(s) {missing} in {sorted(item)}")
    return VideoGroundTruth(
        **{k: item[k] for k in ("video_id", "segments", "labels", "duration") if k in item}
    )
