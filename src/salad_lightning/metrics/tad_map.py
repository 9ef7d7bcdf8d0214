"""`TemporalActionDetectionMAP`: the official ActivityNet detection mAP as a torchmetrics metric.

A thin shell around `salad_lightning.metrics.functional.evaluate_detections`:
`update` stores flat rows in list states (``dist_reduce_fx="cat"``), `compute`
de-duplicates videos and runs the numpy evaluator.

- Strings cannot be synchronised, so a video is stored as its 63-bit BLAKE2b key
  (`functional.video_key`); the same key orders equal scores, so the metric and
  the command break ties identically.
- A video may reach `update` more than once (DistributedSampler pads the ranks by
  repeating videos): each video of each update gets a source id (rank, running
  count), and `compute` keeps, for every video, only the rows of its smallest
  source id.
- Every rank must call `update` at least once before `compute` (true under
  DistributedSampler, which gives every rank at least one video).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from salad_lightning.metrics.functional import Instances, evaluate_detections, video_key

__all__ = ["TemporalActionDetectionMAP", "first_copies", "source_id", "state_array"]

_SOURCE_BITS = 40  # source id = rank << 40 | running count of videos seen by this process
_STATES = {
    "video_keys": torch.int64,
    "video_sources": torch.int64,
    "pred_keys": torch.int64,
    "pred_sources": torch.int64,
    "pred_segments": torch.float64,  # flattened (M * 2,): every state stays 1-D for the gather
    "pred_scores": torch.float64,
    "pred_labels": torch.int64,
    "gt_keys": torch.int64,
    "gt_sources": torch.int64,
    "gt_segments": torch.float64,
    "gt_labels": torch.int64,
}


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def source_id(seen: int) -> int:
    """Where a video's update came from: (this process's rank, its running count)."""
    return (_rank() << _SOURCE_BITS) | seen


def state_array(metric: Metric, name: str, dtype: torch.dtype) -> np.ndarray:
    """A list state (after a gather: a tensor) as one numpy array."""
    value = getattr(metric, name)
    if isinstance(value, list):
        value = dim_zero_cat(value) if value else torch.zeros(0)
    return value.detach().cpu().to(dtype).numpy()


def first_copies(
    video_keys: np.ndarray, video_sources: np.ndarray, row_keys: np.ndarray, row_sources: np.ndarray
) -> np.ndarray:
    """Mask of the rows that belong to the first copy of their video.

    A video may reach ``update`` more than once (a distributed sampler pads the ranks by
    repeating videos); every video counts once, with the rows of its smallest source id.
    """
    order = np.lexsort((video_sources, video_keys))
    keys, sources = video_keys[order], video_sources[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, sources = keys[first], sources[first]
    at = np.minimum(np.searchsorted(keys, row_keys), max(len(keys) - 1, 0))
    if not len(keys):
        return np.zeros(len(row_keys), dtype=bool)
    return row_sources == sources[at]


class TemporalActionDetectionMAP(Metric):
    """mAP at each tIoU threshold and its average, official ActivityNet protocol (docs/method.md §6).

    Args:
        tiou_thresholds: thresholds in (0, 1]; each gives a key ``mAP@{thr:g}``.
        class_names: optional names of the class indices, for `per_class_table`;
            labels outside ``range(len(class_names))`` are then rejected.

    `update(preds, target)` takes two lists with one dict per video, in the same
    order: ``preds[i]`` with ``video_id`` (str), ``segments`` (M, 2) in seconds,
    ``scores`` (M,), ``labels`` (M,) int; ``target[i]`` with ``video_id``,
    ``segments`` (N, 2), ``labels`` (N,). Tensors, arrays or lists.

    `compute()` returns float64 CPU tensors: ``mAP@{thr:g}`` for each threshold,
    ``mAP`` (their mean), ``per_class_ap`` (C, T) for the C classes present in the
    ground truth, and ``classes_present`` (C,) their label indices. mAP is NaN
    when no ground truth was seen.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        tiou_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        try:
            thresholds = tuple(float(t) for t in tiou_thresholds)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"tiou_thresholds: expected a sequence of numbers, got {tiou_thresholds!r}"
            ) from err
        if not thresholds or not all(0 < t <= 1 for t in thresholds):
            raise ValueError(f"tiou_thresholds: expected values in (0, 1], got {list(thresholds)}")
        keys = [f"mAP@{t:g}" for t in thresholds]
        if len(set(keys)) != len(keys):
            raise ValueError(f"tiou_thresholds: two thresholds print the same key: {keys}")
        if class_names is not None:
            if isinstance(class_names, str) or not all(
                isinstance(n, str) and n for n in class_names
            ):
                raise ValueError("class_names: expected a list of non-empty strings")
            if len(set(class_names)) != len(class_names):
                raise ValueError("class_names: names must be unique")
            class_names = list(class_names)
        self.tiou_thresholds = thresholds
        self.class_names = class_names
        self._seen = 0  # videos passed to update by this process (never reset: ids stay unique)
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _rows(self, item: dict, keys: Sequence[str], where: str) -> dict[str, Tensor]:
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; expected {list(keys)}")
        vid = item["video_id"]
        if not isinstance(vid, str):
            raise ValueError(f"{where}: video_id must be a str, got {type(vid).__name__}")
        out = {}
        segments = torch.as_tensor(item["segments"], dtype=torch.float64).detach().cpu()
        if segments.numel() == 0:
            segments = segments.reshape(0, 2)
        if segments.ndim != 2 or segments.shape[1] != 2:
            raise ValueError(
                f"{where} (video {vid!r}): segments must be (M, 2), got {tuple(segments.shape)}"
            )
        out["segments"] = segments
        for k, dtype in (("scores", torch.float64), ("labels", torch.int64)):
            if k in keys:
                value = torch.as_tensor(item[k]).detach().cpu()
                if k == "labels" and value.is_floating_point():
                    if not torch.equal(value, value.round()):
                        raise ValueError(f"{where} (video {vid!r}): labels must be integers")
                value = value.to(dtype).reshape(-1)
                if len(value) != len(segments):
                    raise ValueError(
                        f"{where} (video {vid!r}): {len(segments)} segments but {len(value)} {k}"
                    )
                out[k] = value
        labels = out["labels"]
        if len(labels) and (
            labels.min() < 0 or (self.class_names and labels.max() >= len(self.class_names))
        ):
            bound = f"[0, {len(self.class_names)})" if self.class_names else "non-negative"
            raise ValueError(
                f"{where} (video {vid!r}): labels must be {bound}, got {labels.tolist()}"
            )
        return out

    def update(self, preds: list[dict[str, Any]], target: list[dict[str, Any]]) -> None:
        """Add one batch of videos (see the class docstring for the format)."""
        if not isinstance(preds, (list, tuple)) or not isinstance(target, (list, tuple)):
            raise ValueError("update: preds and target must be lists with one dict per video")
        if len(preds) != len(target):
            raise ValueError(f"update: {len(preds)} preds but {len(target)} targets")
        batch: dict[str, list[Tensor]] = {name: [] for name in _STATES}
        for i, (p, t) in enumerate(zip(preds, target)):
            pr = self._rows(p, ("video_id", "segments", "scores", "labels"), f"preds[{i}]")
            gt = self._rows(t, ("video_id", "segments", "labels"), f"target[{i}]")
            if p["video_id"] != t["video_id"]:
                raise ValueError(
                    f"update: preds[{i}] is video {p['video_id']!r} but target[{i}] is {t['video_id']!r}"
                )
            key = video_key(p["video_id"])
            source = source_id(self._seen)
            self._seen += 1
            m, n = len(pr["scores"]), len(gt["labels"])
            batch["video_keys"].append(torch.tensor([key]))
            batch["video_sources"].append(torch.tensor([source]))
            batch["pred_keys"].append(torch.full((m,), key, dtype=torch.int64))
            batch["pred_sources"].append(torch.full((m,), source, dtype=torch.int64))
            batch["pred_segments"].append(pr["segments"].reshape(-1))
            batch["pred_scores"].append(pr["scores"])
            batch["pred_labels"].append(pr["labels"])
            batch["gt_keys"].append(torch.full((n,), key, dtype=torch.int64))
            batch["gt_sources"].append(torch.full((n,), source, dtype=torch.int64))
            batch["gt_segments"].append(gt["segments"].reshape(-1))
            batch["gt_labels"].append(gt["labels"])
        for name, dtype in _STATES.items():
            parts = batch[name]
            value = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)
            getattr(self, name).append(value.to(dtype=dtype, device=self.device))

    def _state(self, name: str) -> np.ndarray:
        return state_array(self, name, _STATES[name])

    def compute(self) -> dict[str, Tensor]:
        """mAP per threshold, average mAP and per-class AP (see the class docstring)."""
        s = {name: self._state(name) for name in _STATES}
        p, g = (
            first_copies(s["video_keys"], s["video_sources"], s[f"{x}_keys"], s[f"{x}_sources"])
            for x in ("pred", "gt")
        )
        pred = Instances(
            s["pred_keys"][p],
            s["pred_segments"].reshape(-1, 2)[p],
            s["pred_labels"][p],
            s["pred_scores"][p],
        )
        gt = Instances(s["gt_keys"][g], s["gt_segments"].reshape(-1, 2)[g], s["gt_labels"][g])
        result = evaluate_detections(pred, gt, tiou_thresholds=self.tiou_thresholds)
        out = {
            f"mAP@{t:g}": torch.tensor(float(v), dtype=torch.float64)
            for t, v in zip(self.tiou_thresholds, result.mAP)
        }
        out["mAP"] = torch.tensor(result.average_mAP, dtype=torch.float64)
        out["per_class_ap"] = torch.from_numpy(result.ap)
        out["classes_present"] = torch.from_numpy(result.labels)
        return out

    def per_class_table(self, values: dict[str, Tensor] | None = None) -> dict[str, list[float]]:
        """``{class name (or index as str): [AP at each threshold]}`` from `compute`'s output."""
        values = self.compute() if values is None else values
        table = {}
        for label, row in zip(values["classes_present"].tolist(), values["per_class_ap"].tolist()):
            name = self.class_names[label] if self.class_names else str(label)
            table[name] = row
        return table
