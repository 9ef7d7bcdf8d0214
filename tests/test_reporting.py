"""What a run writes for its user: results.json at full precision, per-class tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.metrics.evaluation import evaluate_videos
from salad_lightning.reporting import per_class_markdown, results_json, summarise


def test_results_json_keeps_every_digit_and_drops_unnamed_classes():
    scores = np.array([0.123456789012345, 0.1234567, 0.5], dtype=np.float64)
    out = VideoDetections(
        "v1",
        np.array([[0.1234567891, 2.718281828459045], [1.0, 2.0], [3.0, 4.0]]),
        scores,
        np.array([0, 1, 2]),
    )
    doc = json.loads(json.dumps(results_json([out], ["Run", "Jump", None])))
    items = doc["results"]["v1"]
    # class 2 has no name in the annotation file: it cannot be written
    assert [r["label"] for r in items] == ["Run", "Jump"]
    assert [r["score"] for r in items] == scores[:2].tolist()  # exact round trip
    assert items[0]["segment"] == [0.1234567891, 2.718281828459045]


def test_classes_without_ground_truth_are_marked():
    # classes 0 and 2 have ground truth: class 0 found at score 0.9 (AP 1), class 2's
    # instance missed (AP 0) and a false positive of class 2 at 0.3: mAP 0.5; ECE in 15
    # bins: 0.9 correct (gap 0.1), 0.3 wrong (gap 0.3), each weight 1/2: 0.2
    truth = VideoGroundTruth("v", [[0.0, 10.0], [20.0, 30.0]], [0, 2], 100.0)
    dets = VideoDetections("v", [[0.0, 10.0], [50.0, 60.0]], [0.9, 0.3], [0, 2])
    evaluation = evaluate_videos([dets], [truth], [0.5])
    summary = summarise(evaluation, ["Run", "Jump", "Swim", None])
    assert summary["per_class_ap"] == {"Run": [1.0], "Swim": [0.0]}
    assert summary["classes_without_ground_truth"] == ["Jump"]
    assert summary["test/mAP@0.5"] == summary["test/mAP"] == 0.5
    assert summary["test/ece"] == pytest.approx(0.2, abs=1e-12)
    table = per_class_markdown(summary)
    assert "| Jump | – | – |" in table and "no ground truth in the test split" in table
    assert "| Run | 100.00 | 100.00 |" in table


def test_scores_that_are_not_probabilities_have_no_calibration(tmp_path):
    """A second stage's scores may exceed 1 (P-GCN: softmax x exp(completeness)): the
    ECE is then NaN and no reliability diagram is drawn; the mAP is unaffected."""
    from salad_lightning import plots

    truth = VideoGroundTruth("v", [[0.0, 10.0]], [0], 100.0)
    dets = VideoDetections("v", [[0.0, 10.0], [50.0, 60.0]], [1.7, 0.3], [0, 0])
    evaluation = evaluate_videos([dets], [truth], [0.5])
    assert not evaluation.scores_are_probabilities and np.isnan(evaluation.ece)
    assert evaluation.average_map == 1.0
    images = plots.write_plots(evaluation, ["Run"], tmp_path, num_timelines=1)
    assert list(images) == ["timeline/v"]
    capped = VideoDetections("v", dets.segments, [1.0, 0.3], dets.labels)
    assert evaluate_videos([capped], [truth], [0.5]).ece == pytest.approx(0.15)  # (0 + 0.3) / 2
