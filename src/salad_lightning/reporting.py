"""What a run leaves for its user: metrics summary, results JSON, tables and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

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
