"""Every figure of the project: run plots (timelines, reliability).

matplotlib with the Agg backend, chosen inside the functions (importing this module
imports neither matplotlib nor torch), and no LaTeX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning.metrics.calibration import (
    expected_calibration_error,
    reliability_diagram_data,
    true_positive_flags,
)
from salad_lightning.metrics.functional import evaluate_detections

__all__ = [
    "choose_timelines",
    "plot_reliability",
    "plot_timeline",
    "video_ap",
    "write_plots",
]

TRUE_COLOR, FALSE_COLOR, OTHER_COLOR = "tab:blue", "tab:red", "0.55"
GT_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)


def _rows(out: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """(segments, scores, labels, gt segments, gt labels) of one video's output as numpy."""

    def arr(x, dtype):
        return np.asarray(x.cpu() if hasattr(x, "cpu") else x, dtype=dtype)

    return (
        arr(out["segments"], float).reshape(-1, 2),
        arr(out["scores"], float).reshape(-1),
        arr(out["labels"], int).reshape(-1),
        arr(out["gt"]["segments"], float).reshape(-1, 2),
        arr(out["gt"]["labels"], int).reshape(-1),
    )


def _name(class_names: Sequence[str], c: int) -> str:
    return class_names[c] if 0 <= c < len(class_names) else str(c)


# --- run plots ---------------------------------------------------------------------


def video_ap(out: dict[str, Any], tiou: float = 0.5) -> float:
    """AP of one video at ``tiou``: the mean over the classes of its ground truth (NaN if none)."""
    segs, scores, labels, gt_segs, gt_labels = _rows(out)
    if len(gt_labels) == 0:
        return math.nan
    result = evaluate_detections(
        np.zeros(len(scores), dtype=np.int64), segs, scores, labels,
        np.zeros(len(gt_labels), dtype=np.int64), gt_segs, gt_labels, [tiou],
    )  # fmt: skip
    return float(result.mAP[0])


def choose_timelines(outputs: Sequence[dict[str, Any]], num: int) -> list[tuple[int, str]]:
    """(index, caption) of the videos worth drawing: best, median and worst by `video_ap`.

    Videos with ground truth, ranked by AP (more ground truths first on ties, then the
    video id); ``num`` of them spread evenly over that ranking (one: the median).
    """
    aps = [video_ap(o) for o in outputs]
    ranked = sorted(
        (i for i, ap in enumerate(aps) if not math.isnan(ap)),
        key=lambda i: (-aps[i], -len(outputs[i]["gt"]["labels"]), str(outputs[i]["video_id"])),
    )
    n, k = len(ranked), min(int(num), len(ranked))
    if k <= 0:
        return []
    median = int((n - 1) / 2 + 0.5)
    places = [median] if k == 1 else [int(j * (n - 1) / (k - 1) + 0.5) for j in range(k)]
    chosen = []
    for place in dict.fromkeys(places):
        what = {0: "best", n - 1: "worst", median: "median"}.get(place, f"rank {place + 1}")
        chosen.append((ranked[place], f"{what} of {n} videos by AP@0.5"))
    return chosen


def plot_timeline(
    out: dict[str, Any],
    class_names: Sequence[str],
    path: Path,
    *,
    caption: str = "",
    tiou: float = 0.5,
    min_detections: int = 30,
    instances_per_row: int = 12,
) -> None:
    """Ground truth (shaded spans) and the top detections drawn at the height of their score.

    Detections: blue when a true positive at ``tiou`` (official matching), red when a
    false positive of a class of the video's ground truth, grey when of another class.
    All are opaque, so low scores stay visible. The top ``max(min_detections, 3 *
    ground truths)`` by score are drawn; long videos wrap over rows of about
    ``instances_per_row`` ground truths.
    """
    plt = _pyplot()
    segs, scores, labels, gt_segs, gt_labels = _rows(out)
    tp = true_positive_flags(segs, scores, labels, gt_segs, gt_labels, tiou=tiou)
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
        for k in shown[::-1]:  # the best scores drawn last, on top
            ax.hlines(scores[k], *segs[k], color=shade[k], lw=2.4)
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
    ap = video_ap(out, tiou)
    fig.suptitle(
        f"{out['video_id']}: AP@{tiou:g} {100 * ap:.1f}%"
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
    outputs: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    confidences: np.ndarray | None,
    correct: np.ndarray | None,
    out_dir: Path,
    *,
    num_timelines: int = 4,
    n_bins: int = 15,
) -> dict[str, Path]:
    """Timelines of the best, median and worst test videos, and the reliability diagram.

    Returns key -> PNG path (``timeline/<video_id>``, ``calibration/reliability``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    for i, caption in choose_timelines(outputs, num_timelines):
        video_id = outputs[i]["video_id"]
        path = out_dir / f"timeline_{video_id}.png"
        plot_timeline(outputs[i], class_names, path, caption=caption)
        images[f"timeline/{video_id}"] = path
    if confidences is not None and len(confidences):
        path = out_dir / "reliability.png"
        plot_reliability(confidences, correct, path, n_bins=n_bins)
        images["calibration/reliability"] = path
    return images
