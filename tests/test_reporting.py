"""What a run writes for its user: results.json at full precision, per-class tables."""

from __future__ import annotations

import json

import numpy as np

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
    import torch

    values = {
        "mAP@0.5": torch.tensor(0.25),
        "mAP": torch.tensor(0.25),
        "per_class_ap": torch.tensor([[0.5], [0.0]], dtype=torch.float64),
        "classes_present": torch.tensor([0, 2]),
    }
    summary = summarise({"split": "test", "values": values}, ["Run", "Jump", "Swim", None])
    assert summary["per_class_ap"] == {"Run": [0.5], "Swim": [0.0]}
    assert summary["classes_without_ground_truth"] == ["Jump"]
    table = per_class_markdown(summary)
    assert "| Jump | – | – |" in table and "no ground truth in the test split" in table
    assert "| Run | 50.00 | 50.00 |" in table
