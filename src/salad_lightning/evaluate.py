"""``python -m salad_lightning.evaluate``: detection mAP of an ActivityNet-style results file.

    python -m salad_lightning.evaluate --ground-truth GT.json --predictions PRED.json \
        [--subset NAME] [--tiou 0.3 0.4 0.5 0.6 0.7] [--json] [--ignore-unknown-labels]
        [--diagnose OUT_DIR [--diagnose-preset thumos14|activitynet]]

Reads the official formats (docs/method.md §1): ground truth ``{"database": {video_id:
{"subset", "annotations": [{"label", "segment"}]}}, "taxonomy"?}``, predictions
``{"results": {video_id: [{"label", "score", "segment"}]}}``, and runs the official
ActivityNet protocol (`salad_lightning.metrics.functional`). Differences from the
official script, all reported: predictions for videos outside the evaluated subset
are ignored (the official code counts them as false positives), and a predicted
label that the ground-truth file does not know is an error (the official code
crashes) unless ``--ignore-unknown-labels``. Never imports torch, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from salad_lightning.data.annotations import load_annotations
from salad_lightning.metrics.diagnosis import PRESETS
from salad_lightning.metrics.functional import Instances, evaluate_detections, video_key
from salad_lightning.utils.io import no_gc, read_json

__all__ = ["DEFAULT_TIOU", "InputError", "evaluate_files", "format_table", "main"]

DEFAULT_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)


class InputError(ValueError):
    """A problem with an input file, worded for the user."""


def _load(path: str, field: str) -> dict[str, Any]:
    data = read_json(path, InputError)
    if not isinstance(data, dict) or not isinstance(data.get(field), dict):
        raise InputError(f'{path}: expected a JSON object with a "{field}" object')
    return data[field] if field == "results" else data


def _segment(path: str, where: str, item: Any) -> tuple[float, float]:
    seg = item.get("segment") if isinstance(item, dict) else None
    try:
        start, end = float(seg[0]), float(seg[1])
        if len(seg) != 2 or not (np.isfinite(start) and np.isfinite(end)):
            raise ValueError
    except (TypeError, ValueError, IndexError) as err:
        raise InputError(
            f'{path}: {where}: "segment" must be [start, end] in seconds, got {seg!r}'
        ) from err
    return start, end


def _choose_subset(path: str, subsets: set[str], subset: str | None) -> set[str]:
    listed = ", ".join(sorted(repr(n) for n in subsets))
    if subset is None:
        if len(subsets) > 1:
            raise InputError(f"{path}: several subsets ({listed}); choose one with --subset")
        return subsets
    chosen = {n for n in subsets if n.lower() == subset.lower()}
    if not chosen:
        raise InputError(
            f"{path}: no subset named {subset!r} (case-insensitive); subsets: {listed}"
        )
    return chosen


def _ground_truth(path: str, subset: str | None):
    """(videos of the subset, rows (video, label, start, end) as published, the classes
    with ground truth there, every name the file knows), through the data layer's reader."""
    try:
        annotations = load_annotations(path, classes="names", require_duration=False)
    except FileNotFoundError as err:
        raise InputError(f"{path}: cannot read: no such file") from err
    except (ValueError, OSError) as err:
        raise InputError(str(err)) from err
    chosen = _choose_subset(path, set(annotations.subsets()), subset)
    names = annotations.class_index.names
    videos = [v for v in annotations.videos.values() if v.subset in chosen]
    rows = [
        (v.video_id, names[label], float(seg[0]), float(seg[1]))
        for v in videos
        for seg, label in zip(v.raw_segments, v.raw_labels)
    ]
    classes = sorted({r[1] for r in rows})
    if not classes:
        raise InputError(
            f"{path}: no ground-truth annotation in subset(s) {sorted(map(str, chosen))}"
        )
    durations = [v.duration for v in videos]
    return [v.video_id for v in videos], rows, classes, set(names), durations


def _bad_prediction(path: str, results: dict[str, Any], video_index: dict[str, int]) -> InputError:
    """The slow second look that names the first malformed prediction."""
    for vid, items in results.items():
        if vid not in video_index:
            continue
        for j, r in enumerate(items):
            where = f"video {vid!r}, prediction {j}"
            if not isinstance(r, dict) or not {"label", "score", "segment"} <= r.keys():
                return InputError(
                    f'{path}: {where}: expected "label", "score" and "segment", got {r!r}'
                )
            _segment(path, where, r)
            if (
                isinstance(r["score"], bool)
                or not isinstance(r["score"], (int, float))
                or not np.isfinite(r["score"])
            ):
                return InputError(
                    f'{path}: {where}: "score" must be a finite number, got {r["score"]!r}'
                )
    return InputError(f"{path}: unreadable predictions")


def _predictions(path: str, video_index: dict[str, int]):
    """(video index, labels, segments, scores, predictions outside the subset).

    Everything runs in C-level loops (map, itemgetter, fromiter); only when that
    fails does a Python loop look for the culprit.
    """
    results = _load(path, "results")
    kept, outside = [], 0
    for vid, items in results.items():
        if not isinstance(items, list):
            raise InputError(f"{path}: video {vid!r}: expected a list of predictions")
        if vid in video_index:
            kept.append((video_index[vid], items))
        else:
            outside += len(items)
    items = list(chain.from_iterable(x for _, x in kept))
    n = len(items)
    video = np.repeat(np.array([i for i, _ in kept], dtype=np.int64), [len(x) for _, x in kept])
    try:
        labels = list(map(itemgetter("label"), items))
        score = np.fromiter(map(itemgetter("score"), items), dtype=np.float64, count=n)
        segments = list(map(itemgetter("segment"), items))
        if (np.fromiter(map(len, segments), dtype=np.int64, count=n) != 2).any():
            raise ValueError
        seg = np.fromiter(chain.from_iterable(segments), dtype=np.float64, count=2 * n).reshape(
            n, 2
        )
        if not (np.isfinite(seg).all() and np.isfinite(score).all()):
            raise ValueError
    except (KeyError, TypeError, ValueError) as err:
        raise _bad_prediction(path, results, video_index) from err
    return video, labels, seg, score, outside


def evaluate_files(
    ground_truth: str,
    predictions: str,
    subset: str | None = None,
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
    ignore_unknown_labels: bool = False,
    diagnose_dir: str | None = None,
    diagnose_preset: str | None = None,
    diagnose_tiou: Sequence[float] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(result object as printed by ``--json``, notes for the user). With ``diagnose_dir``,
    DETAD's diagnosis (``metrics/diagnosis.py``) is written there too, at
    ``diagnose_tiou`` (default: the preset's thresholds) with the bins of
    ``diagnose_preset`` (default: `choose_preset`'s)."""
    with no_gc():
        return _evaluate_files(
            ground_truth,
            predictions,
            subset,
            tiou_thresholds,
            ignore_unknown_labels,
            diagnose_dir,
            diagnose_preset,
            diagnose_tiou,
        )


def _evaluate_files(
    ground_truth,
    predictions,
    subset,
    tiou_thresholds,
    ignore_unknown_labels,
    diagnose_dir=None,
    diagnose_preset=None,
    diagnose_tiou=None,
):
    videos, gt_rows, classes, known, durations = _ground_truth(ground_truth, subset)
    # Videos are indexed in the order of their key, so equal scores are broken
    # exactly as the torchmetrics metric breaks them.
    keys = np.array([video_key(v) for v in videos], dtype=np.int64)
    video_index = dict(zip(videos, np.argsort(np.argsort(keys)).tolist()))
    label_index = {name: i for i, name in enumerate(classes)}
    for name in sorted(known - set(classes)):  # valid classes with no gt here
        label_index[name] = len(label_index)

    pred_video, labels, seg, score, outside = _predictions(predictions, video_index)
    n = len(score)

    try:
        unknown = [label for label in set(labels) if label not in label_index]
    except TypeError as err:  # an unhashable label
        raise InputError(f'{predictions}: every "label" must be a string') from err
    notes = []
    if unknown:
        count = sum(1 for label in labels if label not in label_index)
        if not ignore_unknown_labels:
            raise InputError(
                f"{predictions}: label(s) not in the ground truth: {sorted(map(str, unknown))[:10]} "
                f"({count} predictions); pass --ignore-unknown-labels to count them as false positives"
            )
        notes.append(
            f"{count} predictions with labels unknown to the ground truth were counted as false "
            "positives of classes outside the mean (they do not change mAP)"
        )
        for name in unknown:
            label_index[name] = len(label_index)
    if outside:
        notes.append(
            f"{outside} predictions for videos outside the evaluated subset were ignored "
            "(the official code would count them as false positives)"
        )

    pred_label = np.fromiter(map(label_index.__getitem__, labels), dtype=np.int64, count=n)
    pred = Instances(pred_video, seg, pred_label, score)
    gt = Instances(
        video=np.array([video_index[r[0]] for r in gt_rows], dtype=np.int64),
        segments=np.array([r[2:] for r in gt_rows], dtype=np.float64).reshape(-1, 2),
        labels=np.array([label_index[r[1]] for r in gt_rows], dtype=np.int64),
    )
    result = evaluate_detections(pred, gt, tiou_thresholds=tiou_thresholds)
    if diagnose_dir is not None:
        duration = np.empty(len(videos))
        duration[[video_index[v] for v in videos]] = durations
        notes.append(
            _diagnose(
                pred, gt, duration, diagnose_dir, diagnose_preset, diagnose_tiou, ground_truth
            )
        )
    summary = {
        "tiou_thresholds": [float(t) for t in result.tiou_thresholds],
        "mAP": [float(v) for v in result.mAP],
        "average_mAP": result.average_mAP,
        "per_class": {
            classes[c]: [float(v) for v in row] for c, row in zip(result.labels, result.ap)
        },
    }
    gt_len = np.array([r[3] - r[2] for r in gt_rows], dtype=np.float64)
    degenerate = int((gt_len <= 0).sum())
    if degenerate:
        notes.append(
            f"{degenerate} ground truths have zero length or end before they start: taken as "
            "published, positives that only a prediction of the opposite length matches "
            "(the official 0/0 tIoU)"
        )
    inverted = int((seg[:, 1] < seg[:, 0]).sum())
    if inverted:
        notes.append(f"{inverted} predictions end before they start: taken as published")
    notes.insert(
        0,
        f"{len(videos)} videos, {len(gt_rows)} ground truths of {len(classes)} classes, "
        f"{n} predictions evaluated",
    )
    return summary, notes


# A median ground-truth coverage (length / video duration) above this is ActivityNet-like:
# THUMOS14's instances cover about 2% of their video, ActivityNet 1.3's about a third.
COVERAGE_OF_LONG_ACTIONS = 0.1


def choose_preset(
    preset: str | None, tiou: Sequence[float] | None, coverage: np.ndarray
) -> tuple[str, str]:
    """(DETAD preset whose bins the diagnosis uses, why): the one named; else the one whose
    thresholds are ``tiou``; else the one the data looks like: ``activitynet`` when the
    ground truth's median coverage exceeds `COVERAGE_OF_LONG_ACTIONS`, else ``thumos14``."""
    if preset is not None:
        return preset, "named by --diagnose-preset"
    if tiou is not None:
        wanted = sorted(float(t) for t in tiou)
        for name, settings in PRESETS.items():
            own = settings["tiou_thresholds"]
            if len(own) == len(wanted) and np.allclose(wanted, own, rtol=0, atol=1e-9):
                return name, f"--tiou gives {name}'s thresholds"
    known = coverage[np.isfinite(coverage)]
    if not len(known):
        return "thumos14", "no ground truth with a duration to follow"
    median = float(np.median(known))
    name = "activitynet" if median > COVERAGE_OF_LONG_ACTIONS else "thumos14"
    return name, (
        f"the ground truth's median coverage of its video, {median:.3f}, is "
        f"{'above' if name == 'activitynet' else 'at most'} {COVERAGE_OF_LONG_ACTIONS}"
    )


def _diagnose(pred, gt, duration, out_dir: str, preset, tiou, ground_truth: str) -> str:
    """DETAD's diagnosis of the instances written to ``out_dir``; the note that says where,
    at which thresholds and with which bins."""
    from salad_lightning.metrics.diagnosis import diagnose
    from salad_lightning.reporting import write_diagnosis

    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = (gt.segments[:, 1] - gt.segments[:, 0]) / duration[gt.video]
    name, why = choose_preset(preset, tiou, coverage)
    settings = dict(PRESETS[name])
    if tiou is not None:
        settings["tiou_thresholds"] = tuple(float(t) for t in tiou)
    try:
        diagnosis = diagnose(pred, gt, duration, **settings)
    except ValueError as err:
        raise InputError(f"{ground_truth}: cannot diagnose: {err}") from err
    paths = write_diagnosis(diagnosis, out_dir)
    bins = "; ".join(
        f"{k.split('_')[0]} {list(settings[k].edges)}"
        for k in ("length_bins", "coverage_bins", "instance_bins")
    )
    return (
        f"DETAD diagnosis at tIoU {[float(t) for t in diagnosis.tiou_thresholds]} with "
        f"{name}'s bins ({why}: {bins}): average-mAP_N {100 * diagnosis.average_mAP_N:.2f}; "
        f"{paths['diagnosis']} and 3 figures"
    )


def format_table(summary: dict[str, Any]) -> str:
    """mAP per threshold and average, then per-class AP, in percent."""
    thr = summary["tiou_thresholds"]
    width = max([len("per-class AP (%)")] + [len(name) for name in summary["per_class"]])
    head = f"{'tIoU':<{width}}" + "".join(f"{t:>8g}" for t in thr) + f"{'average':>9}"
    lines = [head, f"{'mAP (%)':<{width}}" + "".join(f"{100 * v:8.2f}" for v in summary["mAP"])]
    lines[-1] += f"{100 * summary['average_mAP']:9.2f}"
    lines += ["", f"{'per-class AP (%)':<{width}}" + "".join(f"{t:>8g}" for t in thr)]
    for name, row in summary["per_class"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{100 * v:8.2f}" for v in row))
    return "\n".join(lines)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"tIoU thresholds must be in (0, 1], got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m salad_lightning.evaluate",
        description="Official ActivityNet detection mAP of a results JSON (see docs/evaluation.md).",
    )
    parser.add_argument("--ground-truth", required=True, help="annotation JSON with a 'database'")
    parser.add_argument("--predictions", required=True, help="results JSON with a 'results' object")
    parser.add_argument(
        "--subset",
        help="subset to evaluate, case-insensitive (required when the file has several)",
    )
    parser.add_argument(
        "--tiou",
        type=_threshold,
        nargs="+",
        help="tIoU thresholds of the mAP and the diagnosis (default: 0.3 0.4 0.5 0.6 0.7 for "
        "the mAP, the preset's for the diagnosis; ActivityNet uses 0.5 0.55 ... 0.95)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--diagnose",
        metavar="OUT_DIR",
        help="also write DETAD's error diagnosis there (diagnosis.json and three PNGs)",
    )
    parser.add_argument(
        "--diagnose-preset",
        choices=sorted(PRESETS),
        help="DETAD's bins (and thresholds, without --tiou); default: the preset whose "
        "thresholds --tiou gives, else the one the ground truth looks like (activitynet when "
        "its median coverage of the video exceeds 0.1, else thumos14)",
    )
    parser.add_argument(
        "--ignore-unknown-labels",
        action="store_true",
        help="count predictions whose label the ground truth lacks as false positives instead of failing",
    )
    args = parser.parse_args(argv)
    try:
        summary, notes = evaluate_files(
            args.ground_truth,
            args.predictions,
            args.subset,
            args.tiou or DEFAULT_TIOU,
            args.ignore_unknown_labels,
            args.diagnose,
            args.diagnose_preset,
            args.tiou,
        )
    except InputError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        for note in notes:
            print(note, file=sys.stderr)
        print(json.dumps(summary))
    else:
        print("\n".join(notes) + "\n\n" + format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
