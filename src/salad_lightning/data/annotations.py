"""ActivityNet-style annotation files: videos, subsets, class index, input checks.

One schema covers the three sources the project reads (SPEC §1)::

    {"version": ..., "taxonomy": ...,           # both optional
     "database": {video_id: {"subset": str, "duration": sec, "fps": float?,
                             "annotations": [{"label": str, "segment": [s, e],
                                              "label_id": int?}, ...]}}}

- ActionFormer's THUMOS14 file (``label_id`` 0-19, ``fps`` per video),
- the official ActivityNet 1.3 file (labels by name only, no ``fps``),
- custom files in the same schema.

No torch here: the evaluation command reads annotations and must start fast.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DataWarning(UserWarning):
    """Input problems the data layer repairs or tolerates (clipped segments, skipped files)."""


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
    """Action class names in index order; index ``k`` is the network's column ``k + 1``."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        dup = [n for n, c in Counter(self.names).items() if c > 1]
        if dup:
            raise ValueError(f"class index: duplicate class names {dup}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def name_to_id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"label {name!r} is not in the class index ({len(self)} classes: "
                f"{_first(list(self.names))})"
            ) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"names": list(self.names)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ClassIndex:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("names"), list):
            raise ValueError(f"{path}: expected a class index JSON {{'names': [...]}}")
        return cls(tuple(data["names"]))


@dataclass(frozen=True, eq=False)
class VideoRecord:
    """One annotated video; ``segments`` are in seconds, already checked and clipped."""

    video_id: str
    subset: str
    duration: float
    fps: float | None
    segments: np.ndarray = field(repr=False)  # (N, 2) float64, seconds
    labels: np.ndarray = field(repr=False)  # (N,) int64, class index

    @property
    def num_segments(self) -> int:
        return len(self.labels)


@dataclass(eq=False)
class AnnotationSet:
    """The parsed file. ``num_clipped`` / ``num_dropped`` count the repaired segments."""

    path: str
    version: str | None
    class_index: ClassIndex
    videos: dict[str, VideoRecord]
    num_clipped: int = 0
    num_dropped: int = 0

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


def _class_index_from_file(path: str, database: dict[str, Any]) -> ClassIndex:
    anns = [(vid, a) for vid, v in database.items() for a in v.get("annotations", [])]
    if anns and all("label_id" in a for _, a in anns):
        by_id: dict[int, str] = {}
        for vid, a in anns:
            lid, name = int(a["label_id"]), str(a["label"])
            if by_id.setdefault(lid, name) != name:
                raise ValueError(
                    f"{path}: video {vid}: label_id {lid} is {name!r} here but "
                    f"{by_id[lid]!r} elsewhere"
                )
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(
                f"{path}: label_id values must be 0..K-1, found {sorted(by_id)}; "
                "remove label_id to index the classes by sorted name"
            )
        names = [by_id[i] for i in range(len(by_id))]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ValueError(f"{path}: label(s) {dup} carry several label_id values")
        return ClassIndex(tuple(names))
    return ClassIndex(tuple(sorted({str(a["label"]) for _, a in anns})))


def _parse_video(path: str, vid: str, raw: Any, index: dict[str, int]) -> tuple[Any, ...]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: video {vid}: expected an object, found {type(raw).__name__}")
    for key in ("subset", "duration"):
        if key not in raw:
            raise ValueError(f"{path}: video {vid}: missing key {key!r}")
    duration = float(raw["duration"])
    if not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"{path}: video {vid}: duration must be > 0, found {raw['duration']}")
    fps = raw.get("fps")
    fps = None if fps is None else float(fps)
    if fps is not None and fps <= 0:
        raise ValueError(f"{path}: video {vid}: fps must be > 0, found {fps}")
    segs, labels, clipped, dropped = [], [], 0, 0
    for j, ann in enumerate(raw.get("annotations") or []):
        seg, name = ann.get("segment"), ann.get("label")
        if name is None or seg is None or len(seg) != 2:
            raise ValueError(
                f"{path}: video {vid}: annotation {j}: expected 'label' and "
                f"'segment': [start, end], found {ann}"
            )
        start, end = float(seg[0]), float(seg[1])
        if not end > start:
            raise ValueError(
                f"{path}: video {vid}: annotation {j} ({name}): segment end must be > start, "
                f"found [{seg[0]}, {seg[1]}]"
            )
        if str(name) not in index:
            raise ValueError(
                f"{path}: video {vid}: annotation {j}: label {name!r} is not in the class "
                f"index ({len(index)} classes: {_first(sorted(index))})"
            )
        if start >= duration or end <= 0:  # nothing of it inside the video
            dropped += 1
            continue
        if start < 0 or end > duration:
            clipped += 1
            start, end = max(start, 0.0), min(end, duration)
        segs.append((start, end))
        labels.append(index[str(name)])
    record = VideoRecord(
        video_id=str(vid),
        subset=str(raw["subset"]),
        duration=duration,
        fps=fps,
        segments=np.asarray(segs, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64),
    )
    return record, clipped, dropped


def load_annotations(path: str | Path, *, class_index: ClassIndex | None = None) -> AnnotationSet:
    """Read and check an annotation file.

    The class index is ``class_index`` when given (labels absent from it are an error),
    else built from the file: by ``label_id`` when every annotation has one, else from
    the sorted label names of all subsets.

    Segments with ``end <= start`` are an error. Segments reaching outside
    ``[0, duration]`` are clipped to it, those entirely outside are dropped; both are
    counted and reported in one :class:`DataWarning`.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = read_json(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError(f"{path}: expected an object with a 'database' of videos")
    database = data["database"]
    if class_index is None:
        class_index = _class_index_from_file(path, database)
    index = class_index.name_to_id
    videos: dict[str, VideoRecord] = {}
    repaired: Counter[str] = Counter()
    n_clip = n_drop = 0
    for vid, raw in database.items():
        record, clipped, dropped = _parse_video(path, vid, raw, index)
        videos[record.video_id] = record
        n_clip, n_drop = n_clip + clipped, n_drop + dropped
        if clipped or dropped:
            repaired[f"{record.video_id} ({record.subset})"] += clipped + dropped
    if repaired:
        where = _first([f"{v}: {n}" for v, n in repaired.most_common()])
        warnings.warn(
            f"{path}: {n_clip + n_drop} segments reach outside [0, duration] of their video: "
            f"{n_clip} clipped to it, {n_drop} entirely outside and dropped ({where})",
            DataWarning,
            stacklevel=2,
        )
    version = data.get("version")
    return AnnotationSet(
        path=path,
        version=None if version is None else str(version),
        class_index=class_index,
        videos=videos,
        num_clipped=n_clip,
        num_dropped=n_drop,
    )
