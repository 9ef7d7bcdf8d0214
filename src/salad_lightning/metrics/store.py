"""`DetectionStore`: one split's detections and ground truth, stored once, matched once.

A torchmetrics `Metric` whose states are flat 1-D tensors in lists gathered with
``dist_reduce_fx="cat"`` (DDP-safe). `update` stores each video once: its id (as UTF-8
bytes: strings cannot be gathered), duration, best score before NMS, a source id, and
its detection and ground-truth rows (counted per video, so every state stays aligned
across processes). `evaluate` gathers, keeps the first copy of each video, adds the
videos given as ground truth only (a split's videos without features, which the
official evaluator counts), matches once and returns the typed
`~salad_lightning.metrics.evaluation.Evaluation`: mAP per threshold, per-class AP,
ECE and reliability data, true-positive flags and the ground truth each detection
took, per video. `compute` gives its scalars (``mAP@t``, ``mAP``, ``ece``), from the
same cached result.

- A video may reach `update` more than once (a distributed sampler pads the ranks by
  repeating videos): each video of each update gets a source id (rank, running count)
  and only the copy with the smallest one counts.
- Every rank must call `update` at least once before `evaluate` (true under the
  project's samplers, which give every rank at least one video).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from salad_lightning.data.detections import (
    VideoDetections,
    VideoGroundTruth,
    as_detections,
    as_ground_truth,
)
from salad_lightning.metrics.evaluation import Evaluation
from salad_lightning.metrics.functional import Instances, _check_thresholds

__all__ = ["DetectionStore"]

_SOURCE_BITS = 40  # source id = rank << 40 | running count of videos seen by this process
_STATES = {
    "video_ids": torch.uint8,  # the ids' UTF-8 bytes, back to back
    "video_id_lengths": torch.int64,
    "video_sources": torch.int64,
    "video_durations": torch.float64,
    "video_best_scores": torch.float64,
    "det_counts": torch.int64,  # rows per video
    "det_segments": torch.float64,  # flattened (M * 2,)
    "det_scores": torch.float64,
    "det_labels": torch.int64,
    "gt_counts": torch.int64,
    "gt_segments": torch.float64,
    "gt_labels": torch.int64,
}


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _state(metric: Metric, name: str) -> np.ndarray:
    """A list state (after a gather: a tensor) as one numpy array."""
    value = getattr(metric, name)
    if isinstance(value, list):
        value = dim_zero_cat(value) if value else torch.zeros(0)
    return value.detach().cpu().to(_STATES[name]).numpy()


def _decode_ids(data: np.ndarray, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths)
    raw = data.tobytes()
    return [raw[e - n : e].decode("utf-8") for e, n in zip(ends.tolist(), lengths.tolist())]


class DetectionStore(Metric):
    """The detections and ground truth of one split; `evaluate` gives the `Evaluation`.

    Args:
        tiou_thresholds: the mAP's thresholds, in (0, 1].
        split: the name the result logs under (``val``, ``test``, ...).
        calibration_tiou: the tIoU a detection needs to count as correct in the ECE and
            the reliability diagram.
        calibration_bins: equal-width bins of the ECE.
        extra_tiou_thresholds: more thresholds to match at, for readers of the result
            (the diagnosis' when they are not the mAP's).
        ground_truth_only: videos evaluated with no detection (the split's videos
            without features), given once here by whoever builds the store.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        tiou_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
        *,
        split: str = "test",
        calibration_tiou: float = 0.5,
        calibration_bins: int = 15,
        extra_tiou_thresholds: Sequence[float] = (),
        ground_truth_only: Iterable[VideoGroundTruth | Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        try:
            thresholds = tuple(float(t) for t in tiou_thresholds)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"tiou_thresholds: expected a sequence of numbers, got {tiou_thresholds!r}"
            ) from err
        _check_thresholds(thresholds)
        keys = [f"mAP@{t:g}" for t in thresholds]
        if len(set(keys)) != len(keys):
            raise ValueError(f"tiou_thresholds: two thresholds print the same key: {keys}")
        bins = calibration_bins
        if isinstance(bins, bool) or int(bins) != bins or bins < 1:
            raise ValueError(f"calibration_bins: expected a positive integer, got {bins!r}")
        if not 0 < float(calibration_tiou) <= 1:
            raise ValueError(
                f"calibration_tiou: expected a value in (0, 1], got {calibration_tiou}"
            )
        extra = tuple(float(t) for t in extra_tiou_thresholds)
        if extra:
            _check_thresholds(extra)
        self.tiou_thresholds = thresholds
        self.split = str(split)
        self.calibration_tiou = float(calibration_tiou)
        self.calibration_bins = int(bins)
        self.extra_tiou_thresholds = extra
        self.ground_truth_only = tuple(as_ground_truth(v) for v in ground_truth_only)
        self._seen = 0  # videos passed to update by this process (never reset: ids stay unique)
        self._evaluation: Evaluation | None = None
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        detections: Sequence[VideoDetections | Mapping[str, Any]],
        ground_truth: Sequence[VideoGroundTruth | Mapping[str, Any]],
    ) -> None:
        """Add videos: one `VideoDetections` and one `VideoGroundTruth` per video, in the
        same order (or mappings with their fields)."""
        if not isinstance(detections, (list, tuple)) or not isinstance(ground_truth, (list, tuple)):
            raise ValueError("update: detections and ground_truth must be lists, one per video")
        if len(detections) != len(ground_truth):
            raise ValueError(
                f"update: {len(detections)} videos' detections but {len(ground_truth)} ground truths"
            )
        parts: dict[str, list[np.ndarray]] = {name: [] for name in _STATES}
        for i, (d, g) in enumerate(zip(detections, ground_truth)):
            d, g = as_detections(d), as_ground_truth(g)
            if d.video_id != g.video_id:
                raise ValueError(
                    f"update: detections[{i}] are of video {d.video_id!r} but "
                    f"ground_truth[{i}] of {g.video_id!r}"
                )
            name = d.video_id.encode("utf-8")
            parts["video_ids"].append(np.frombuffer(name, dtype=np.uint8))
            parts["video_id_lengths"].append(np.array([len(name)]))
            parts["video_sources"].append(np.array([(_rank() << _SOURCE_BITS) | self._seen]))
            self._seen += 1
            parts["video_durations"].append(np.array([g.duration]))
            parts["video_best_scores"].append(np.array([d.best_score]))
            parts["det_counts"].append(np.array([len(d.scores)]))
            parts["det_segments"].append(d.segments.reshape(-1))
            parts["det_scores"].append(d.scores)
            parts["det_labels"].append(d.labels)
            parts["gt_counts"].append(np.array([len(g.labels)]))
            parts["gt_segments"].append(g.segments.reshape(-1))
            parts["gt_labels"].append(g.labels)
        for name, dtype in _STATES.items():
            value = np.concatenate(parts[name]) if parts[name] else np.zeros(0)
            getattr(self, name).append(torch.as_tensor(value, dtype=dtype, device=self.device))
        self._evaluation = None

    def reset(self) -> None:
        super().reset()
        self._evaluation = None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> Evaluation:
        """The typed result of every process's videos (gathered, matched once, cached
        until the next `update` or `reset`)."""
        if self._evaluation is None:
            with self.sync_context(
                dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute
            ):
                self._evaluation = self._evaluate()
        return self._evaluation

    def compute(self) -> dict[str, Tensor]:
        """``mAP@t`` per threshold, ``mAP`` and ``ece`` of `evaluate`'s result (float64)."""
        if self._evaluation is None:  # torchmetrics has gathered the states already
            self._evaluation = self._evaluate()
        logs = self._evaluation.logs()
        prefix = f"{self.split}/"
        return {k[len(prefix) :]: torch.tensor(v, dtype=torch.float64) for k, v in logs.items()}

    def _evaluate(self) -> Evaluation:
        s = {name: _state(self, name) for name in _STATES}
        ids = _decode_ids(s["video_ids"], s["video_id_lengths"])
        kept = _first_copies(ids, s["video_sources"])
        stored = {ids[i] for i in np.flatnonzero(kept)}
        extra = [g for g in self.ground_truth_only if g.video_id not in stored]
        n_kept = int(kept.sum())
        where = np.full(len(ids), -1, dtype=np.int64)  # each stored copy's result video
        where[kept] = np.arange(n_kept)
        extra_video = [np.full(len(g.labels), n_kept + i) for i, g in enumerate(extra)]
        return Evaluation.assemble(
            split=self.split,
            video_ids=[ids[i] for i in np.flatnonzero(kept)] + [g.video_id for g in extra],
            durations=np.concatenate([s["video_durations"][kept], [g.duration for g in extra]]),
            best_scores=np.concatenate([s["video_best_scores"][kept], np.full(len(extra), np.nan)]),
            pred=Instances(
                np.repeat(where, s["det_counts"]),
                s["det_segments"].reshape(-1, 2),
                s["det_labels"],
                s["det_scores"],
            ),
            gt=Instances(
                np.concatenate([np.repeat(where, s["gt_counts"]), *extra_video]),
                np.concatenate([s["gt_segments"].reshape(-1, 2), *(g.segments for g in extra)]),
                np.concatenate([s["gt_labels"], *(g.labels for g in extra)]),
            ),
            tiou_thresholds=self.tiou_thresholds,
            calibration_tiou=self.calibration_tiou,
            n_bins=self.calibration_bins,
            extra_tiou_thresholds=self.extra_tiou_thresholds,
        )


def _first_copies(ids: Sequence[str], sources: np.ndarray) -> np.ndarray:
    """Mask of the stored videos that count: of each id, the copy with the smallest
    source id (a distributed sampler's padding repeats videos)."""
    first: dict[str, int] = {}
    for i, vid in enumerate(ids):
        j = first.get(vid)
        if j is None or sources[i] < sources[j]:
            first[vid] = i
    kept = np.zeros(len(ids), dtype=bool)
    kept[list(first.values())] = True
    return kept
