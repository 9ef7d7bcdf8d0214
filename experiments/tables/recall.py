"""Recall of detection files at given tIoU thresholds: the share of a split's ground
truths that some detection covers, with the official matching (each detection takes at
most one ground truth, highest score first), with its label ("class-aware") and with every
label ignored ("class-agnostic"; a proposals file, which has no labels, only this one).

    python experiments/tables/recall.py ANNOTATIONS FILE [FILE ...] [--subset Test]
        [--tiou 0.5]

FILE: results.json or a proposals file (the ActivityNet results layout, labels optional).
Prints one row per file: its detections, then the recall at each threshold.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from salad_lightning.metrics.functional import Instances, match_detections


def _rows(entries: dict, videos: dict[str, int], labels: dict[str, int]) -> Instances:
    vid, seg, lab, score = [], [], [], []
    for v, dets in entries.items():
        if v not in videos:
            continue
        for d in dets:
            vid.append(videos[v])
            seg.append(d["segment"])
            lab.append(labels.get(d.get("label"), -1))
            score.append(d.get("score", 1.0))
    return Instances(
        np.array(vid, dtype=np.int64),
        np.array(seg, dtype=np.float64).reshape(-1, 2),
        np.array(lab, dtype=np.int64),
        None if not score else np.array(score, dtype=np.float64),
    )


def recall(pred: Instances, gt: Instances, tious: list[float]) -> list[float]:
    """The share of ``gt``'s rows matched at each threshold."""
    if len(pred.video) == 0:
        return [0.0] * len(tious)
    m = match_detections(pred, gt, tious)
    return [len(np.unique(m.gt[t][m.gt[t] >= 0])) / len(gt.video) for t in range(len(tious))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("annotations")
    p.add_argument("files", nargs="+")
    p.add_argument("--subset", default="Test")
    p.add_argument("--tiou", type=float, nargs="+", default=[0.5])
    a = p.parse_args()
    with open(a.annotations, encoding="utf-8") as fh:
        database = json.load(fh)["database"]
    database = {k: v for k, v in database.items() if v["subset"] == a.subset}
    videos = {v: i for i, v in enumerate(sorted(database))}
    names = sorted({x["label"] for v in database.values() for x in v["annotations"]})
    labels = {n: i for i, n in enumerate(names)}
    gt_entries = {v: database[v]["annotations"] for v in database}
    gt = _rows(gt_entries, videos, labels)
    gt = Instances(gt.video, gt.segments, gt.labels)
    agnostic_gt = Instances(gt.video, gt.segments, np.zeros_like(gt.labels))
    head = [f"@{t:g}" for t in a.tiou]
    print(f"{len(gt.video)} ground truths in {len(videos)} {a.subset} videos")
    print(
        "| file | detections | class-aware "
        + " ".join(head)
        + " | class-agnostic "
        + " ".join(head)
        + " |"
    )
    print("|---|---|---|---|")
    for path in a.files:
        with open(path, encoding="utf-8") as fh:
            pred = _rows(json.load(fh)["results"], videos, labels)
        has_labels = bool(len(pred.labels)) and (pred.labels >= 0).all()
        aware = recall(pred, gt, a.tiou) if has_labels else None
        agnostic = recall(
            Instances(pred.video, pred.segments, np.zeros_like(pred.labels), pred.scores),
            agnostic_gt,
            a.tiou,
        )
        cell = "–" if aware is None else " / ".join(f"{100 * r:.1f}" for r in aware)
        print(
            f"| {path} | {len(pred.video)} | {cell} | "
            + " / ".join(f"{100 * r:.1f}" for r in agnostic)
            + " |"
        )


if __name__ == "__main__":
    main()
