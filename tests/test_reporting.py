"""What a run writes for its user: results.json at full precision, per-class tables."""

from __future__ import annotations

import json

import numpy as np

from salad_lightning.metrics.evaluation import Evaluation
from salad_lightning.reporting import per_class_markdown, results_json, summarise


def test_results_json_keeps_every_digit_and_drops_unnamed_classes():
    scores = np.array([0.123456789012345, 0.1234567, 0.5], dtype=np.float64)
    out = {
        "video_id": "v1",
        "segments": np.array([[0.1234567891, 2.718281828459045], [1.0, 2.0], [3.0, 4.0]]),
        "scores": scores,
        "labels": np.array([0, 1, 2]),
    }
    doc = json.loads(json.dumps(results_json([out], ["Run", "Jump", None])))
    items = doc["results"]["v1"]
    # class 2 has no name in the annotation file: it cannot be written
    assert [r["label"] for r in items] == ["Run", "Jump"]
    assert [r["score"] for r in items] == scores[:2].tolist()  # exact round trip
    assert items[0]["segment"] == [0.1234567891, 2.718281828459045]


def test_classes_without_ground_truth_are_marked():
    evaluation = Evaluation(
        split="test",
        tiou_thresholds=(0.5,),
        map_at=(0.25,),
        average_map=0.25,
        per_class_ap=np.array([[0.5], [0.0]]),
        classes_present=np.array([0, 2]),
        ece=0.125,
        confidences=np.array([0.9]),
        correct=np.array([True]),
        n_bins=15,
    )
    summary = summarise(evaluation, ["Run", "Jump", "Swim", None])
    assert summary["per_class_ap"] == {"Run": [0.5], "Swim": [0.0]}
    assert summary["classes_without_ground_truth"] == ["Jump"]
    assert summary["test/mAP@0.5"] == summary["test/mAP"] == 0.25
    assert summary["test/ece"] == 0.125
    table = per_class_markdown(summary)
    assert "| Jump | – | – |" in table and "no ground truth in the test split" in table
    assert "| Run | 50.00 | 50.00 |" in table
