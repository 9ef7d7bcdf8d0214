"""What a run leaves for its user, written from one typed evaluation result.

`write_report` is the one writer: from an `Evaluation` (the evaluation store's result,
matched once) it writes ``results.json``, ``per_class_ap.md``, the plots, DETAD's
diagnosis and the loggers' tables and figures, and returns the summary that becomes
``metrics.json``. After a prediction, `write_predictions` writes what a user of the
detections reads without ground truth: ``detections.csv``, one ``.srt`` subtitle file
and one timeline per video. The Lightning callback that calls them after a test or
predict epoch is `salad_lightning.report_writer.ReportWriter`. The functions here are
usable on their own (the evaluation command writes its diagnosis with
`write_diagnosis`), and import neither torch nor Lightning. Nothing below this layer draws or writes a report file.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning import plots, prediction_plots
from salad_lightning.data.detections import VideoDetections
from salad_lightning.metrics.diagnosis import Diagnosis, diagnose
from salad_lightning.metrics.evaluation import Evaluation
from salad_lightning.utils.io import atomic_write_json, atomic_write_text
from salad_lightning.utils.loggers import log_images, log_metrics, log_per_class_table

log = logging.getLogger(__name__)


def summarise(evaluation: Evaluation, class_names: Sequence[str | None]) -> dict[str, Any]:
    """The evaluation as JSON (``metrics.json``): mAP per threshold, average, ECE, per-class
    AP, and the classes with no ground truth in the split (no AP, left out of the mAP,
    as the official evaluator does)."""
    present = evaluation.classes_present.tolist()
    table = {
        _class_name(class_names, c): [float(x) for x in row]
        for row, c in zip(evaluation.per_class_ap, present)
    }
    absent = [_class_name(class_names, c) for c in range(len(class_names)) if c not in present]
    return {
        "split": evaluation.split,
        "tiou_thresholds": list(evaluation.tiou_thresholds),
        **evaluation.logs(),
        "per_class_ap": table,
        "classes_without_ground_truth": [n for n in absent if n is not None],
    }


def _class_name(class_names: Sequence[str | None], c: int) -> str | None:
    """The name of class ``c`` (``None``: unnamed); its index as text outside the list."""
    return class_names[c] if c < len(class_names) else str(c)


def map_table(summary: dict[str, Any]) -> str:
    """The mAP table printed at the end of a run."""
    split = summary.get("split", "test")
    thr = summary["tiou_thresholds"]
    head = "| " + " | ".join([f"mAP@{t:g}" for t in thr] + ["average"]) + " |"
    sep = "|" + "---|" * (len(thr) + 1)
    vals = [summary[f"{split}/mAP@{t:g}"] * 100 for t in thr] + [
        summary.get(f"{split}/mAP", math.nan) * 100
    ]
    row = "| " + " | ".join(f"{v:.2f}" for v in vals) + " |"
    return f"{split} mAP (%){_fusion_title(summary.get('video_fusion'))}\n{head}\n{sep}\n{row}"


def _fusion_title(fusion: Mapping[str, Any] | None) -> str:
    """The table title's note of a video-level classifier fusion (none: SALAD's labels)."""
    if not fusion:
        return ""
    how = f"{fusion['mode']}, k={fusion['k']}" if fusion.get("k") else fusion["mode"]
    return (
        f", video-level classifier fusion ({how}, {fusion['combine']}) with "
        f"{Path(fusion['file']).name}: {fusion['videos_without_scores']} of "
        f"{fusion['videos']} videos without scores"
    )


def per_class_markdown(summary: dict[str, Any]) -> str:
    thr = summary["tiou_thresholds"]
    lines = [
        "| class | " + " | ".join(f"AP@{t:g}" for t in thr) + " | mean |",
        "|---" * (len(thr) + 2) + "|",
    ]
    for name, aps in sorted(summary["per_class_ap"].items(), key=lambda kv: str(kv[0])):
        cells = [f"{100 * a:.2f}" for a in aps] + [f"{100 * float(np.mean(aps)):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    absent = summary.get("classes_without_ground_truth") or []
    for name in sorted(absent):
        lines.append(f"| {name} | " + " | ".join(["–"] * (len(thr) + 1)) + " |")
    if absent:
        lines += [
            "",
            f"–: no ground truth in the {summary.get('split', 'test')} split; no AP, left out "
            "of the mAP (as the official evaluator does).",
        ]
    return "\n".join(lines) + "\n"


def results_json(
    videos: Sequence[VideoDetections], class_names: Sequence[str | None]
) -> dict[str, Any]:
    """ActivityNet submission format (docs/method.md §1), readable by the official evaluator."""
    results: dict[str, list[dict[str, Any]]] = {}
    for video in videos:
        # Full precision (float's shortest round-trip repr): rounding made ties that the
        # run's own metric did not see, so the command's mAP differed from the run's.
        # Detections of a class the annotation file never names cannot be written; they
        # are false positives of a class outside the mean, so the mAP is unchanged.
        results[video.video_id] = [
            {"label": name, "score": s, "segment": [a, b]}
            for (a, b), s, lab in zip(
                video.segments.tolist(), video.scores.tolist(), video.labels.tolist()
            )
            if (name := _class_name(class_names, lab)) is not None
        ]
    return {"version": "salad-lightning", "results": results, "external_data": {}}


# --- predictions without ground truth: a table, subtitles, timelines ---------------------

# What the subtitles of a video show (`subtitle_detections`): its best detections, not all
# 200 that soft-NMS keeps. Scores under SRT_MIN_SCORE are left out, then a detection that
# overlaps a better one of its class (a soft-NMS duplicate), then all but the best
# SRT_MAX_DETECTIONS; at any moment at most SRT_MAX_LINES of them are on screen.
SRT_MIN_SCORE = 0.1
SRT_MAX_DETECTIONS = 10
SRT_MAX_LINES = 3
# a prediction over a large folder draws the timelines of the first videos (by id) only
MAX_PREDICT_TIMELINES = 50


def _label(class_names: Sequence[str | None], c: int) -> str:
    name = _class_name(class_names, c)
    return name if name is not None else str(c)


def detections_csv(videos: Sequence[VideoDetections], class_names: Sequence[str | None]) -> str:
    """``video,start,end,label,score``: one row per detection, videos by id, each video's
    detections by start time (then by score, best first); seconds to the millisecond,
    scores to 4 decimals (``results.json`` has them at full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "start", "end", "label", "score"])
    for video in sorted(videos, key=lambda v: v.video_id):
        order = np.lexsort((-video.scores, video.segments[:, 0]))
        for k in order:
            a, b = video.segments[k]
            writer.writerow(
                [video.video_id, f"{a:.3f}", f"{b:.3f}",
                 _label(class_names, int(video.labels[k])), f"{video.scores[k]:.4f}"]
            )  # fmt: skip
    return buffer.getvalue()


def srt_timestamp(seconds: float) -> str:
    """SubRip's ``HH:MM:SS,mmm`` (rounded to the millisecond)."""
    ms = max(0, int(round(float(seconds) * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def subtitle_detections(
    video: VideoDetections,
    *,
    min_score: float = SRT_MIN_SCORE,
    max_detections: int = SRT_MAX_DETECTIONS,
) -> list[int]:
    """The detections a video's subtitles show, best first: score >= ``min_score``, not
    overlapping a better one of the same class, at most ``max_detections``."""
    kept: list[int] = []
    for k in np.argsort(-video.scores, kind="stable"):
        if video.scores[k] < min_score or len(kept) == max_detections:
            break
        a, b = video.segments[k]
        if any(
            video.labels[j] == video.labels[k]
            and min(b, video.segments[j, 1]) > max(a, video.segments[j, 0])
            for j in kept
        ):
            continue
        kept.append(int(k))
    return kept


def srt_cues(
    video: VideoDetections,
    class_names: Sequence[str | None],
    *,
    min_score: float = SRT_MIN_SCORE,
    max_detections: int = SRT_MAX_DETECTIONS,
    max_lines: int = SRT_MAX_LINES,
) -> list[tuple[int, int, list[str]]]:
    """``(start_ms, end_ms, lines)`` of a video's subtitles: the `subtitle_detections`
    cut at every start and end into cues that do not overlap (a player shows one at a
    time), each with a line ``label (score)`` for each detection it lies in, best first, at
    most ``max_lines``; neighbouring cues with the same lines are one."""
    kept = subtitle_detections(video, min_score=min_score, max_detections=max_detections)
    ms = {k: [int(round(1000 * float(t))) for t in video.segments[k]] for k in kept}
    bounds = sorted({t for k in kept for t in ms[k]})
    cues: list[tuple[int, int, list[str]]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        on = [k for k in kept if ms[k][0] <= a and b <= ms[k][1]][:max_lines]  # best first
        if not on:
            continue
        lines = [f"{_label(class_names, int(video.labels[k]))} ({video.scores[k]:.2f})" for k in on]
        if cues and cues[-1][1] == a and cues[-1][2] == lines:
            cues[-1] = (cues[-1][0], b, lines)
        else:
            cues.append((a, b, lines))
    return cues


def srt_text(cues: Sequence[tuple[int, int, Sequence[str]]]) -> str:
    """SubRip text of ``(start_ms, end_ms, lines)`` cues, numbered from 1."""
    blocks = [
        f"{i}\n{srt_timestamp(a / 1000)} --> {srt_timestamp(b / 1000)}\n" + "\n".join(lines) + "\n"
        for i, (a, b, lines) in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def write_predictions(
    videos: Sequence[VideoDetections],
    class_names: Sequence[str | None],
    out_dir: str | Path,
    *,
    durations: Mapping[str, float] | None = None,
    max_timelines: int = MAX_PREDICT_TIMELINES,
) -> dict[str, Path]:
    """What a prediction leaves besides ``results.json``, in ``out_dir``:
    ``detections.csv`` (`detections_csv`), ``subtitles/<video>.srt`` (`srt_cues`: the best
    detections over the video, for a player to show) and ``plots/timeline_<video>.png``
    (the best detections by score, coloured by class; the first ``max_timelines`` videos
    by id). ``durations``: each video's seconds, the timelines' extent. Returns name ->
    path."""
    out_dir = Path(out_dir)
    table = detections_csv(videos, class_names)
    paths = {"csv": atomic_write_text(out_dir / "detections.csv", table)}
    ordered = sorted(videos, key=lambda v: v.video_id)
    for video in ordered:
        text = srt_text(srt_cues(video, class_names))
        paths[f"srt/{video.video_id}"] = atomic_write_text(
            out_dir / "subtitles" / f"{video.video_id}.srt", text
        )
    for video in ordered[:max_timelines]:
        path = out_dir / "plots" / f"timeline_{video.video_id}.png"
        duration = (durations or {}).get(video.video_id)
        prediction_plots.plot_detections(video, class_names, path, duration=duration)
        paths[f"timeline/{video.video_id}"] = path
    if len(ordered) > max_timelines:
        log.info(
            "timelines of the first %d of %d videos (by id) in %s",
            max_timelines, len(ordered), out_dir / "plots",
        )  # fmt: skip
    return paths


def diagnosis_scalars(diagnosis, split: str) -> dict[str, float]:
    """The diagnosis' numbers as flat ``split/diagnosis/...`` scalars for the dashboards
    (NaN for empty bins and groups)."""
    doc = diagnosis.to_json()
    out = {f"{split}/diagnosis/average_mAP_N": doc["average_mAP_N"]}
    for group, shares in doc["false_positive_profile"].items():
        out.update({f"{split}/diagnosis/fp_{group}/{k}": v for k, v in shares.items()})
    out.update({f"{split}/diagnosis/gain/{k}": v for k, v in doc["removed_error_gain"].items()})
    for part in ("sensitivity", "false_negative_rate"):
        for name, bins in doc[part].items():
            out.update({f"{split}/diagnosis/{part}/{name}/{b}": v for b, v in bins.items()})
    return {k: math.nan if v is None else float(v) for k, v in out.items()}


def write_diagnosis(diagnosis: Diagnosis, out_dir: str | Path) -> dict[str, Path]:
    """Write ``diagnosis.json`` (atomically) and DETAD's three figures; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"diagnosis": atomic_write_json(out_dir / "diagnosis.json", diagnosis.to_json())}
    for name, draw in [
        ("false_positive_analysis", plots.plot_false_positive_analysis),
        ("sensitivity_analysis", plots.plot_sensitivity_analysis),
        ("false_negative_analysis", plots.plot_false_negative_analysis),
    ]:
        paths[name] = out_dir / f"{name}.png"
        draw(diagnosis, paths[name])
    return paths


def diagnose_evaluation(evaluation: Evaluation, **options: Any) -> Diagnosis | None:
    """DETAD's diagnosis of an evaluation, on its matching (`diagnose`; ``options``: a
    preset's thresholds and bins). None when DETAD's drops (zero length, longer than the
    video) leave no ground truth to diagnose; a video with ground truth and no positive
    duration is an error naming it."""
    gt = evaluation.gt
    bad = [
        evaluation.video_ids[v]
        for v in np.unique(gt.video)
        if not (evaluation.durations[v] > 0 and np.isfinite(evaluation.durations[v]))
    ]
    if bad:
        raise ValueError(
            f"the diagnosis needs each video's duration: none (or not positive) for "
            f"{len(bad)} videos with ground truth, e.g. {bad[:3]}"
        )
    length = gt.segments[:, 1] - gt.segments[:, 0]
    coverage = length / evaluation.durations[gt.video]
    if not np.any((length > 0) & (coverage <= 1)):
        return None
    return diagnose(
        evaluation.pred, evaluation.gt, evaluation.durations, matching=evaluation.matching,
        **options,
    )  # fmt: skip


def write_report(
    evaluation: Evaluation,
    class_names: Sequence[str | None],
    out_dir: str | Path,
    *,
    diagnosis: Mapping[str, Any] | None = None,
    num_timelines: int = 4,
    loggers: Sequence[Any] = (),
    step: int = 0,
    min_score: float | None = None,
    video_fusion: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report of ``evaluation`` into ``out_dir``; returns its summary
    (``metrics.json``'s content).

    ``results.json`` (full precision, readable by the official evaluator),
    ``per_class_ap.md``, ``plots/`` (timelines, reliability), ``diagnosis/`` (DETAD's,
    with ``diagnosis`` = `diagnose`'s thresholds and bins; None: none), the loggers'
    images, per-class table and diagnosis scalars (at ``step``); the mAP table goes to
    the console and ``run.log``. ``min_score``: the post-processing's score floor, named
    when nothing was detected. ``video_fusion``: the video-level classifier fusion that
    made the detections (`VideoFusion.describe`), in the summary and the table's title.
    """
    out_dir = Path(out_dir)
    summary = summarise(evaluation, class_names)
    if video_fusion is not None:
        summary["video_fusion"] = dict(video_fusion)
    _say_if_nothing_was_detected(evaluation, min_score)
    atomic_write_json(out_dir / "results.json", results_json(evaluation.videos(), class_names))
    atomic_write_text(out_dir / "per_class_ap.md", per_class_markdown(summary))
    names = [n if n is not None else str(i) for i, n in enumerate(class_names)]
    images = plots.write_plots(evaluation, names, out_dir / "plots", num_timelines=num_timelines)
    found = _diagnose(evaluation, diagnosis)
    if found is not None:
        paths = write_diagnosis(found, out_dir / "diagnosis")
        images.update({f"diagnosis/{k}": p for k, p in paths.items() if k != "diagnosis"})
        log_metrics(list(loggers), diagnosis_scalars(found, evaluation.split), step=step)
    log_images(list(loggers), images)
    log_per_class_table(list(loggers), f"{evaluation.split}/per_class_ap", summary)
    log.info("%s\nrun folder: %s", map_table(summary), out_dir.resolve())
    return summary


def _diagnose(evaluation: Evaluation, options: Mapping[str, Any] | None) -> Diagnosis | None:
    if options is None:
        return None
    try:  # secondary to the mAP: a video it cannot take (no duration) warns, not fails
        found = diagnose_evaluation(evaluation, **options)
    except ValueError as err:
        log.warning("diagnosis skipped: %s", err)
        return None
    if found is None:
        log.info(
            "diagnosis: no ground truth of positive length within its video in the split; skipped"
        )
    return found


def _say_if_nothing_was_detected(evaluation: Evaluation, min_score: float | None) -> None:
    """A run with no detection at all gets an mAP of 0 and says why: every proposal of
    every video scored under ``postprocess.min_score`` (a self-assessment head that
    collapsed to 0, as the ``score_gt_half`` target can), or NMS kept nothing."""
    if not evaluation.video_ids or evaluation.num_detections:
        return
    known = evaluation.best_scores[np.isfinite(evaluation.best_scores)]
    best = float(known.max()) if len(known) else float("-inf")
    log.warning(
        "no detection on the %s split (%d videos): the highest score of any proposal, "
        "before NMS, was %.3g; postprocess.min_score is %s. The self-assessment head "
        "scores every step near 0 (experiments/README.md, runs with no detection)",
        evaluation.split, len(evaluation.video_ids), best, min_score,
    )  # fmt: skip
