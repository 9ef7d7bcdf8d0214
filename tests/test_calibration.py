"""Calibration helpers, on values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from salad_lightning.metrics.calibration import (
    expected_calibration_error,
    reliability_diagram_data,
    true_positive_flags,
)


def test_ece_by_hand():
    # Two bins, (0, 0.5] and (0.5, 1]:
    #   bin 0: confidences 0.1, 0.2 (mean 0.15), none correct -> gap 0.15, weight 2/5
    #   bin 1: 0.7, 0.8, 0.9 (mean 0.8), 2 of 3 correct -> gap 0.8 - 2/3, weight 3/5
    # ECE = 0.4 * 0.15 + 0.6 * (0.8 - 2/3) = 0.06 + 0.08 = 0.14
    conf = [0.1, 0.2, 0.7, 0.8, 0.9]
    correct = [False, False, True, False, True]
    assert expected_calibration_error(conf, correct, n_bins=2) == pytest.approx(0.14, abs=1e-12)
    data = reliability_diagram_data(conf, correct, n_bins=2)
    np.testing.assert_allclose(data["bin_edges"], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(data["counts"], [2, 3])
    np.testing.assert_allclose(data["accuracy"], [0.0, 2 / 3])
    np.testing.assert_allclose(data["confidence"], [0.15, 0.8])


def test_bin_edges_are_upper_closed_and_empty_bins_are_nan():
    data = reliability_diagram_data([0.0, 0.5, 1.0, 0.25], [1, 0, 1, 1], n_bins=4)
    # 0 and 0.25 -> bin 0 (0 joins the first bin, 0.25 is its upper edge); 0.5 -> bin 1;
    # 1.0 -> bin 3; bin 2 is empty.
    np.testing.assert_array_equal(data["counts"], [2, 1, 0, 1])
    assert np.isnan(data["accuracy"][2]) and np.isnan(data["confidence"][2])
    # |1 - 0.125| * 2/4 + |0 - 0.5| * 1/4 + |1 - 1| * 1/4
    assert expected_calibration_error(
        [0.0, 0.5, 1.0, 0.25], [1, 0, 1, 1], n_bins=4
    ) == pytest.approx(0.875 * 0.5 + 0.5 * 0.25)


def test_perfect_calibration_and_empty_input():
    assert expected_calibration_error([1.0, 1.0, 0.0], [True, True, False]) == 0.0
    assert np.isnan(expected_calibration_error([], []))


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5, 1.5], [1, 0]), r"\[0, 1\]"),
        (([0.5, np.nan], [1, 0]), r"\[0, 1\]"),
        (([0.5], [1, 0]), "one length"),
        (([0.5], [1], 0), "positive integer"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(*args)


def test_true_positive_flags_use_the_greedy_official_matching():
    gt_segments = [[0.0, 10.0], [20.0, 30.0]]
    gt_labels = [0, 1]
    pred_segments = [
        [1.0, 10.0],  # tIoU 0.9 with gt 0: TP
        [0.0, 10.0],  # tIoU 1.0 but lower score: gt 0 is taken -> FP
        [20.0, 24.0],  # tIoU 0.4 with gt 1: FP at 0.5
        [20.0, 30.0],  # wrong class for gt 1 -> FP
        [22.0, 30.0],  # tIoU 0.8 with gt 1: TP
    ]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    labels = [0, 0, 1, 0, 1]
    tp = true_positive_flags(pred_segments, scores, labels, gt_segments, gt_labels, tiou=0.5)
    assert tp.tolist() == [True, False, False, False, True]
    # At 0.3 the 0.4-tIoU prediction scores first on gt 1, and the 0.8 one is left over.
    tp = true_positive_flags(pred_segments, scores, labels, gt_segments, gt_labels, tiou=0.3)
    assert tp.tolist() == [True, False, True, False, False]
    assert true_positive_flags(np.zeros((0, 2)), [], [], gt_segments, gt_labels).shape == (0,)
    assert true_positive_flags([[0, 1]], [0.5], [0], np.zeros((0, 2)), []).tolist() == [False]


def test_the_store_labels_detections_per_video_and_counts_each_video_once():
    import torch

    from salad_lightning.metrics.store import DetectionStore

    # video a: gt [0, 10] class 0; detections 0.9 [1, 10] (TP), 0.4 [0, 10] (gt taken: FP)
    # video b: gt [5, 9] class 1; detection 0.6 [5, 9] class 0 (wrong class: FP)
    a = ({"video_id": "a", "segments": [[1, 10], [0, 10]], "scores": [0.9, 0.4], "labels": [0, 0]},
         {"video_id": "a", "segments": [[0, 10]], "labels": [0]})  # fmt: skip
    b = ({"video_id": "b", "segments": [[5, 9]], "scores": [0.6], "labels": [0]},
         {"video_id": "b", "segments": [[5, 9]], "labels": [1]})  # fmt: skip
    store = DetectionStore(calibration_bins=2)
    store.update([a[0], b[0]], [a[1], b[1]])
    store.update([a[0]], [a[1]])  # a repeated (a distributed sampler's padding): once
    out = store.evaluate()
    # bins (0, .5]: 0.4 FP -> gap 0.4, weight 1/3; (.5, 1]: 0.9 TP, 0.6 FP -> mean conf
    # 0.75, accuracy 0.5 -> gap 0.25, weight 2/3. ECE = 0.4/3 + 0.5/3 = 0.3
    assert out.ece == pytest.approx(0.3, abs=1e-12)
    assert float(store.compute()["ece"]) == out.ece
    assert sorted(out.confidences.tolist()) == [0.4, 0.6, 0.9]
    assert int(out.correct.sum()) == 1
    # torchmetrics' BinaryCalibrationError bins [lower, upper): at a bin edge it differs
    from torchmetrics.classification import BinaryCalibrationError

    ours = expected_calibration_error([0.5, 0.5, 0.9], [0, 0, 1], n_bins=2)
    theirs = BinaryCalibrationError(n_bins=2)(
        torch.tensor([0.5, 0.5, 0.9]), torch.tensor([0, 0, 1])
    )
    # ours: 0.5 -> (0, .5]: gap 0.5 x 2/3; 0.9 -> gap 0.1 x 1/3 = 1/3 + 1/30
    assert ours == pytest.approx(1 / 3 + 1 / 30)
    # theirs: 0.5 and 0.9 share [.5, 1): mean conf 0.6333, accuracy 1/3, gap 0.3
    assert float(theirs) == pytest.approx(0.3, abs=1e-6)


def test_the_store_labels_as_per_video_matching_does():
    """One matching over every video (the store's) labels each detection as the
    per-video `true_positive_flags` does, equal scores included."""
    from salad_lightning.metrics.store import DetectionStore

    rng = np.random.default_rng(4)
    preds, targets, expected = [], [], []
    for v in range(12):
        n, m = int(rng.integers(0, 6)), int(rng.integers(0, 25))
        gs = np.sort(rng.uniform(0, 60, (n, 2)), axis=1)
        gl = rng.integers(0, 3, n)
        ps = np.sort(rng.uniform(0, 60, (m, 2)), axis=1)
        ps[: min(m, n)] = gs[: min(m, n)] + rng.normal(0, 1, (min(m, n), 2))
        ps.sort(axis=1)
        pl = rng.integers(0, 3, m)
        sc = rng.integers(1, 5, m) / 5  # many equal scores
        preds.append({"video_id": f"v{v}", "segments": ps, "scores": sc, "labels": pl})
        targets.append({"video_id": f"v{v}", "segments": gs, "labels": gl})
        expected.append((sc, true_positive_flags(ps, sc, pl, gs, gl, tiou=0.5)))
    store = DetectionStore(calibration_bins=5)
    store.update(preds[:5], targets[:5])
    store.update(preds[5:], targets[5:])
    out = store.evaluate()
    conf = np.concatenate([c for c, _ in expected])
    flags = np.concatenate([f for _, f in expected])
    assert flags.any() and not flags.all()
    got = sorted(zip(out.confidences.tolist(), out.correct.tolist()))
    assert got == sorted(zip(conf.tolist(), flags.tolist()))
    assert out.ece == pytest.approx(expected_calibration_error(conf, flags, 5), abs=1e-12)
