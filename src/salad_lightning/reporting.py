"""What a run leaves for its user: metrics summary, results JSON, tables and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from salad_lightning.plots import write_plots  # noqa: F401  (moved there; kept importable)


def _num(v: Any) -> float:
    return float(v.item()) if hasattr(v, "item") else float(v)


def summarise(last_eval: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """Flatten the metric's output into JSON: mAP per threshold, average, per-class AP, ECE."""
    values = last_eval.get("values") or {}
    split = last_eval.get("split", "test")
    thresholds = [k.split("@", 1)[1] for k in values if k.startswith("mAP@")]
    per_class = values.get("per_class_ap")
    table: dict[str, list[float]] = {}
    if per_class is not None:
        arr = np.asarray(per_class.cpu() if hasattr(per_class, "cpu") else per_class, dtype=float)
        present = values.get("classes_present")
        idx = np.asarray(present.cpu() if hasattr(present, "cpu") else present, dtype=int)
        for row, c in zip(arr, idx):
            name = class_names[c] if c < len(class_names) else str(c)
            table[name] = [round(float(x), 6) for x in row]
    summary: dict[str, Any] = {
        "split": split,
        "tiou_thresholds": [float(t) for t in thresholds],
        **{f"{split}/mAP@{t}": _num(values[f"mAP@{t}"]) for t in thresholds},
    }
    if "mAP" in values:
        summary[f"{split}/mAP"] = _num(values["mAP"])
    conf, correct = last_eval.get("confidences"), last_eval.get("correct")
    if conf is not None and len(conf):
        from salad_lightning.metrics.calibration import expected_calibration_error

        n_bins = int(last_eval.get("n_bins", 15))
        summary[f"{split}/ece"] = float(expected_calibration_error(conf, correct, n_bins=n_bins))
    summary["per_class_ap"] = table
    return summary


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
    for name, aps in sorted(summary["per_class_ap"].items()):
        cells = [f"{100 * a:.2f}" for a in aps] + [f"{100 * float(np.mean(aps)):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_json(outputs: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """ActivityNet submission format (SPEC §1), readable by the official evaluator."""
    results: dict[str, list[dict[str, Any]]] = {}
    for out in outputs:
        segs = np.asarray(out["segments"], dtype=float).reshape(-1, 2)
        scores = np.asarray(out["scores"], dtype=float).reshape(-1)
        labels = np.asarray(out["labels"], dtype=int).reshape(-1)
        results[str(out["video_id"])] = [
            {
                "label": class_names[lab] if lab < len(class_names) else str(lab),
                "score": round(float(s), 6),
                "segment": [round(float(a), 3), round(float(b), 3)],
            }
            for (a, b), s, lab in zip(segs, scores, labels)
        ]
    return {"version": "salad-lightning", "results": results, "external_data": {}}
