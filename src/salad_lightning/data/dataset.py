"""Samples (one video, or a training crop of one) and the batch collate.

A sample is a dict:

- ``features`` (T, C) float32 tensor,
- ``gt_segments`` (N, 2) float32 tensor, feature-index units of *this* sequence,
- ``gt_labels`` (N,) int64 tensor,
- ``mapping``: the :class:`TimeMapping` of this sequence (crop included),
- ``meta``: ``video_id``, ``duration``, ``fps``, ``crop_start``, ``gt_index`` and the
  whole video's ``ground_truth`` as published
  (:class:`~salad_lightning.data.detections.VideoGroundTruth`).

:func:`collate_videos` turns a list of samples into a :class:`Batch`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from salad_lightning.data.annotations import DataWarning, VideoRecord, _first
from salad_lightning.data.batch import Batch
from salad_lightning.data.features import (
    LENGTH_RATIO,
    FeatureFileError,
    FeatureSource,
    check_finite,
    downsample_features,
    expected_length,
    length_ratio_ok,
    resize_features,
)
from salad_lightning.data.mapping import TimeMapping

# A ground truth cut by a training crop is kept when at least this share of its
# length lies inside the crop (ActionFormer uses 0.5; we keep more partial actions).
CROP_MIN_KEEP = 0.3


def video_fps(video: VideoRecord, default_fps: float | None) -> float:
    """The video's fps from its annotation, else ``default_fps``; an error when neither."""
    fps = video.fps if video.fps is not None else default_fps
    if fps is None:
        raise ValueError(
            f"video {video.video_id}: no 'fps' in the annotation file and no default_fps "
            "set; clip features need one (or use resize_to)"
        )
    return float(fps)


def video_mapping(
    video: VideoRecord,
    *,
    stride: int = 4,
    window: int = 16,
    default_fps: float | None = None,
    downsample: int = 1,
    resize_to: int | None = None,
) -> TimeMapping:
    """The whole video's seconds <-> index mapping (clip or resized features, docs/method.md §1)."""
    if resize_to is not None:
        return TimeMapping.from_resize(length=resize_to, duration=video.duration)
    return TimeMapping.from_clip(
        fps=video_fps(video, default_fps),
        stride=stride,
        window=window,
        duration=video.duration,
        downsample=downsample,
    )


def max_gt_steps(videos: Sequence[VideoRecord], mappings: Sequence[TimeMapping]) -> int:
    """The longest ground truth in feature steps, rounded up (at least 1): docs/method.md §2's W."""
    longest = 0.0
    for video, mapping in zip(videos, mappings):
        if video.num_segments:
            steps = float(np.max(video.segments[:, 1] - video.segments[:, 0])) / mapping.scale
            longest = max(longest, steps)
    return max(1, math.ceil(longest - 1e-9))


class TADDataset(Dataset):
    """Feature sequences with their ground truth in feature-index units.

    Training (``training=True``): a sequence longer than ``max_seq_len`` steps is cut
    to a random window of ``max_seq_len`` steps; ground truths cut by the window are
    clipped to it (the window spans ``[-0.5, max_seq_len - 0.5]`` in index units, one
    cell per step) and dropped when less than ``crop_min_keep`` of their length stays
    inside. Otherwise whole videos, of any length.

    Index units come from each video's mapping: clip features with ``stride`` and
    ``window`` (in frames) and the video's ``fps`` (``default_fps`` when the annotation
    has none), or ``resize_to`` steps spread over the video's duration.

    Checked at construction, for every video: the feature files exist (the first
    missing ids and their count, or a warning and skipping with ``skip_missing``), and
    for ``.npy`` files the header shape (2-D, non-empty, ``feature_dim``) and the length
    against ``duration * fps / stride`` (a warning). Checked on load: shape for the
    other formats, and NaN/Inf in the rows read.
    """

    def __init__(
        self,
        videos: Sequence[VideoRecord],
        source: FeatureSource,
        *,
        training: bool = False,
        stride: int = 4,
        window: int = 16,
        default_fps: float | None = None,
        downsample: int = 1,
        resize_to: int | None = None,
        max_seq_len: int | None = None,
        crop_min_keep: float = CROP_MIN_KEEP,
        skip_missing: bool = False,
        name: str = "dataset",
        seed: int = 0,
        defer_file_errors: bool = False,
    ) -> None:
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, found {downsample}")
        if max_seq_len is not None and max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1 or None, found {max_seq_len}")
        if not 0.0 <= crop_min_keep <= 1.0:
            raise ValueError(f"crop_min_keep must be in [0, 1], found {crop_min_keep}")
        self.source = source
        self.training = training
        self.stride, self.window, self.default_fps = stride, window, default_fps
        self.downsample, self.resize_to = downsample, resize_to
        self.max_seq_len, self.crop_min_keep = max_seq_len, crop_min_keep
        self.name, self.seed = name, int(seed)
        # With defer_file_errors (the pre-flight), a missing file or an unreadable header
        # leaves its video out and is recorded here instead of raising: the pre-flight
        # then reports every problem of the split at once.
        self.defer = defer_file_errors
        self.file_errors: list[tuple[str, str, str]] = []  # (video id, path, problem)
        # every video of the split, with or without features (the report, the evaluation)
        self.records: list[VideoRecord] = list(videos)
        self.videos: list[VideoRecord] = self._drop_missing(self.records, skip_missing)
        self.lengths = self._scan_lengths()
        self.mappings = [self._base_mapping(v) for v in self.videos]

    # -- construction checks ------------------------------------------------------
    def _drop_missing(self, videos: list[VideoRecord], skip: bool) -> list[VideoRecord]:
        missing = self.source.missing([v.video_id for v in videos])
        self.missing = missing
        if not missing:
            return videos
        pattern = " and ".join(
            f"{d}/{self.source.prefix}{{video_id}}{self.source.ext}" for d in self.source.dirs
        )
        msg = (
            f"{self.name}: {len(missing)} of {len(videos)} videos have no feature file "
            f"({pattern}): {_first(missing)}"
        )
        if not skip and self.defer:
            self.missing = []  # not skipped: reported as problems, the run stops
            for vid in missing:
                where = " + ".join(str(p) for p in self.source.paths(vid))
                hint = (
                    "no feature file (to run without it: set dataset.datamodule.skip_missing=true)"
                )
                self.file_errors.append((vid, where, hint))
        elif not skip:
            raise FileNotFoundError(
                msg + "; to run without them, set dataset.datamodule.skip_missing=true"
            )
        else:
            warnings.warn(msg + "; skipped (skip_missing=true)", DataWarning, stacklevel=3)
        gone = set(missing)
        kept = [v for v in videos if v.video_id not in gone]
        if not kept:
            raise FileNotFoundError(f"{self.name}: no video has its feature file ({pattern})")
        return kept

    def _fps(self, video: VideoRecord) -> float:
        return video_fps(video, self.default_fps)

    def _base_mapping(self, video: VideoRecord) -> TimeMapping:
        return video_mapping(
            video,
            stride=self.stride,
            window=self.window,
            default_fps=self.default_fps,
            downsample=self.downsample,
            resize_to=self.resize_to,
        )

    def _seq_len(self, raw_len: int) -> int:
        if self.resize_to is not None:
            return self.resize_to
        return math.ceil(raw_len / self.downsample)

    def _scan_lengths(self) -> list[int]:
        """Sequence lengths (after downsample/resize), from the ``.npy`` headers when possible."""
        lengths, off, readable = [], [], []
        self.raw_lengths: list[int | None] = []  # feature steps in the file, when known
        for video in self.videos:
            try:
                shape = self.source.scan_shape(video.video_id)
            except FeatureFileError as err:
                if not self.defer:
                    raise
                self.file_errors.append((video.video_id, err.path, err.problem))
                continue
            readable.append(video)
            self.raw_lengths.append(None if shape is None else shape[0])
            if shape is None:  # .pt / .csv: estimated, checked on load
                raw = (
                    expected_length(video.duration, self._fps(video), self.stride)
                    if self.resize_to is None
                    else 1
                )
                lengths.append(self._seq_len(max(1, round(raw))))
                continue
            lengths.append(self._seq_len(shape[0]))
            if self.resize_to is None:
                exp = expected_length(video.duration, self._fps(video), self.stride)
                if not length_ratio_ok(shape[0], exp):
                    off.append(f"{video.video_id} ({shape[0]} steps, expected ~{exp:.0f})")
        if off:
            warnings.warn(
                f"{self.name}: {len(off)} videos have a feature length outside "
                f"{LENGTH_RATIO} x duration*fps/stride (stride {self.stride}): {_first(off)}; "
                "check stride, fps and the feature files",
                DataWarning,
                stacklevel=3,
            )
        self.videos = readable
        return lengths

    # -- access -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    @property
    def sample_lengths(self) -> list[int]:
        """Lengths of the samples this dataset yields (crops included), for bucketing."""
        if self.training and self.max_seq_len is not None:
            return [min(n, self.max_seq_len) for n in self.lengths]
        return list(self.lengths)

    def _read(
        self, video: VideoRecord, training: bool, epoch: int | None = None, index: int = 0
    ) -> tuple[np.ndarray, int, int, int]:
        """Features of the sample, its start step and the whole sequence length."""
        raw = self.source.load(video.video_id)
        paths = " + ".join(str(p) for p in self.source.paths(video.video_id))
        where = f"{paths} (video {video.video_id})"
        if self.source.ext.lower() != ".npy" and self.resize_to is None:
            exp = expected_length(video.duration, self._fps(video), self.stride)
            if not length_ratio_ok(raw.shape[0], exp):
                warnings.warn(
                    f"{where}: {raw.shape[0]} steps, expected ~{exp:.0f} from duration*fps/stride",
                    DataWarning,
                    stacklevel=3,
                )
        total = self._seq_len(raw.shape[0])
        start, stop = 0, total
        if training and self.max_seq_len is not None and total > self.max_seq_len:
            # the crop is a function of (seed, epoch, video): a resumed run crops as an
            # uninterrupted one would, whatever the worker layout
            if epoch is None:
                start = int(torch.randint(0, total - self.max_seq_len + 1, (1,)).item())
            else:
                rng = np.random.default_rng([self.seed, int(epoch), int(index)])
                start = int(rng.integers(0, total - self.max_seq_len + 1))
            stop = start + self.max_seq_len
        if self.resize_to is not None:  # the whole file is read and checked
            check_finite(raw, where)
            x = resize_features(downsample_features(raw, self.downsample), self.resize_to)
            x = np.array(x[start:stop], dtype=np.float32)  # a copy, off the mmap
        else:  # only the rows of the crop are read and checked
            k = self.downsample
            x = np.array(raw[start * k : stop * k], dtype=np.float32)
            check_finite(x, where, offset=start * k)
            x = downsample_features(x, k)
        return np.ascontiguousarray(x, dtype=np.float32), start, stop, total

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """``item`` is an index, or ``(index, epoch)`` from a sampler that seeds the crops."""
        i, epoch = item if isinstance(item, tuple) else (item, None)
        video, base = self.videos[i], self.mappings[i]
        x, start, stop, total = self._read(video, self.training, epoch, i)
        mapping = base.shifted(start) if start else base
        segs = mapping.to_index(video.segments).reshape(-1, 2)
        keep = np.arange(len(segs))
        if start > 0 or stop < total:  # a crop: clip ground truths cut by its edges
            lo = -0.5 if start > 0 else -np.inf
            hi = (stop - start) - 0.5 if stop < total else np.inf
            clipped = np.stack([np.maximum(segs[:, 0], lo), np.minimum(segs[:, 1], hi)], axis=1)
            share = (clipped[:, 1] - clipped[:, 0]) / (segs[:, 1] - segs[:, 0])
            keep = np.flatnonzero((share > 0) & (share >= self.crop_min_keep))
            segs = clipped[keep]
        return {
            "features": torch.from_numpy(x),
            "gt_segments": torch.as_tensor(segs, dtype=torch.float32).reshape(-1, 2),
            "gt_labels": torch.as_tensor(video.labels[keep], dtype=torch.int64),
            "mapping": mapping,
            "meta": {
                "video_id": video.video_id,
                "duration": video.duration,
                "fps": video.fps if video.fps is not None else self.default_fps,
                "crop_start": int(start),
                "gt_index": keep.astype(np.int64),
                # what the evaluator reads: the annotations as published
                "ground_truth": video.ground_truth(),
            },
        }


def collate_videos(samples: Sequence[dict[str, Any]]) -> Batch:
    """Pad a list of samples into a :class:`~salad_lightning.data.batch.Batch`."""
    if not samples:
        raise ValueError("collate_videos: empty batch")
    b = len(samples)
    lengths = torch.tensor([s["features"].shape[0] for s in samples], dtype=torch.int64)
    t_max, c = int(lengths.max()), samples[0]["features"].shape[1]
    features = torch.zeros(b, t_max, c, dtype=torch.float32)
    n_max = max(s["gt_labels"].shape[0] for s in samples)
    gt_segments = torch.zeros(b, n_max, 2, dtype=torch.float32)
    gt_labels = torch.zeros(b, n_max, dtype=torch.int64)
    gt_mask = torch.zeros(b, n_max, dtype=torch.bool)
    for j, s in enumerate(samples):
        if s["features"].shape[1] != c:
            raise ValueError(
                f"collate_videos: video {s['meta']['video_id']} has {s['features'].shape[1]} "
                f"channels, expected {c} like the first video of the batch"
            )
        features[j, : lengths[j]] = s["features"]
        n = s["gt_labels"].shape[0]
        gt_segments[j, :n] = s["gt_segments"]
        gt_labels[j, :n] = s["gt_labels"]
        gt_mask[j, :n] = True
    frame_mask = torch.arange(t_max).unsqueeze(0) < lengths.unsqueeze(1)
    maps = [s["mapping"] for s in samples]
    return Batch(
        features=features,
        frame_mask=frame_mask,
        lengths=lengths,
        gt_segments=gt_segments,
        gt_labels=gt_labels,
        gt_mask=gt_mask,
        scale=torch.tensor([m.scale for m in maps], dtype=torch.float64),
        offset=torch.tensor([m.offset for m in maps], dtype=torch.float64),
        duration=torch.tensor([m.duration for m in maps], dtype=torch.float64),
        meta=[s["meta"] for s in samples],
        lengths_host=lengths.clone(),
    )
