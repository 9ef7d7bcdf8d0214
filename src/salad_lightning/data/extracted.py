"""A feature folder that says how it was made: its ``features.json``, as the data layer reads it.

``salad-extract`` (``extract/``, a layer above this one) writes ``OUT/features.json`` next
to the ``.npy`` files (its format: ``extract/geometry.py``). The data layer needs three
things from it, read here without importing the extractor:

- the **geometry** (``fps``, ``stride``, ``window``, ``feature_dim``): feature ``i`` covers
  the resampled frames ``[i * stride, i * stride + window)`` at ``fps``, the extraction's
  rate, whatever the source video's rate was;
- each video's **duration** in seconds (predicting on videos no annotation file lists);
- the **features record** a checkpoint keeps (:func:`features_record`): the settings that
  made the features, so that features made otherwise are refused, by name
  (:func:`record_mismatches`).

Without a ``features.json`` the record comes from the config (:func:`config_record`,
backbone ``"unknown"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FEATURES_JSON",
    "GEOMETRY_KEYS",
    "ExtractedFolder",
    "config_record",
    "read_extracted",
    "record_mismatches",
]

FEATURES_JSON = "features.json"
GEOMETRY_KEYS = ("fps", "stride", "window", "feature_dim")
# Settings that describe others (text made from size, crop and the streams; the exact
# rate behind ``fps``) or say where a record came from: not compared.
_NOT_COMPARED = ("source", "resize", "scaling", "fps_exact")


@dataclass(frozen=True)
class ExtractedFolder:
    """A folder's ``features.json``: its path, its ``settings`` and each video's duration."""

    path: Path  # the features.json
    settings: Mapping[str, Any] = field(repr=False)
    durations: Mapping[str, float] = field(repr=False)

    @property
    def fps(self) -> float:
        return float(self.settings["fps"])

    @property
    def stride(self) -> int:
        return int(self.settings["stride"])

    @property
    def window(self) -> int:
        return int(self.settings["window"])

    @property
    def feature_dim(self) -> int:
        return int(self.settings["feature_dim"])

    def record(self) -> dict[str, Any]:
        """The features record: the file's settings and where they come from (``source``)."""
        return {"source": str(self.path), **json.loads(json.dumps(self.settings))}


def read_extracted(folder: str | os.PathLike) -> ExtractedFolder | None:
    """``folder/features.json`` read, or None when the folder has none. A file that is
    there but cannot be used (not JSON, no settings, a geometry key missing or not a
    positive number) is an error naming it."""
    path = Path(folder) / FEATURES_JSON
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read it as JSON ({err})") from err
    settings = meta.get("settings") if isinstance(meta, dict) else None
    if not isinstance(settings, dict):
        raise ValueError(f'{path}: expected an object with a "settings" object (salad-extract)')
    bad = [
        k
        for k in GEOMETRY_KEYS
        if not isinstance(settings.get(k), (int, float))
        or not math.isfinite(settings[k])
        or settings[k] <= 0
    ]
    if bad:
        found = ", ".join(f"{k}={settings.get(k)!r}" for k in bad)
        raise ValueError(f"{path}: settings need positive numbers for {found}")
    videos = meta.get("videos") or {}
    durations = {
        str(vid): float(rec["duration"])
        for vid, rec in videos.items()
        if isinstance(rec, dict) and isinstance(rec.get("duration"), (int, float))
    }
    return ExtractedFolder(path.resolve(), settings, durations)


def config_record(
    *,
    fps: float | None,
    stride: int | None,
    window: int | None,
    feature_dim: int | None,
    resize_to: int | None = None,
) -> dict[str, Any]:
    """The features record of data without a features.json: the geometry the config gives
    (``fps`` None: each video's own, from the annotation file; with ``resize_to`` a step
    has no fixed length, so no fps, stride or window)."""
    resized = resize_to is not None
    return {
        "source": "config",
        "backbone": "unknown",
        "streams": None,
        "weights": None,
        "fps": None if resized or fps is None else float(fps),
        "stride": None if resized else stride,
        "window": None if resized else window,
        "feature_dim": feature_dim,
        **({"resize_to": resize_to} if resized else {}),
    }


def _number(value: Any) -> Any:
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    )


def without_weight_paths(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Extraction settings as JSON has them, without the weights' paths: a weights file
    moved elsewhere is the same weights when its sha256 is."""
    plain = json.loads(json.dumps(settings))
    for entry in (plain.get("weights") or {}).values():
        if isinstance(entry, dict):
            entry.pop("path", None)
    return plain


def _without_paths(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without what is not compared (``_NOT_COMPARED``, the weights' paths)."""
    return {k: v for k, v in without_weight_paths(record).items() if k not in _NOT_COMPARED}


ABSENT = object()  # a key one side of `nested_differences` lacks (its `missing` default)


def nested_differences(
    a: Any, b: Any, line: Callable[[str, Any, Any], str], *, key: str = "",
    missing: Any = ABSENT,
) -> list[str]:  # fmt: skip
    """One ``line(key, a's value, b's value)`` per setting in which ``a`` and ``b`` differ;
    nested dicts by dotted keys (``weights.rgb.sha256``), numbers by value (25 == 25.0),
    a key that one side lacks given as ``missing`` there."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for k in sorted(set(a) | set(b)):
            inner = f"{key}.{k}" if key else str(k)
            lines += nested_differences(
                a.get(k, missing), b.get(k, missing), line, key=inner, missing=missing
            )
        return lines
    return [] if _number(a) == _number(b) else [line(key, a, b)]


def _diff(trained: Any, now: Any, key: str) -> list[str]:
    return nested_differences(
        trained, now, lambda k, t, n: f"{k}: {t!r} for the checkpoint, {n!r} here", key=key,
        missing=None,
    )  # fmt: skip


def record_mismatches(trained: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One line per setting in which the data ``now`` differs from the data a checkpoint was
    trained on (``trained``), both features records.

    Two records from features.json files: every setting (backbone, streams, models, the
    weights' sha256, fps, window, stride, size, crop, the flow's parameters, the
    dimensions), the weights' paths and descriptive text excepted. When one comes from a
    config: the geometry keys that both know (a record that does not know its fps, from
    per-video rates, is not compared on it). Both from configs: stride, window and
    dimension (a config's fps is only the fallback of videos without their own).
    Records with no ``source`` (none saved) are not compared."""
    if not trained or not now or "source" not in trained or "source" not in now:
        return []
    configs = [r["source"] == "config" for r in (trained, now)]
    if not any(configs):
        return _diff(_without_paths(trained), _without_paths(now), "")
    keys = [k for k in GEOMETRY_KEYS if not (all(configs) and k == "fps")]
    return [
        line
        for k in keys
        if trained.get(k) is not None and now.get(k) is not None
        for line in _diff(trained[k], now[k], k)
    ]
