"""ActivityNet-style annotation files: videos, subsets, class index, repairs.

One schema covers the three sources the project reads (docs/method.md §1)::

    {"version": ..., "taxonomy": [...],          # both optional
     "database": {video_id: {"subset": str, "duration": sec, "fps": float?,
                             "annotations": [{"label": str, "segment": [s, e],
                                              "label_id": int?}, ...]}}}

- ActionFormer's THUMOS14 file (``label_id`` 0-19, ``fps`` per video),
- the official ActivityNet 1.3 file (a ``taxonomy`` whose leaves are the 200 classes,
  labels by name only, no ``fps``, ``url`` / ``resolution`` keys, ``testing`` videos
  without annotations),
- custom files in the same schema, and subsets of any of them.

Files are taken as published. Each video keeps two views of its annotations:

- ``raw_segments`` / ``raw_labels``: every annotation exactly as written, what the
  official evaluator reads (a zero-length segment is a positive nothing can match);
- ``segments`` / ``labels``: the training targets. A segment that cannot be a target
  (zero length, end before start, entirely outside ``[0, duration]``) is left out;
  one that overflows ``[0, duration]`` is clipped to it. Each repair is recorded
  (:class:`Repair`) for the run's ``data_report.json``.

No torch here: the evaluation command reads annotations and must start fast.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning.data.detections import VideoGroundTruth


class DataWarning(UserWarning):
    """Input problems the data layer repairs or tolerates (skipped files, odd lengths)."""


def read_json(path: str | Path) -> Any:
    """A JSON file, gzipped (``.gz``) or not."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    return json.loads(raw)


def _first(items: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(items[:k])
    return shown + (f", ... ({len(items) - k} more)" if len(items) > k else "")


@dataclass(frozen=True)
class ClassIndex:
    """Action class names in index order; index ``k`` is the network's column ``k + 1``.

    A name may be ``None``: a class the network has a column for but the annotation
    file never names (a ``label_id`` absent from a subset of the file, or padding up
    to ``num_classes``). Its detections cannot be written under a name.
    """

    names: tuple[str | None, ...]

    def __post_init__(self) -> None:
        names = tuple(None if n is None else str(n) for n in self.names)
        object.__setattr__(self, "names", names)
        dup = [n for n, c in Counter(n for n in names if n is not None).items() if c > 1]
        if dup:
            raise ValueError(f"class index: duplicate class names {dup}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def name_to_id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names) if n is not None}

    @property
    def num_named(self) -> int:
        return sum(n is not None for n in self.names)

    def padded(self, num_classes: int) -> ClassIndex:
        """The same classes with unnamed ones appended up to ``num_classes``."""
        return ClassIndex(self.names + (None,) * (num_classes - len(self)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"names": list(self.names)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ClassIndex:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("names"), list):
            raise ValueError(f"{path}: expected a class index JSON {{'names': [...]}}")
        return cls(tuple(data["names"]))


@dataclass(frozen=True)
class Repair:
    """One annotation that training could not take as written."""

    video_id: str
    subset: str
    annotation: int  # position in the video's list
    label: str
    segment: tuple[float, float]  # as written
    duration: float  # of the video
    action: str  # "dropped" | "clipped"
    reason: str  # one of REPAIR_REASONS

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "segment": list(self.segment)}


REPAIR_REASONS = {
    "zero length": "dropped",
    "ends before it starts": "dropped",
    "outside the video": "dropped",  # entirely outside [0, duration]
    "starts before 0": "clipped",
    "ends after the video's end": "clipped",
    "starts before 0 and ends after the video's end": "clipped",
}


@dataclass(frozen=True, eq=False)
class VideoRecord:
    """One annotated video: training targets and the annotations as published (seconds)."""

    video_id: str
    subset: str
    duration: float
    fps: float | None
    segments: np.ndarray = field(repr=False)  # (N, 2) float64, training targets
    labels: np.ndarray = field(repr=False)  # (N,) int64, class index
    raw_segments: np.ndarray | None = field(default=None, repr=False)  # (M, 2) as written
    raw_labels: np.ndarray | None = field(default=None, repr=False)  # (M,)

    def __post_init__(self) -> None:
        if self.raw_segments is None:  # a record built by hand: nothing was repaired
            object.__setattr__(self, "raw_segments", self.segments)
            object.__setattr__(self, "raw_labels", self.labels)

    @property
    def num_segments(self) -> int:
        return len(self.labels)

    def ground_truth(self) -> VideoGroundTruth:
        """The annotations as published, what the evaluator reads (not the training targets)."""
        return VideoGroundTruth(self.video_id, self.raw_segments, self.raw_labels, self.duration)


@dataclass(eq=False)
class AnnotationSet:
    """The parsed file; ``repairs`` lists what training leaves out or clips."""

    path: str
    version: str | None
    class_index: ClassIndex
    videos: dict[str, VideoRecord]
    repairs: list[Repair] = field(default_factory=list)
    class_source: str = "names"  # "taxonomy" | "label_id" | "names" | "given"

    @property
    def num_clipped(self) -> int:
        return sum(r.action == "clipped" for r in self.repairs)

    @property
    def num_dropped(self) -> int:
        return sum(r.action == "dropped" for r in self.repairs)

    def subsets(self) -> dict[str, int]:
        """Subset name (as written in the file) -> number of videos."""
        return dict(sorted(Counter(v.subset for v in self.videos.values()).items()))

    def select(self, subset: str | Iterable[str]) -> list[VideoRecord]:
        """The videos of one or several subsets, matched by name case-insensitively."""
        wanted = [subset] if isinstance(subset, str) else list(subset)
        out: list[VideoRecord] = []
        for name in wanted:
            key = str(name).lower()
            found = [v for v in self.videos.values() if v.subset.lower() == key]
            if not found:
                present = ", ".join(f"{s} ({n} videos)" for s, n in self.subsets().items())
                raise ValueError(
                    f"{self.path}: subset {name!r} has no videos; subsets present: {present}"
                )
            out.extend(found)
        return out


def taxonomy_leaves(data: dict[str, Any]) -> list[str]:
    """Leaf node names of an ActivityNet ``taxonomy`` (parents are not classes), sorted."""
    nodes = [n for n in data.get("taxonomy") or [] if isinstance(n, dict) and "nodeName" in n]
    parents = {str(n.get("parentName")) for n in nodes if n.get("parentName") is not None}
    return sorted({str(n["nodeName"]) for n in nodes} - parents)


def _annotations(path: str, database: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for vid, raw in database.items():
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: video {vid}: expected an object, found {type(raw).__name__}")
        anns = raw.get("annotations") or []
        if not isinstance(anns, list):
            raise ValueError(f"{path}: video {vid}: 'annotations' must be a list")
        out += [(vid, a) for a in anns]
    return out


def class_index_from_file(
    path: str | Path, data: dict[str, Any], num_classes: int | None = None
) -> tuple[ClassIndex, str]:
    """The file's class index and where it came from (docs/data.md, "Classes").

    1. ``taxonomy``: its leaf nodes, sorted by name (ActivityNet 1.3: 200 leaves);
    2. else ``label_id`` when every annotation has one: index = ``label_id`` as given,
       gaps allowed (a subset of the file); names of absent ids are ``None``;
    3. else the sorted label names of all subsets.

    With ``num_classes`` the index has exactly that many classes (unnamed ones appended);
    more named classes than that is an error.
    """
    path = str(path)
    anns = _annotations(path, data["database"])
    leaves = taxonomy_leaves(data)
    if leaves:
        index, source = ClassIndex(tuple(leaves)), "taxonomy"
    elif anns and all("label_id" in a for _, a in anns):
        by_id: dict[int, str] = {}
        for vid, a in anns:
            lid, name = int(a["label_id"]), str(a["label"])
            if lid < 0 or (num_classes is not None and lid >= num_classes):
                bound = f"0..{num_classes - 1} (dataset.num_classes={num_classes})"
                raise ValueError(
                    f"{path}: video {vid}: label {name!r} has label_id {lid}, outside "
                    f"{bound if num_classes is not None else '>= 0'}"
                )
            if by_id.setdefault(lid, name) != name:
                raise ValueError(
                    f"{path}: video {vid}: label_id {lid} is {name!r} here but "
                    f"{by_id[lid]!r} elsewhere"
                )
        names = [by_id.get(i) for i in range(max(by_id) + 1)]
        dup = [n for n, c in Counter(n for n in names if n is not None).items() if c > 1]
        if dup:
            raise ValueError(f"{path}: label(s) {dup} carry several label_id values")
        index, source = ClassIndex(tuple(names)), "label_id"
    else:
        index, source = ClassIndex(tuple(sorted({str(a["label"]) for _, a in anns}))), "names"
    if num_classes is not None:
        if len(index) > num_classes:
            raise ValueError(
                f"{path}: {index.num_named} classes (from its {source}) but "
                f"dataset.num_classes is {num_classes}; set dataset.num_classes={len(index)}"
            )
        index = index.padded(num_classes)
    return index, source


def _all_names(path: str, data: dict[str, Any]) -> list[str]:
    names = {
        str(n["nodeName"])
        for n in data.get("taxonomy") or []
        if isinstance(n, dict) and "nodeName" in n
    }
    for vid, a in _annotations(path, data["database"]):
        if not isinstance(a, dict) or not isinstance(a.get("label"), str):
            raise ValueError(
                f"{path}: video {vid}: every annotation needs a 'label' string, found {a}"
            )
        names.add(a["label"])
    return sorted(names)


def _segment_repair(start: float, end: float, duration: float) -> str | None:
    """The reason (a key of REPAIR_REASONS) when training cannot take ``[start, end]``."""
    if end == start:
        return "zero length"
    if end < start:
        return "ends before it starts"
    if start >= duration or end <= 0:
        return "outside the video"
    if start < 0 and end > duration:
        return "starts before 0 and ends after the video's end"
    if start < 0:
        return "starts before 0"
    if end > duration:
        return "ends after the video's end"
    return None


def _parse_video(
    path: str, vid: str, raw: dict[str, Any], index: dict[str, int], require_duration: bool
) -> tuple[VideoRecord, list[Repair]]:
    for key in ("subset", "duration") if require_duration else ("subset",):
        if key not in raw:
            raise ValueError(f"{path}: video {vid}: missing key {key!r}")
    duration = float(raw.get("duration", np.nan))
    if require_duration and (not np.isfinite(duration) or duration <= 0):
        raise ValueError(f"{path}: video {vid}: duration must be > 0, found {raw['duration']}")
    fps = raw.get("fps")
    fps = None if fps is None else float(fps)
    if fps is not None and fps <= 0:
        raise ValueError(f"{path}: video {vid}: fps must be > 0, found {fps}")
    subset = str(raw["subset"])
    raw_segs, raw_labels, segs, labels, repairs = [], [], [], [], []
    for j, ann in enumerate(raw.get("annotations") or []):
        seg, name = ann.get("segment"), ann.get("label")
        try:
            start, end = float(seg[0]), float(seg[1])
            if len(seg) != 2 or name is None or not (np.isfinite(start) and np.isfinite(end)):
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"{path}: video {vid}: annotation {j}: expected 'label' and "
                f"'segment': [start, end] (finite seconds), found {ann}"
            ) from None
        if not isinstance(name, str) or name not in index:
            raise ValueError(
                f"{path}: video {vid}: annotation {j}: label {name!r} is not in the class "
                f"index ({len(index)} named classes: {_first(sorted(index))})"
            )
        raw_segs.append((start, end))
        raw_labels.append(index[str(name)])
        reason = _segment_repair(start, end, duration)
        if reason is not None:
            action = REPAIR_REASONS[reason]
            repairs.append(
                Repair(str(vid), subset, j, str(name), (start, end), duration, action, reason)
            )
            if action == "dropped":
                continue
            start, end = max(start, 0.0), min(end, duration)
        segs.append((start, end))
        labels.append(index[str(name)])
    record = VideoRecord(
        video_id=str(vid),
        subset=subset,
        duration=duration,
        fps=fps,
        segments=np.asarray(segs, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64),
        raw_segments=np.asarray(raw_segs, dtype=np.float64).reshape(-1, 2),
        raw_labels=np.asarray(raw_labels, dtype=np.int64),
    )
    return record, repairs


def load_annotations(
    path: str | Path,
    *,
    class_index: ClassIndex | None = None,
    num_classes: int | None = None,
    classes: str = "file",
    require_duration: bool = True,
) -> AnnotationSet:
    """Read an annotation file as published (``.json`` or ``.json.gz``).

    The class index is ``class_index`` when given (a label absent from it is an error
    naming the label, the video and the file), else :func:`class_index_from_file`
    with ``num_classes`` (``classes="file"``), or with ``classes="names"`` every name
    the file uses, as a label or a taxonomy node, sorted: what the evaluator needs, which
    asks nothing of ``label_id``. Repairs of the training targets are listed in
    ``repairs``; without ``require_duration`` a video may lack its duration (the
    evaluator does not need it; no segment is then found outside the video).
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError(f"{path}: expected an object with a 'database' of videos")
    source = "given"
    if class_index is None and classes == "names":
        class_index, source = ClassIndex(tuple(_all_names(path, data))), "names"
    elif class_index is None:
        class_index, source = class_index_from_file(path, data, num_classes)
    index = class_index.name_to_id
    videos: dict[str, VideoRecord] = {}
    repairs: list[Repair] = []
    for vid, raw in data["database"].items():
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: video {vid}: expected an object, found {type(raw).__name__}")
        record, fixed = _parse_video(path, vid, raw, index, require_duration)
        videos[record.video_id] = record
        repairs += fixed
    version = data.get("version")
    return AnnotationSet(
        path=path,
        version=None if version is None else str(version),
        class_index=class_index,
        videos=videos,
        repairs=repairs,
        class_source=source,
    )
