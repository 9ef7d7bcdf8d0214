"""Timing statistics of an ActivityNet-style annotation file (any dataset).

    python -m salad_lightning.data.statistics FILE [--subset NAME]

Reads the file through the data layer (:func:`~salad_lightning.data.annotations.load_annotations`),
annotations as published; the synthetic generator (docs/synthetic.md) is tuned against
what this prints for the real THUMOS14 file.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np

from salad_lightning.data.annotations import load_annotations


def _union_length(segs: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(segs):
        if cur_e is None or s > cur_e:
            total += 0.0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (0.0 if cur_e is None else cur_e - cur_s)


def dataset_statistics(annotation_file: str | os.PathLike, subset: str | None = None) -> dict:
    """Counts, lengths, durations and coverage of the file's videos (one subset or all).

    ``overlap_share``: share of instances overlapping an instance with another label;
    ``colabel_share``: share whose exact segment also carries another label.
    """
    annotations = load_annotations(annotation_file, classes="names")
    videos = annotations.select(subset) if subset is not None else list(annotations.videos.values())
    counts, lengths, coverage, durations = [], [], [], []
    overlap = colabel = 0
    labels: set[int] = set()
    for video in videos:
        segs = [(float(s), float(e)) for s, e in video.raw_segments]
        labs = video.raw_labels.tolist()
        dur = video.duration
        durations.append(dur)
        counts.append(len(segs))
        lengths += [e - s for s, e in segs]
        # the training targets: clipped to the video, what cannot be one left out
        coverage.append(_union_length(video.segments.tolist()) / dur)
        labels |= set(labs)
        for i, ((s, e), lab) in enumerate(zip(segs, labs)):
            others = [
                seg for j, (seg, other) in enumerate(zip(segs, labs)) if j != i and other != lab
            ]
            overlap += any(min(e, b) > max(s, a) for a, b in others)
            colabel += any(seg == (s, e) for seg in others)
    counts, lengths, durations = np.array(counts), np.array(lengths), np.array(durations)
    n_inst = max(len(lengths), 1)

    def summary(a: np.ndarray) -> dict:
        a = a if a.size else np.zeros(1)
        return {"mean": float(a.mean()), "median": float(np.median(a)), "max": float(a.max())}

    return {
        "videos": int(len(counts)),
        "subsets": dict(Counter(v.subset for v in videos)),
        "instances": int(counts.sum()),
        "instances_per_video": summary(counts),
        "instance_seconds": summary(lengths),
        "duration_seconds": summary(durations),
        "coverage_mean": float(np.mean(coverage)) if coverage else 0.0,
        "overlap_share": overlap / n_inst,
        "colabel_share": colabel / n_inst,
        "classes": len(labels),
    }


def format_statistics(stats: dict) -> str:
    lines = [
        f"videos               {stats['videos']}  {stats['subsets']}",
        f"instances            {stats['instances']}",
    ]
    for key in ("instances_per_video", "instance_seconds", "duration_seconds"):
        s = stats[key]
        lines.append(
            f"{key:<20} mean {s['mean']:.2f}  median {s['median']:.2f}  max {s['max']:.2f}"
        )
    lines += [
        f"coverage_mean        {stats['coverage_mean']:.3f}",
        f"overlap_share        {stats['overlap_share']:.3f}  (instances overlapping another label)",
        f"colabel_share        {stats['colabel_share']:.3f}  (same segment, another label)",
        f"classes              {stats['classes']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m salad_lightning.data.statistics", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "annotations", help="an ActivityNet-style annotation file (.json, .json.gz)"
    )
    parser.add_argument("--subset", help="one subset only (case-insensitive)")
    args = parser.parse_args(argv)
    print(format_statistics(dataset_statistics(args.annotations, args.subset)))


if __name__ == "__main__":
    main()
