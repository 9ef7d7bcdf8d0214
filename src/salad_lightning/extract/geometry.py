"""What a feature folder is: slices of frames, and the ``features.json`` that records them.

Feature ``i`` of a video covers resampled frames ``[i * stride, i * stride + window)``;
a video of ``n`` frames has ``(n - window) // stride + 1`` whole slices when
``n >= window`` and none otherwise (the extractor reports such a video as failed rather
than padding it). With the frame rate this is the data layer's clip mapping,
``TimeMapping.from_clip(fps=fps, stride=stride, window=window, duration=...)``, which
:meth:`FeatureGeometry.time_mapping` builds from the file.

``OUT/features.json``::

    {"format": 1, "version": <package version>,
     "settings": {"backbone", "streams", "models", "weights": {stream: {"path", "sha256"}
                  or null}, "fps", "window", "stride", "size", "crop", "resize",
                  "scaling": {stream: rule}, "flow": {TV-L1 parameters} or null,
                  "feature_dim", "stream_dims"},
     "videos": {video_id: {"source", "average_rate", "duration", "source_frames",
                           "frames", "features"}},
     "failed": {video_id: {"source", "reason"}}}

``fps`` is the resampled rate (the one the mapping needs), not a video's own
(``average_rate``); ``duration`` is in seconds; ``frames`` is the count after resampling.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salad_lightning.data.extracted import ABSENT, nested_differences, without_weight_paths
from salad_lightning.data.mapping import TimeMapping

__all__ = [
    "FEATURES_JSON",
    "FeatureGeometry",
    "FeatureSettingsError",
    "SliceChunker",
    "check_features_json",
    "geometry",
    "num_slices",
    "read_features_json",
    "settings_mismatches",
]

FEATURES_JSON = "features.json"
FORMAT = 1


def num_slices(frames: int, *, window: int, stride: int) -> int:
    """Whole slices of ``window`` frames every ``stride`` frames in ``frames`` frames."""
    return (frames - window) // stride + 1 if frames >= window else 0


@dataclass(frozen=True)
class FeatureGeometry:
    """The keys a dataset needs to map seconds to feature indices."""

    fps: float
    stride: int
    window: int
    feature_dim: int

    def time_mapping(self, duration: float) -> TimeMapping:
        return TimeMapping.from_clip(
            fps=self.fps, stride=self.stride, window=self.window, duration=duration
        )

    def num_features(self, frames: int) -> int:
        return num_slices(frames, window=self.window, stride=self.stride)


class FeatureSettingsError(ValueError):
    """A features.json that is missing, malformed, or made with other settings."""


def read_features_json(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/features.json`` as a dict, with its geometry keys checked to be there.

    :func:`geometry` of the result gives the typed geometry.
    """
    path = Path(folder) / FEATURES_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FeatureSettingsError(f"{path}: no such file (not an extracted folder?)") from err
    except (OSError, ValueError) as err:
        raise FeatureSettingsError(f"{path}: cannot read it as JSON ({err})") from err
    settings = meta.get("settings") if isinstance(meta, dict) else None
    if not isinstance(settings, dict):
        raise FeatureSettingsError(f'{path}: expected an object with a "settings" object')
    missing = [k for k in ("fps", "stride", "window", "feature_dim") if k not in settings]
    if missing:
        raise FeatureSettingsError(f"{path}: settings lack {', '.join(missing)}")
    meta.setdefault("videos", {})
    meta.setdefault("failed", {})
    return meta


def geometry(meta: Mapping[str, Any]) -> FeatureGeometry:
    s = meta["settings"]
    return FeatureGeometry(
        fps=float(s["fps"]),
        stride=int(s["stride"]),
        window=int(s["window"]),
        feature_dim=int(s["feature_dim"]),
    )


def _line(key: str, found: Any, expected: Any) -> str:
    if found is ABSENT:
        return f"{key}: absent in features.json, now {expected!r}"
    if expected is ABSENT:
        return f"{key}: {found!r} in features.json, now absent"
    return f"{key}: {found!r} in features.json, now {expected!r}"


def settings_mismatches(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """One line per setting that differs between ``found`` (a features.json's) and
    ``expected``; nested settings by dotted keys (``weights.rgb.sha256``, ``flow.scales``);
    numbers by value (25 == 25.0); the weights' paths are not compared."""
    return nested_differences(without_weight_paths(found), without_weight_paths(expected), _line)


def check_features_json(folder: str | os.PathLike, **expected: Any) -> dict[str, Any]:
    """Read ``folder/features.json`` and require ``expected`` settings (e.g. ``fps=25,
    stride=16, window=16, feature_dim=2048``); every mismatch is named in the error."""
    meta = read_features_json(folder)
    have = json.loads(json.dumps(meta["settings"]))
    lines = [
        f"{k}: {have[k]!r} in features.json, expected {v!r}"
        if k in have
        else f"{k}: absent in features.json, expected {v!r}"
        for k, v in json.loads(json.dumps(expected)).items()
        if have.get(k, _ABSENT) != v
    ]
    if lines:
        raise FeatureSettingsError(
            f"{Path(folder) / FEATURES_JSON}: settings differ:\n  " + "\n  ".join(lines)
        )
    return meta


_ABSENT = object()


class SliceChunker:
    """Groups a stream of frames into runs that hold ``slices_per_chunk`` whole slices.

    ``push(item)`` returns a chunk when one is complete, ``flush()`` the rest at the end
    (whole slices only). A chunk is ``(first_slice, items)``: slice ``first_slice + m``
    is ``items[m * stride : m * stride + window]``. Frames that no slice uses (``stride >
    window``) are dropped; frames shared by two chunks (``stride < window``) are in both.
    """

    def __init__(self, *, window: int, stride: int, slices_per_chunk: int) -> None:
        if window < 1 or stride < 1 or slices_per_chunk < 1:
            raise ValueError("window, stride and slices_per_chunk must be >= 1")
        self.window, self.stride, self.per_chunk = window, stride, slices_per_chunk
        self.next_slice = 0  # the first slice of the next chunk
        self.base = 0  # frame index of self.items[0]
        self.seen = 0  # frames pushed
        self.items: list[Any] = []

    def _needed_end(self, slices: int) -> int:
        return (self.next_slice + slices - 1) * self.stride + self.window

    def push(self, item: Any) -> tuple[int, list[Any]] | None:
        index = self.seen
        self.seen += 1
        if index >= self.base:
            self.items.append(item)
        else:  # a gap frame between slices (stride > window)
            return None
        if self.base + len(self.items) == self._needed_end(self.per_chunk):
            return self._emit(self.per_chunk)
        return None

    def flush(self) -> tuple[int, list[Any]] | None:
        available = num_slices(self.seen, window=self.window, stride=self.stride)
        slices = available - self.next_slice
        return self._emit(slices) if slices > 0 else None

    def _emit(self, slices: int) -> tuple[int, list[Any]]:
        first = self.next_slice
        chunk = self.items[: self._needed_end(slices) - self.base]
        self.next_slice += slices
        start = self.next_slice * self.stride  # the next chunk's first frame (>= base)
        self.items = self.items[start - self.base :]
        self.base = start
        return first, chunk
