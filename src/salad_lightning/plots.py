"""Every figure of the project: run plots (timelines, reliability) and DETAD's diagnosis.

matplotlib with the Agg backend, chosen inside the functions (importing this module
imports neither matplotlib nor torch), and no LaTeX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from salad_lightning.metrics.calibration import (
    expected_calibration_error,
    reliability_diagram_data,
)
from salad_lightning.metrics.diagnosis import ERROR_TYPES
from salad_lightning.metrics.functional import Instances, average_precision

if TYPE_CHECKING:
    from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
    from salad_lightning.metrics.diagnosis import Diagnosis
    from salad_lightning.metrics.evaluation import Evaluation

__all__ = [
    "choose_timelines",
    "plot_false_negative_analysis",
    "plot_false_positive_analysis",
    "plot_reliability",
    "plot_sensitivity_analysis",
    "plot_timeline",
    "video_aps",
    "write_plots",
]

TRUE_COLOR, FALSE_COLOR, OTHER_COLOR = "tab:blue", "tab:red", "0.55"
GT_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
TYPE_COLORS = ["#33a02c", "#b2df8a", "#1f78b4", "#fb9a99", "#e31a1c", "#a6cee3"]
TYPE_NAMES = [t.replace("_", " ") for t in ERROR_TYPES]  # "true positive", ...
CHARACTERISTIC_NAMES = {"length": "length", "coverage": "coverage", "num_instances": "# instances"}
CHARACTERISTIC_COLORS = {"length": "#f0027f", "coverage": "#386cb0", "num_instances": "#bf5b17"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)


def _thresholds(values: Sequence[float]) -> str:
    """``0.5`` or ``0.3, 0.5`` or ``0.5:0.05:0.95`` (evenly spaced, more than three)."""
    t = [float(v) for v in values]
    steps = np.diff(t)
    if len(t) > 3 and np.allclose(steps, steps[0]):
        return f"{t[0]:g}:{steps[0]:.3g}:{t[-1]:g}"
    return ", ".join(f"{v:g}" for v in t)


def _name(class_names: Sequence[str], c: int) -> str:
    return class_names[c] if 0 <= c < len(class_names) else str(c)


# --- run plots ---------------------------------------------------------------------


def video_aps(evaluation: Evaluation, tiou: float = 0.5) -> np.ndarray:
    """AP at ``tiou`` of each video of ``evaluation`` (in its order): the mean over the
    classes of the video's ground truth (NaN if none). The evaluation's matching with each
    (video, class) pair as a class of its own: nothing is matched again."""
    n_cls = 1 + int(max(evaluation.pred.labels.max(initial=0), evaluation.gt.labels.max(initial=0)))
    pred, gt = evaluation.pred, evaluation.gt
    result = average_precision(
        Instances(pred.video, pred.segments, pred.video * n_cls + pred.labels, pred.scores),
        Instances(gt.video, gt.segments, gt.video * n_cls + gt.labels),
        evaluation.matching.at([tiou]),
    )
    n = len(evaluation.video_ids)
    owner = result.labels // n_cls
    total = np.bincount(owner, weights=result.ap[:, 0], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.bincount(owner, minlength=n)


def choose_timelines(evaluation: Evaluation, num: int) -> list[tuple[int, str]]:
    """(index, caption) of the videos worth drawing: best, median and worst by `video_aps`.

    Videos with ground truth, ranked by AP (more ground truths first on ties, then the
    video id); ``num`` of them spread evenly over that ranking, the median among them
    from three on (one: the median; two: best and worst).
    """
    aps = video_aps(evaluation)
    n_gt = np.bincount(evaluation.gt.video, minlength=len(evaluation.video_ids))
    ranked = sorted(
        (i for i, ap in enumerate(aps) if not math.isnan(ap)),
        key=lambda i: (-aps[i], -n_gt[i], evaluation.video_ids[i]),
    )
    n, k = len(ranked), min(int(num), len(ranked))
    if k <= 0:
        return []
    median = int((n - 1) / 2 + 0.5)
    places = [median] if k == 1 else [int(j * (n - 1) / (k - 1) + 0.5) for j in range(k)]
    if k >= 3:  # the median always, in place of the evenly spaced pick nearest to it
        places[min(range(k), key=lambda j: abs(places[j] - median))] = median
    chosen = []
    for place in sorted(set(places)):
        what = {0: "best", n - 1: "worst", median: "median"}.get(place, f"rank {place + 1}")
        chosen.append((ranked[place], f"{what} of {n} videos by AP@0.5"))
    return chosen


def plot_timeline(
    video: VideoDetections,
    truth: VideoGroundTruth,
    class_names: Sequence[str],
    path: Path,
    *,
    true_positive: np.ndarray,
    ap: float | None = None,
    caption: str = "",
    tiou: float = 0.5,
    min_detections: int = 30,
    instances_per_row: int = 12,
) -> None:
    """Ground truth (shaded spans) and the top detections drawn at the height of their score.

    Detections: blue when a true positive at ``tiou`` (``true_positive``, from the
    evaluation's matching), red when a false positive of a class of the video's ground
    truth, grey when of another class. All are opaque, so low scores stay visible. The
    top ``max(min_detections, 3 * ground truths)`` by score are drawn; long videos wrap
    over rows of about ``instances_per_row`` ground truths. ``ap``: the video's AP at
    ``tiou``, in the title.
    """
    plt = _pyplot()
    segs, scores, labels = video.segments, video.scores, video.labels
    gt_segs, gt_labels = truth.segments, truth.labels
    tp = np.asarray(true_positive, dtype=bool).reshape(-1)
    if len(tp) != len(scores):
        raise ValueError(
            f"plot_timeline: {len(scores)} detections of video {video.video_id!r} but "
            f"{len(tp)} true-positive flags"
        )
    shown = np.argsort(-scores, kind="stable")[: max(min_detections, 3 * len(gt_labels))]
    gt_classes = sorted(set(gt_labels.tolist()))
    own = np.isin(labels, gt_classes)
    color = {c: GT_COLORS[i % len(GT_COLORS)] for i, c in enumerate(gt_classes)}
    end = max([1.0, *gt_segs[:, 1].tolist(), *segs[shown, 1].tolist()])
    n_rows = int(np.clip(math.ceil(len(gt_labels) / instances_per_row), 1, 6))
    width = end / n_rows
    top = max(1.0, float(scores.max(initial=0))) * 1.05
    fig, axes = plt.subplots(n_rows, 1, figsize=(12, 1.3 + 2.0 * n_rows), squeeze=False)
    shade = {k: TRUE_COLOR if tp[k] else FALSE_COLOR if own[k] else OTHER_COLOR for k in shown}
    for r, ax in enumerate(axes[:, 0]):
        for (s, e), c in zip(gt_segs, gt_labels):
            ax.axvspan(s, e, color=color[c], alpha=0.25, lw=0)
        order = shown[::-1]  # one collection, drawn in order: the best scores on top
        ax.hlines(scores[order], segs[order, 0], segs[order, 1],
                  colors=[shade[k] for k in order], lw=2.4)  # fmt: skip
        if len(gt_classes) > 1:  # which of the video's classes each detection claims
            mine = shown[own[shown]]
            ax.scatter(segs[mine, 0], scores[mine], s=14, marker="s", zorder=3,
                       c=[color[c] for c in labels[mine]])  # fmt: skip
        ax.set_xlim(r * width, (r + 1) * width)
        ax.set_ylim(-0.03, top)
        ax.set_ylabel("score")
        ax.grid(axis="y", ls=":", lw=0.6)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [
        plt.Line2D([], [], color=TRUE_COLOR, lw=2.5, label=f"true positive (tIoU {tiou:g})"),
        plt.Line2D([], [], color=FALSE_COLOR, lw=2.5, label="false positive"),
        plt.Line2D([], [], color=OTHER_COLOR, lw=2.5, label="false positive, another class"),
    ] + [
        plt.Rectangle((0, 0), 1, 1, color=color[c], alpha=0.4,
                      label=f"ground truth: {_name(class_names, c)}")
        for c in gt_classes
    ]  # fmt: skip
    axes[0, 0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3,
                      fontsize=8, frameon=False)  # fmt: skip
    title = f"{video.video_id}" + ("" if ap is None else f": AP@{tiou:g} {100 * ap:.1f}%")
    fig.suptitle(
        title
        + (f" ({caption})" if caption else "")
        + f"\n{int(tp[shown].sum())} true / {int((~tp[shown]).sum())} false positives among the"
        f" top {len(shown)} of {len(scores)} detections; {len(gt_labels)} ground truths",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)


def plot_reliability(
    confidences: np.ndarray, correct: np.ndarray, path: Path, n_bins: int = 15
) -> None:
    """Reliability diagram of the score against "true positive at tIoU 0.5", with per-bin counts.

    The hatched bars are each bin's gap between mean score and accuracy: the ECE in
    the title is their average weighted by the counts of the histogram below.
    """
    plt = _pyplot()
    conf, hit = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=bool)
    data = reliability_diagram_data(conf, hit, n_bins=n_bins)
    ece = expected_calibration_error(conf, hit, n_bins=n_bins)
    edges, counts = data["bin_edges"], data["counts"]
    centers, width = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    acc, mean = np.nan_to_num(data["accuracy"]), np.nan_to_num(data["confidence"])
    ax.bar(centers, acc, width=width, edgecolor="k", color="tab:blue", alpha=0.75,
           label="share of true positives")  # fmt: skip
    ax.bar(centers, mean - acc, bottom=acc, width=width, color="none", edgecolor="tab:red",
           hatch="//", lw=0.8, label="gap to the mean score")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylim=(0, 1), ylabel="true positive at tIoU 0.5")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"ECE {ece:.3f} over {len(conf):,} detections ({n_bins} bins)", fontsize=10)
    hist.bar(centers, counts, width=width, edgecolor="k", color="0.6")
    peak = max(1, int(counts.max(initial=0)))
    if peak > 50 * max(1, counts[counts > 0].min(initial=1)):
        hist.set_yscale("log")
        hist.set_ylim(0.7, peak * 8)
    else:
        hist.set_ylim(0, peak * 1.35)
    for x, n in zip(centers, counts):
        if n:
            hist.text(x, n, f" {n:,}", ha="center", va="bottom", fontsize=7, rotation=90)
    hist.set(xlim=(0, 1), xlabel="detection score", ylabel="detections per bin")
    fig.tight_layout()
    _save(fig, path)


def write_plots(
    evaluation: Evaluation,
    class_names: Sequence[str],
    out_dir: Path,
    *,
    num_timelines: int = 4,
    tiou: float = 0.5,
) -> dict[str, Path]:
    """Timelines of the best, median and worst videos of ``evaluation`` and the
    reliability diagram of its scores, all from its matching. Timelines of other videos
    in ``out_dir`` (an earlier report's) are removed.

    Returns key -> PNG path (``timeline/<video_id>``, ``calibration/reliability``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    chosen = choose_timelines(evaluation, num_timelines)
    if chosen:
        videos, truths = evaluation.videos(), evaluation.ground_truth()
        aps = video_aps(evaluation, tiou)
        row = evaluation.matching.at([tiou])
        for i, caption in chosen:
            video = videos[i]
            flags = row.tp[0][evaluation.pred.video == i]
            path = out_dir / f"timeline_{video.video_id}.png"
            plot_timeline(video, truths[i], class_names, path, true_positive=flags,
                          ap=float(aps[i]), caption=caption, tiou=tiou)  # fmt: skip
            images[f"timeline/{video.video_id}"] = path
    for stale in set(out_dir.glob("timeline_*.png")) - set(images.values()):
        stale.unlink()  # an earlier test's (a resumed run's first): its videos differ
    if evaluation.num_detections and evaluation.scores_are_probabilities:
        path = out_dir / "reliability.png"
        plot_reliability(evaluation.confidences, evaluation.correct, path, n_bins=evaluation.n_bins)
        images["calibration/reliability"] = path
    return images


# --- DETAD's diagnosis ---------------------------------------------------------------


def _label_bars(ax, bars, values, fmt: str = "{:.1f}") -> None:
    for bar, v in zip(bars, values):
        text = "n/a" if math.isnan(v) else fmt.format(v)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, 0 if math.isnan(v) else v),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8)  # fmt: skip


def _per_bin_bars(ax, diagnosis: Diagnosis, values: dict[str, np.ndarray]) -> None:
    """One group of bars per characteristic, percent, ticks naming bin and ground truths."""
    x, ticks, labels = 0, [], []
    for name, v in values.items():
        bins = diagnosis.bins[name]
        xs = np.arange(x, x + len(bins.names))
        pct = 100 * np.asarray(v, dtype=float)
        bars = ax.bar(xs, np.nan_to_num(pct), color=CHARACTERISTIC_COLORS[name], width=0.8)
        _label_bars(ax, bars, pct)
        counts = diagnosis.ground_truths_per_bin[name]
        ticks += list(xs)
        labels += [f"{b}\n{n:,}" for b, n in zip(bins.names, counts)]
        ax.text(xs.mean(), 1.0, CHARACTERISTIC_NAMES[name], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=10, weight="bold")  # fmt: skip
        ax.axvline(xs[-1] + 1, color="0.6", ls=":", lw=1)
        x = xs[-1] + 2
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlim(-1, x - 1)
    ax.set_xlabel("bin (XS ... XL) and its number of ground truths")
    ax.spines[["top", "right"]].set_visible(False)


def plot_false_positive_analysis(diagnosis: Diagnosis, path: Path) -> None:
    """False-positive profile over the top 1G ... kG predictions, and each error's impact."""
    plt = _pyplot()
    profile = 100 * np.asarray(diagnosis.false_positive_profile, dtype=float)
    fig, (ax, gain_ax) = plt.subplots(
        1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2], "wspace": 0.3}
    )
    xs = np.arange(len(profile))
    bottom = np.zeros(len(profile))
    for k, name in enumerate(TYPE_NAMES):
        share = np.nan_to_num(profile[:, k])
        ax.bar(xs, share, bottom=bottom, color=TYPE_COLORS[k], label=name, width=0.85)
        bottom += share
    for x in xs[np.isnan(profile[:, 0])]:
        ax.text(x, 2, "none", ha="center", fontsize=8, rotation=90)
    ax.set_xticks(xs, [f"{g + 1}G" for g in xs])
    ax.set(ylim=(0, 100), ylabel="share of predictions (%)",
           xlabel="predictions ranked 1..G, G+1..2G, ... per class (G: its ground truths)")  # fmt: skip
    thresholds = _thresholds(diagnosis.tiou_thresholds)
    ax.set_title(f"False-positive profile (tIoU {thresholds})", fontsize=11)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.08), ncol=3, fontsize=8, frameon=False)
    gains = 100 * np.asarray(diagnosis.removed_error_gain, dtype=float)
    bars = gain_ax.bar(np.arange(len(gains)), gains, color=TYPE_COLORS[1:])
    _label_bars(gain_ax, bars, gains, "{:.2f}")
    gain_ax.set_xticks(np.arange(len(gains)), TYPE_NAMES[1:], rotation=25, ha="right",
                       fontsize=8)  # fmt: skip
    gain_ax.set_ylabel("average-mAP_N gain (points)")
    gain_ax.set_ylim(0, max(1.0, float(np.nanmax(gains, initial=0))) * 1.2)
    gain_ax.set_title(
        f"Removing each error type (base {100 * diagnosis.average_mAP_N_top:.2f}%)", fontsize=11
    )
    for a in (ax, gain_ax):
        a.spines[["top", "right"]].set_visible(False)
        a.grid(axis="y", ls=":", lw=0.6)
        a.set_axisbelow(True)
    _save(fig, path)


def plot_sensitivity_analysis(diagnosis: Diagnosis, path: Path) -> None:
    """Average-mAP_N per bin of each characteristic, and its spread relative to the whole."""
    plt = _pyplot()
    base = 100 * diagnosis.average_mAP_N
    fig, (ax, rel_ax) = plt.subplots(
        1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [4, 1.3], "wspace": 0.25}
    )
    _per_bin_bars(ax, diagnosis, diagnosis.sensitivity)
    ax.axhline(base, color="k", ls="--", lw=1)
    top = np.nanmax([np.nanmax(100 * v, initial=0) for v in diagnosis.sensitivity.values()])
    ax.set_ylim(0, max(base, top, 1.0) * 1.18)
    ax.set_ylabel("average-mAP_N (%)")
    ax.grid(axis="y", ls=":", lw=0.6)
    names = list(diagnosis.sensitivity)
    for x, name in enumerate(names):
        if diagnosis.average_mAP_N <= 0:  # nothing detected: no relative change to draw
            continue
        ratio = diagnosis.sensitivity[name] / diagnosis.average_mAP_N
        if np.isnan(ratio).all():
            continue
        lo, hi = np.nanmin(ratio), np.nanmax(ratio)
        rel_ax.plot([x, x], [lo, hi], color=CHARACTERISTIC_COLORS[name], lw=6, marker="_",
                    markersize=18, mew=3)  # fmt: skip
        for y in (lo, hi):
            rel_ax.annotate(f"{y:.2f}", (x, y), xytext=(10, -3), textcoords="offset points",
                            fontsize=8)  # fmt: skip
    rel_ax.axhline(1.0, color="k", ls="--", lw=1)
    rel_ax.set_xticks(range(len(names)), [CHARACTERISTIC_NAMES[n] for n in names], fontsize=8)
    rel_ax.set_xlim(-0.6, len(names) - 0.4)
    rel_ax.set_ylabel("worst and best bin / all ground truths")
    rel_ax.grid(ls=":", lw=0.6)
    thresholds = _thresholds(diagnosis.tiou_thresholds)
    fig.suptitle(
        f"Sensitivity (tIoU {thresholds}); dashed: all ground truths, {base:.2f}%",
        fontsize=11,
        y=1.04,
    )
    _save(fig, path)


def plot_false_negative_analysis(diagnosis: Diagnosis, path: Path) -> None:
    """Share of each bin's ground truths that no prediction finds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    _per_bin_bars(ax, diagnosis, diagnosis.false_negative_rate)
    ax.set_ylim(0, 112)
    ax.set_ylabel("false negatives (%)")
    ax.grid(axis="y", ls=":", lw=0.6)
    thresholds = _thresholds(diagnosis.tiou_thresholds)
    fig.suptitle(f"False negatives (tIoU {thresholds})", fontsize=11, y=1.04)
    _save(fig, path)
