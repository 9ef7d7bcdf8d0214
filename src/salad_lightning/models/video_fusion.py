"""Video-level classifier fusion: an external classifier's class scores per video, fused
into a detector's detections (docs/evaluation.md, "Numbers comparable with published
tables"). numpy only.

The ActivityNet 1.3 detectors SALAD is compared with (BMN, G-TAD, BSN) and current ones
such as ActionFormer publish numbers whose labels come from a video-level classifier (ActivityNet 1.3: the CUHK scores file, ``cuhk_val_simp_share.json``;
THUMOS14: UntrimmedNet scores), not from their own heads. Their post-processing takes
each video's top-k classes of that classifier and gives every class-agnostic proposal
each of them, scored proposal score x class score:

- BMN/G-TAD style (G-TAD's ``gtad_postprocess.py``, OpenTAD's ``CUHKANETClassifier``):
  the top 2 classes, ``score * class_score``;
- ActionFormer (``libs/utils/postprocessing.py::postprocess_results``): the top 2
  classes, ``sqrt(score * class_score)``, from at most 200 detections per video.

SALAD's detections are already class-aware (a label per detection, from its
classification head), so the two modes here say what happens to that label:

- ``topk`` (the field's tables): each detection's segment and score is given each of
  the video's ``k`` best-scored external classes in place of SALAD's label (k rows per
  detection), scored ``combine(score, class_score)``. SALAD's own classification no
  longer decides the label; its post-processing (NMS, top-k) has already run, as the
  field's runs before the fusion.
- ``product``: SALAD's label stays; the score becomes ``combine(score, class_score of
  that label)``: the external classifier re-ranks SALAD's detections and removes none.

``combine``: ``multiply`` (BMN, G-TAD) or ``sqrt`` (ActionFormer). A video the file does
not score keeps SALAD's own detections unchanged (counted in the run's report).

The file: ActivityNet's CUHK layout ``{"class": [K names], "results": {video_id: [K
scores]}}`` (video ids without ActivityNet's ``v_`` prefix, as the official annotation
file's), or a plain ``{video_id: {class_name: score}}`` (also under ``"results"``), where
a class a video does not list scores 0. Class names are the dataset's (its annotation
file's labels); a name the dataset does not know is an error naming it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning.data.detections import VideoDetections

log = logging.getLogger(__name__)

VIDEO_FUSION_MODES = ("topk", "product")
COMBINE_MODES = ("multiply", "sqrt")
# the `postprocess` keys of the fusion: the session reads them, `postprocess_batch` never
VIDEO_FUSION_KEYS = ("video_scores", "video_fusion", "video_topk", "video_combine")
PREFIX = "v_"  # ActivityNet's file-name prefix, which some scores files keep in their ids


@dataclass(frozen=True, eq=False)
class VideoScores:
    """An external classifier's class scores, one row per video, in the dataset's class
    order (``matrix[row(video)]``: (K,) float64, >= 0)."""

    source: str  # the file they were read from
    rows: Mapping[str, int] = field(repr=False)  # video id as the file writes it -> row
    matrix: np.ndarray = field(repr=False)  # (V, K) float64

    def row(self, video_id: str) -> np.ndarray | None:
        """The video's (K,) scores, or None when the file has none. The id is looked up as
        it is, then with ActivityNet's ``v_`` prefix added or removed (files differ)."""
        for key in (video_id, PREFIX + video_id):
            if key in self.rows:
                return self.matrix[self.rows[key]]
        if video_id.startswith(PREFIX) and video_id[len(PREFIX) :] in self.rows:
            return self.matrix[self.rows[video_id[len(PREFIX) :]]]
        return None

    def without_scores(self, video_ids: Iterable[str]) -> list[str]:
        """The ids among ``video_ids`` that the file does not score, sorted."""
        return sorted(v for v in set(video_ids) if self.row(v) is None)


def read_video_scores(path: str | Path, class_names: Sequence[str]) -> VideoScores:
    """Read and check a scores file against the dataset's classes (``class_names``, in
    class-index order). Unknown class names, score vectors of the wrong length and
    scores that are negative or not finite are errors naming the file and what was
    found; classes the file never scores are logged (their score is 0)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"postprocess.video_scores: no such file {path}")
    with open(path) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    names = [str(n) for n in class_names]
    index = {n: i for i, n in enumerate(names)}
    file_classes = doc.get("class")
    results = doc["results"] if isinstance(doc.get("results"), dict) else doc
    if file_classes is not None:
        if not isinstance(file_classes, list) or len(set(map(str, file_classes))) != len(
            file_classes
        ):
            raise ValueError(f"{path}: 'class' must be a list of distinct class names")
        file_classes = [str(c) for c in file_classes]
    unknown: set[str] = {c for c in file_classes or () if c not in index}
    rows: dict[str, int] = {}
    matrix = np.zeros((len(results), len(names)), dtype=np.float64)
    scored = np.zeros(len(names), dtype=bool)
    for r, (vid, value) in enumerate(results.items()):
        if isinstance(value, Mapping):
            pairs = [(str(c), s) for c, s in value.items()]
        elif isinstance(value, list):
            if file_classes is None:
                raise ValueError(
                    f"{path}: video {vid!r} has a list of {len(value)} scores but the file "
                    "names no classes (a top-level 'class' list, as the CUHK file has)"
                )
            if len(value) != len(file_classes):
                raise ValueError(
                    f"{path}: video {vid!r} has {len(value)} scores for the file's "
                    f"{len(file_classes)} classes"
                )
            pairs = list(zip(file_classes, value))
        else:
            raise ValueError(
                f"{path}: video {vid!r}: expected a list of scores or a {{class: score}} "
                f"mapping, found {type(value).__name__}"
            )
        for name, score in pairs:
            if name not in index:
                unknown.add(name)
                continue
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ValueError(f"{path}: video {vid!r}, class {name!r}: score {score!r}")
            if not (math.isfinite(score) and score >= 0):
                raise ValueError(
                    f"{path}: video {vid!r}, class {name!r}: scores must be finite and "
                    f">= 0, found {score}"
                )
            matrix[r, index[name]] = float(score)
            scored[index[name]] = True
        rows[str(vid)] = r
    if unknown:
        shown = sorted(unknown)
        raise ValueError(
            f"{path}: {len(shown)} class name(s) not in the dataset's class index: "
            f"{shown[:10]}{' ...' if len(shown) > 10 else ''}; the dataset has {len(names)} "
            f"classes, e.g. {names[:5]}"
        )
    never = [names[c] for c in np.flatnonzero(~scored)]
    if never and rows:
        log.warning(
            "%s scores no video for %d of the dataset's %d classes (their score is 0): %s%s",
            path, len(never), len(names), never[:10], " ..." if len(never) > 10 else "",
        )  # fmt: skip
    return VideoScores(source=str(path), rows=rows, matrix=matrix)


def _combine(score: np.ndarray, class_score: np.ndarray, combine: str) -> np.ndarray:
    if combine == "multiply":
        return score * class_score
    if combine == "sqrt":
        return np.sqrt(score * class_score)
    raise ValueError(f"unknown video_combine {combine!r}; allowed: {', '.join(COMBINE_MODES)}")


def fuse_video_scores(
    detections: VideoDetections,
    class_scores: np.ndarray | None,
    *,
    mode: str = "topk",
    k: int = 2,
    combine: str = "multiply",
) -> VideoDetections:
    """One video's detections fused with its external class scores (K,) (module
    docstring): ``topk`` gives every detection each of the ``k`` best-scored classes
    (equal class scores: the lower class index first; k rows per detection),
    ``product`` keeps the labels. Scores become ``combine(score, class_score)``; rows are
    sorted by score, descending (equal scores keep their order: by class rank, then
    SALAD's order). ``class_scores`` None (the file has no scores for the video): the
    detections unchanged. ``best_score`` (before NMS, SALAD's) is kept."""
    if mode not in VIDEO_FUSION_MODES:
        raise ValueError(f"unknown video_fusion {mode!r}; allowed: {', '.join(VIDEO_FUSION_MODES)}")
    if combine not in COMBINE_MODES:
        raise ValueError(f"unknown video_combine {combine!r}; allowed: {', '.join(COMBINE_MODES)}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"video_topk must be a positive integer, found {k!r}")
    if class_scores is None:
        return detections
    class_scores = np.asarray(class_scores, dtype=np.float64)
    n = len(detections)
    if mode == "topk":
        classes = np.argsort(-class_scores, kind="stable")[: int(k)]
        segments = np.tile(detections.segments, (len(classes), 1))
        labels = np.repeat(classes, n)
        scores = _combine(np.tile(detections.scores, len(classes)), class_scores[labels], combine)
    else:
        if n and detections.labels.max() >= len(class_scores):
            raise ValueError(
                f"video {detections.video_id!r}: label {int(detections.labels.max())} but "
                f"{len(class_scores)} class scores"
            )
        segments, labels = detections.segments, detections.labels
        scores = _combine(detections.scores, class_scores[labels], combine)
    order = np.argsort(-scores, kind="stable")
    return VideoDetections(
        detections.video_id,
        segments[order],
        scores[order],
        labels[order],
        best_score=detections.best_score,
    )


class VideoFusion:
    """The fusion a run applies to every video's detections (``DetectorModule``): the
    scores read once when the model is built, and the mode (:func:`fuse_video_scores`).

    A plain class, not a dataclass: Hydra turns a dataclass given to ``instantiate`` into
    a config (a dict), and the session hands this to the model through ``instantiate``.
    """

    def __init__(
        self, scores: VideoScores, *, mode: str = "topk", k: int = 2, combine: str = "multiply"
    ) -> None:
        self.scores, self.mode, self.k, self.combine = scores, mode, k, combine
        # check the settings now, not at the first validation batch
        empty = VideoDetections("", np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64))
        fuse_video_scores(empty, np.zeros(1), mode=mode, k=k, combine=combine)

    def __repr__(self) -> str:
        return (
            f"VideoFusion({self.scores.source!r}, mode={self.mode!r}, k={self.k}, "
            f"combine={self.combine!r})"
        )

    def __call__(self, detections: VideoDetections) -> VideoDetections:
        return fuse_video_scores(
            detections,
            self.scores.row(detections.video_id),
            mode=self.mode,
            k=self.k,
            combine=self.combine,
        )

    def describe(self, video_ids: Iterable[str]) -> dict[str, Any]:
        """What ``metrics.json`` says of the fusion on a split's videos (``video_ids``):
        mode, k, combine, file, and the videos the file does not score, named."""
        ids = set(video_ids)
        missing = self.scores.without_scores(ids)
        return {
            "mode": self.mode,
            "k": self.k if self.mode == "topk" else None,
            "combine": self.combine,
            "file": self.scores.source,
            "videos": len(ids),
            "videos_without_scores": len(missing),
            "without_scores": missing,
        }


def load_video_fusion(
    node: Mapping[str, Any] | None, class_names: Sequence[str] | None
) -> VideoFusion | None:
    """The fusion the ``postprocess`` node asks for (``video_scores``: the file, null:
    none; ``video_fusion``, ``video_topk``, ``video_combine``), its file read and
    checked against the dataset's classes."""
    if not node or not node.get("video_scores"):
        return None
    if class_names is None:
        raise ValueError(
            "postprocess.video_scores needs the dataset's class names to read the scores "
            "by: give the annotation file (or dataset.datamodule.class_index_file)"
        )
    return VideoFusion(
        scores=read_video_scores(node["video_scores"], class_names),
        mode=str(node.get("video_fusion", "topk")),
        k=node.get("video_topk", 2),
        combine=str(node.get("video_combine", "multiply")),
    )
