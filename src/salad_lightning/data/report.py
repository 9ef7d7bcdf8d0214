"""What a run found in its data: ``data_report.json``, one log line per split, ``mode=check``.

The report (docs/data.md, "What a run reports") holds, per split used: its videos
with and without feature files, its segments as published and as training targets
(clipped, dropped by reason), the classes present, and the feature lengths against
what ``duration * fps / stride`` implies; then every repaired segment, every video
skipped and every unusable feature file, each with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from salad_lightning.data.annotations import (
    REPAIR_REASONS,
    AnnotationSet,
    ClassIndex,
    VideoRecord,
    _first,
)
from salad_lightning.data.features import expected_length, length_ratio_ok

# A split whose median feature length is outside this share of duration * fps / stride
# is flagged: the stride or the fps is probably wrong.
MEDIAN_LENGTH_RATIO = (0.8, 1.25)


@dataclass
class SplitData:
    """One split as the report sees it (filled by the datamodule)."""

    name: str  # train | val | test | predict
    subsets: list[str]
    records: list[VideoRecord]  # every video of the split, with or without features
    kept_ids: list[str]  # the videos the run reads
    missing_ids: list[str]  # no feature file (skipped, skip_missing=true)
    raw_lengths: Mapping[str, int | None]  # feature steps in the file, by video id
    stride: int | None  # None: resized features (no expected length)
    default_fps: float | None


def _segment_counts(records: Sequence[VideoRecord], repairs: Sequence) -> dict[str, Any]:
    ids = {r.video_id for r in records}
    mine = [r for r in repairs if r.video_id in ids]
    dropped = Counter(r.reason for r in mine if r.action == "dropped")
    return {
        "as_published": int(sum(len(r.raw_labels) for r in records)),
        "training_targets": int(sum(r.num_segments for r in records)),
        "clipped": sum(r.action == "clipped" for r in mine),
        "dropped": {k: dropped[k] for k in REPAIR_REASONS if k in dropped},
    }


def _length_check(split: SplitData) -> dict[str, Any] | None:
    """Feature length against ``duration * fps / stride`` (clip features only)."""
    if split.stride is None:
        return None
    ratios, off = [], []
    for video in split.records:
        steps = split.raw_lengths.get(video.video_id)
        fps = video.fps if video.fps is not None else split.default_fps
        if steps is None or fps is None:
            continue
        expected = expected_length(video.duration, fps, split.stride)
        ratios.append(steps / expected)
        if not length_ratio_ok(steps, expected):
            off.append(f"{video.video_id} ({steps} steps, expected ~{expected:.0f})")
    if not ratios:
        return None
    median = float(np.median(ratios))
    out: dict[str, Any] = {
        "videos": len(ratios),
        "expected": f"duration * fps / stride, stride {split.stride}",
        "median_ratio": round(median, 4),
        "outside_0.5_to_2": off,
    }
    lo, hi = MEDIAN_LENGTH_RATIO
    if not lo <= median <= hi:
        out["warning"] = (
            f"feature lengths are a median {median:.2f} x duration * fps / stride: check "
            f"dataset.datamodule.stride (now {split.stride}) and the fps "
            f"(a stride of about {split.stride * median:.3g} would fit)"
        )
    return out


def split_report(split: SplitData, annotations: AnnotationSet | None) -> dict[str, Any]:
    repairs = annotations.repairs if annotations is not None else []
    index = annotations.class_index if annotations is not None else None
    present = sorted({int(c) for r in split.records for c in r.raw_labels})
    out: dict[str, Any] = {
        "subsets": list(split.subsets),
        "videos": len(split.records),
        "with_features": len(split.kept_ids),
        "without_features": len(split.missing_ids),
        "segments": _segment_counts(split.records, repairs),
        "classes_present": len(present),
    }
    if index is not None:
        absent = [n for i, n in enumerate(index.names) if n is not None and i not in present]
        out["classes_absent"] = absent
    lengths = _length_check(split)
    if lengths is not None:
        out["feature_length"] = lengths
    return out


def build_report(
    *,
    annotation_file: str | None,
    annotations: AnnotationSet | None,
    class_index: ClassIndex | None,
    splits: Sequence[SplitData],
    problems: Sequence[Any] = (),
    checked_values: bool = True,
) -> dict[str, Any]:
    """The whole report (JSON-ready)."""
    used = {r.video_id: s.name for s in splits for r in s.records}
    repairs = annotations.repairs if annotations is not None else []
    return {
        "annotation_file": annotation_file,
        "class_index": None
        if class_index is None
        else {
            "source": annotations.class_source if annotations is not None else "checkpoint",
            "classes": len(class_index),
            "named": class_index.num_named,
        },
        "splits": {s.name: split_report(s, annotations) for s in splits},
        "feature_values_checked": checked_values,
        "repaired_segments": [
            {**r.as_dict(), "split": used[r.video_id]} for r in repairs if r.video_id in used
        ],
        "skipped_videos": [
            {"video_id": v, "split": s.name, "reason": "no feature file"}
            for s in splits
            for v in s.missing_ids
        ],
        "problems": [
            {"video_id": p.video_id, "split": p.split, "path": p.path, "problem": p.problem}
            for p in problems
        ],
    }


def summary_line(name: str, split: Mapping[str, Any]) -> str:
    """One line per split for the log."""
    seg = split["segments"]
    n_dropped = sum(seg["dropped"].values())
    why = ", ".join(f"{n} {reason}" for reason, n in seg["dropped"].items())
    line = (
        f"{name} ({', '.join(split['subsets'])}): {split['with_features']} videos with "
        f"features, {split['without_features']} without (skipped); "
        f"{seg['as_published']} segments as published, of which {seg['clipped']} clipped "
        f"and {n_dropped} dropped as training targets{f' ({why})' if why else ''}; "
        f"{split['classes_present']} classes present"
    )
    warning = split.get("feature_length", {}).get("warning")
    return line + (f"; {warning}" if warning else "")


def format_report(report: Mapping[str, Any]) -> str:
    """The text ``mode=check`` prints."""
    ci = report["class_index"]
    lines = [f"annotation file: {report['annotation_file']}"]
    if ci is not None:
        lines.append(f"classes: {ci['classes']} ({ci['named']} named, from the {ci['source']})")
    for name, split in report["splits"].items():
        lines.append(summary_line(name, split))
        if split.get("classes_absent"):
            lines.append(f"  classes with no ground truth: {_first(split['classes_absent'])}")
        length = split.get("feature_length")
        if length:
            lines.append(
                f"  feature length / ({length['expected']}): median {length['median_ratio']}, "
                f"{len(length['outside_0.5_to_2'])} videos outside [0.5, 2]"
                + (
                    f": {_first(length['outside_0.5_to_2'], 3)}"
                    if length["outside_0.5_to_2"]
                    else ""
                )
            )
    repairs = report["repaired_segments"]
    if repairs:
        by = Counter((r["action"], r["reason"]) for r in repairs)
        lines.append(
            "repaired segments: "
            + "; ".join(f"{n} {action} ({why})" for (action, why), n in sorted(by.items()))
        )
    problems = report["problems"]
    values = "values checked" if report["feature_values_checked"] else "headers only"
    lines.append(f"feature files ({values}): {len(problems)} unusable")
    lines += [
        f"  {p['path']} (video {p['video_id']}, {p['split']}): {p['problem']}"
        for p in problems[:10]
    ]
    if len(problems) > 10:
        lines.append(f"  ... {len(problems) - 10} more in data_report.json")
    return "\n".join(lines)
