"""The proposals file: what a finished SALAD run hands to P-GCN, one file per split.

The layout is the ActivityNet results layout (docs/method.md §1) without the label, plus
what made the proposals::

    {"version": "salad-lightning-proposals/1",
     "made_by": {"checkpoint": PATH, "checkpoint_sha256": HEX, "dataset": NAME,
                 "annotation_file": PATH, "settings": {...}},
     "results": {video_id: [{"score": x, "segment": [start_s, end_s]}, ...]}}

Segments are in seconds; every video's list is sorted by score, descending. P-GCN reads
its proposals from a text list of frame numbers with the proposals' best tIoU already
computed (its ``ops/io.py``); here the labelling is done from the ground truth when the
file is read for training (``pgcn/targets.py``), so the file holds the first stage's
output only and serves every split alike.

Reading is fast: a THUMOS14 test split with 800 proposals per video holds about 170,000
proposals, and apart from ``json.load`` every step runs in C-level loops (``map``,
``itemgetter``, ``np.fromiter``); only when those fail does a Python loop look for the
proposal to name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning.utils.io import atomic_write_json, file_sha256, no_gc, read_json

__all__ = [
    "MADE_BY_KEYS",
    "PROPOSALS_VERSION",
    "ProposalsFileError",
    "VideoProposals",
    "file_sha256",
    "read_proposals",
    "write_proposals",
]

PROPOSALS_VERSION = "salad-lightning-proposals/1"
# What ``made_by`` must say: the checkpoint (path and content hash), the dataset and its
# annotation file, and the post-processing settings that produced the proposals.
MADE_BY_KEYS = ("checkpoint", "checkpoint_sha256", "dataset", "annotation_file", "settings")
_NUMBER = (int, float)  # exact types: JSON's true/false (bool) and strings are refused


class ProposalsFileError(ValueError):
    """A proposals file that cannot be used, worded for the user (file, video, problem)."""


@dataclass(frozen=True)
class VideoProposals:
    """One video's proposals: ``segments`` (P, 2) float64 seconds, ``scores`` (P,) float64.

    Built from any array-likes; the arrays are copied, checked (shapes, finite values,
    ``start <= end``) and sorted by score, descending (equal scores keep their order).
    """

    video_id: str
    segments: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        seg = np.array(self.segments, dtype=np.float64)
        score = np.array(self.scores, dtype=np.float64)
        where = f"video {self.video_id!r}"
        if seg.size == 0:
            seg = seg.reshape(0, 2)
        if seg.ndim != 2 or seg.shape[1] != 2 or score.ndim != 1:
            raise ValueError(
                f"{where}: expected segments (P, 2) and scores (P,), found {seg.shape} and "
                f"{score.shape}"
            )
        if len(seg) != len(score):
            raise ValueError(f"{where}: {len(seg)} segments but {len(score)} scores")
        bad = ~np.isfinite(seg).all(axis=1) | ~np.isfinite(score) | (seg[:, 0] > seg[:, 1])
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"{where}: proposal {j} must have a finite score and a segment [start, end] "
                f"of finite numbers with start <= end, got score {score[j]!r}, "
                f"segment {seg[j].tolist()!r}"
            )
        order = np.argsort(-score, kind="stable")
        seg, score = seg[order], score[order]
        seg.flags.writeable = False
        score.flags.writeable = False
        object.__setattr__(self, "segments", seg)
        object.__setattr__(self, "scores", score)

    def __len__(self) -> int:
        return len(self.scores)

    def top(self, k: int) -> VideoProposals:
        """The ``k`` best proposals (P-GCN's README: 800 per THUMOS14 video at test time)."""
        return VideoProposals(self.video_id, self.segments[:k], self.scores[:k])


def write_proposals(
    path: str | os.PathLike, proposals: Mapping[str, VideoProposals], made_by: dict[str, Any]
) -> Path:
    """Write ``proposals`` (video id -> :class:`VideoProposals`) atomically to ``path``.

    ``made_by`` must hold every key of :data:`MADE_BY_KEYS`; it is written as given
    (JSON-serialisable values). Floats are written with ``repr`` precision, so reading
    the file back gives the same float64 values.
    """
    if not isinstance(made_by, dict):
        raise TypeError(f"made_by must be a dict, found {type(made_by).__name__}")
    missing = [k for k in MADE_BY_KEYS if k not in made_by]
    if missing:
        raise ValueError(f"made_by lacks {missing}; expected the keys {list(MADE_BY_KEYS)}")
    with no_gc():
        return _write(path, proposals, made_by)


def _write(
    path: str | os.PathLike, proposals: Mapping[str, VideoProposals], made_by: dict[str, Any]
) -> Path:
    results = {}
    for vid, vp in proposals.items():
        if not isinstance(vp, VideoProposals) or vp.video_id != vid:
            found = vp.video_id if isinstance(vp, VideoProposals) else type(vp).__name__
            raise ValueError(
                f"proposals[{vid!r}] must be the VideoProposals of {vid!r}, found {found!r}"
            )
        results[vid] = [
            {"score": s, "segment": seg} for s, seg in zip(vp.scores.tolist(), vp.segments.tolist())
        ]
    obj = {"version": PROPOSALS_VERSION, "made_by": made_by, "results": results}
    return atomic_write_json(path, obj, indent=None)


def read_proposals(
    path: str | os.PathLike,
) -> tuple[dict[str, VideoProposals], dict[str, Any]]:
    """(video id -> :class:`VideoProposals`, ``made_by``) from a file :func:`write_proposals` wrote.

    :class:`ProposalsFileError` names the file and, for a bad proposal, the video and the
    proposal's position in its list: a file that is not JSON or not a proposals file (no
    ``"version": "salad-lightning-proposals/1"``), a missing ``made_by`` / ``results``
    object, a video whose value is not a list, a proposal without ``score`` or
    ``segment``, a segment that is not ``[start, end]`` of finite numbers with
    ``start <= end``, a score that is not a finite number.
    """
    with no_gc():
        return _read(path)


def _read(path: str | os.PathLike) -> tuple[dict[str, VideoProposals], dict[str, Any]]:
    data = read_json(path, ProposalsFileError)
    found = data.get("version") if isinstance(data, dict) else type(data).__name__
    if found != PROPOSALS_VERSION:
        raise ProposalsFileError(
            f'{path}: not a proposals file: expected "version": "{PROPOSALS_VERSION}", '
            f"found {found!r}"
        )
    made_by, results = data.get("made_by"), data.get("results")
    for key, value in (("made_by", made_by), ("results", results)):
        if not isinstance(value, dict):
            raise ProposalsFileError(f'{path}: expected a "{key}" object, found {value!r:.80}')
    return {vid: _video(str(path), vid, items) for vid, items in results.items()}, made_by


def _video(path: str, vid: str, items: Any) -> VideoProposals:
    if not isinstance(items, list):
        raise ProposalsFileError(f"{path}: video {vid!r}: expected a list of proposals")
    n = len(items)
    try:
        raw_scores = list(map(itemgetter("score"), items))
        raw_segments = list(map(itemgetter("segment"), items))
        if (np.fromiter(map(len, raw_segments), dtype=np.int64, count=n) != 2).any():
            raise ValueError
        values = list(chain.from_iterable(raw_segments))
        if not set(map(type, chain(raw_scores, values))) <= set(_NUMBER):
            raise ValueError
        score = np.fromiter(raw_scores, dtype=np.float64, count=n)
        seg = np.fromiter(values, dtype=np.float64, count=2 * n).reshape(n, 2)
        return VideoProposals(vid, seg, score)
    except (KeyError, TypeError, ValueError) as err:
        raise _bad_proposal(path, vid, items) from err


def _bad_proposal(path: str, vid: str, items: list) -> ProposalsFileError:
    """The slow second look that names the first malformed proposal."""
    for j, item in enumerate(items):
        where = f"{path}: video {vid!r}, proposal {j}"
        if not isinstance(item, dict) or not {"score", "segment"} <= item.keys():
            return ProposalsFileError(f'{where}: expected "score" and "segment", got {item!r:.80}')
        seg, score = item["segment"], item["score"]
        ok_seg = (
            isinstance(seg, list)
            and len(seg) == 2
            and all(type(v) in _NUMBER and np.isfinite(v) for v in seg)
            and seg[0] <= seg[1]
        )
        if not ok_seg:
            return ProposalsFileError(
                f'{where}: "segment" must be [start, end] in seconds, finite numbers with '
                f"start <= end, got {seg!r:.80}"
            )
        if type(score) not in _NUMBER or not np.isfinite(score):
            return ProposalsFileError(f'{where}: "score" must be a finite number, got {score!r}')
    return ProposalsFileError(f"{path}: video {vid!r}: unreadable proposals")
