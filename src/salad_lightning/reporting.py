"""What a run leaves for its user: metrics summary, results JSON, tables and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salad_lightning.metrics.calibration import reliability_diagram_data
from salad_lightning.metrics.evaluation import Evaluation


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
    return f"{split} mAP (%)\n{head}\n{sep}\n{row}"


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


def results_json(outputs: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """ActivityNet submission format (docs/method.md §1), readable by the official evaluator."""
    results: dict[str, list[dict[str, Any]]] = {}
    for out in outputs:
        segs = np.asarray(out["segments"], dtype=float).reshape(-1, 2)
        scores = np.asarray(out["scores"], dtype=float).reshape(-1)
        labels = np.asarray(out["labels"], dtype=int).reshape(-1)
        # Full precision (float's shortest round-trip repr): rounding made ties that the
        # run's own metric did not see, so the command's mAP differed from the run's.
        # Detections of a class the annotation file never names cannot be written; they
        # are false positives of a class outside the mean, so the mAP is unchanged.
        results[str(out["video_id"])] = [
            {"label": name, "score": float(s), "segment": [float(a), float(b)]}
            for (a, b), s, lab in zip(segs, scores, labels)
            if (name := _class_name(class_names, lab)) is not None
        ]
    return {"version": "salad-lightning", "results": results, "external_data": {}}


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
    """Detection timelines for a few test videos and the reliability diagram; returns key -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    chosen = sorted(outputs, key=lambda o: -len(o["gt"]["labels"]))[:num_timelines]
    for out in chosen:
        path = out_dir / f"timeline_{out['video_id']}.png"
        plot_timeline(out, class_names, path)
        images[f"timeline/{out['video_id']}"] = path
    if confidences is not None and len(confidences):
        path = out_dir / "reliability.png"
        plot_reliability(confidences, correct, path, n_bins=n_bins)
        images["calibration/reliability"] = path
    return images


def plot_timeline(
    out: dict[str, Any], class_names: Sequence[str], path: Path, *, top: int = 30
) -> None:
    """Ground truth vs the top-scored detections over time (like the paper's Fig. 4)."""
    import matplotlib.pyplot as plt

    gt_segs = np.asarray(out["gt"]["segments"], dtype=float).reshape(-1, 2)
    gt_labels = np.asarray(out["gt"]["labels"], dtype=int).reshape(-1)
    segs = np.asarray(out["segments"], dtype=float).reshape(-1, 2)
    scores = np.asarray(out["scores"], dtype=float).reshape(-1)
    labels = np.asarray(out["labels"], dtype=int).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top]
    classes = sorted(set(gt_labels.tolist()) | set(labels[order].tolist()))
    rows = {c: i for i, c in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.5 * max(1, len(classes))))
    for (s, e), c in zip(gt_segs, gt_labels):
        ax.broken_barh([(s, e - s)], (rows[c] + 0.05, 0.4), color="tab:green")
    for k in order:
        (s, e), c = segs[k], labels[k]
        ax.broken_barh(
            [(s, e - s)],
            (rows[c] + 0.5, 0.4),
            color="tab:blue",
            alpha=float(np.clip(scores[k], 0.05, 1)),
        )
    ax.set_yticks([rows[c] + 0.5 for c in classes])
    ax.set_yticklabels([class_names[c] if c < len(class_names) else str(c) for c in classes])
    ax.set_xlabel("time (s)")
    ax.set_title(
        f"{out['video_id']}: ground truth (green, lower) vs top-{top} detections (blue, alpha = score)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(
    confidences: np.ndarray, correct: np.ndarray, path: Path, n_bins: int = 15
) -> None:
    """Reliability diagram of the detection score against "true positive at tIoU 0.5"."""
    import matplotlib.pyplot as plt

    data = reliability_diagram_data(np.asarray(confidences), np.asarray(correct), n_bins=n_bins)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    centers = 0.5 * (data["bin_edges"][:-1] + data["bin_edges"][1:])
    width = np.diff(data["bin_edges"])
    ax.bar(
        centers,
        data["accuracy"],
        width=width,
        edgecolor="k",
        alpha=0.7,
        label="share of true positives",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("detection score")
    ax.set_ylabel("true positive at tIoU 0.5")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
