"""The fast evaluator against hand-worked answers and the straightforward transcription."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from _reference_eval import as_instances, reference_evaluate
from salad_lightning.metrics.functional import (
    Instances,
    evaluate_detections,
    match_predictions,
    segment_tiou,
    video_key,
)


def _rows(items):
    """[(video, start, end, label[, score])] -> flat arrays (the transcription's input)."""
    video = np.array([r[0] for r in items], dtype=np.int64)
    seg = np.array([[r[1], r[2]] for r in items], dtype=np.float64).reshape(-1, 2)
    label = np.array([r[3] for r in items], dtype=np.int64)
    if items and len(items[0]) == 5:
        return video, seg, np.array([r[4] for r in items], dtype=np.float64), label
    return video, seg, label


def evaluate(preds, gts, thresholds):
    pv, ps, pscore, pl = _rows(preds)
    gv, gs, gl = _rows(gts)
    pred, gt = as_instances(pv, ps, pscore, pl, gv, gs, gl)
    result = evaluate_detections(pred, gt, tiou_thresholds=thresholds)
    classes, ap, mean_ap, avg = reference_evaluate(pv, ps, pscore, pl, gv, gs, gl, thresholds)
    assert result.labels.tolist() == classes
    np.testing.assert_allclose(result.ap, np.array(ap).reshape(result.ap.shape), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.mAP, mean_ap, rtol=0, atol=1e-9)
    return result


# --- hand-worked cases: the expected values are worked out in the comments ----------


def test_prediction_overlapping_two_ground_truths():
    # G0=[0,10], G1=[8,18]. P1=[5,15]: tIoU 5/15 with G0, 7/13 with G1, so it tries G1
    # first. P2=[0,9]: 0.9 with G0. P3=[9,17]: 0.8 with G1, 1/17 with G0.
    gts = [(0, 0, 10, 0), (0, 8, 18, 0)]
    preds = [(0, 5, 15, 0, 0.9), (0, 0, 9, 0, 0.8), (0, 9, 17, 0, 0.7)]
    r = evaluate(preds, gts, [0.5, 0.6, 0.95])
    # 0.5: P1->G1, P2->G0, P3 finds G1 taken and G0 too far: TP TP FP, AP 1.
    # 0.6: P1 FP (7/13 < 0.6), P2->G0, P3->G1: FP TP TP, precision 0, 1/2, 2/3,
    #      envelope 2/3 at both recall steps: AP 2/3.
    # 0.95: all FP.
    np.testing.assert_allclose(r.ap[0], [1.0, 2 / 3, 0.0], atol=1e-12)
    tp = match_predictions(*as_instances(*_rows(preds), *_rows(gts)), tiou_thresholds=[0.5, 0.6])
    assert tp.tolist() == [[True, True, False], [False, True, True]]


def test_two_predictions_on_one_ground_truth():
    gts = [(0, 0, 10, 0)]
    # The worse one (tIoU 0.4) scores higher: at 0.5 it is an FP before the TP,
    # at 0.3 it takes the gt and the good one is the duplicate FP.
    preds = [(0, 0, 4, 0, 0.9), (0, 0, 10, 0, 0.8)]
    r = evaluate(preds, gts, [0.3, 0.5])
    np.testing.assert_allclose(r.ap[0], [1.0, 0.5], atol=1e-12)


@pytest.mark.parametrize("g0_first, expected", [(True, 0.5), (False, 1.0)])
def test_equal_tious_try_the_later_ground_truth_first(g0_first, expected):
    # P1=[5,15] has tIoU 1/3 with both G0=[0,10] and G1=[10,20]; P2=[12,20] fits
    # only G1 (0.8). P1 takes the gt listed later. With G1 listed later, P1 takes G1
    # and P2 is an FP (AP 1 * 1/2); with G0 listed later, both are TPs (AP 1).
    g0, g1 = (0, 0, 10, 0), (0, 10, 20, 0)
    gts = [g0, g1] if g0_first else [g1, g0]
    preds = [(0, 5, 15, 0, 0.9), (0, 12, 20, 0, 0.8)]
    r = evaluate(preds, gts, [0.3])
    assert r.ap[0, 0] == pytest.approx(expected, abs=1e-12)


def test_class_without_predictions_counts_as_zero():
    gts = [(0, 0, 10, 0), (0, 20, 30, 1)]
    preds = [(0, 0, 10, 0, 0.9)]
    r = evaluate(preds, gts, [0.5])
    assert r.labels.tolist() == [0, 1]
    np.testing.assert_allclose(r.ap[:, 0], [1.0, 0.0])
    assert r.mAP[0] == pytest.approx(0.5)


def test_video_without_ground_truth_of_that_class_is_a_false_positive():
    # Video 1 has a gt of class 1 at the same place, not of class 0.
    gts = [(0, 0, 10, 0), (1, 0, 10, 1)]
    preds = [(1, 0, 10, 0, 0.9), (0, 0, 10, 0, 0.8), (1, 0, 10, 1, 0.7)]
    r = evaluate(preds, gts, [0.5])
    np.testing.assert_allclose(r.ap[:, 0], [0.5, 1.0])


def test_duplicated_ground_truths_count_twice():
    gts = [(0, 0, 10, 0), (0, 0, 10, 0)]
    # npos = 2: each duplicate can be matched once.
    r = evaluate([(0, 0, 10, 0, 0.9), (0, 0, 10, 0, 0.8), (0, 0, 10, 0, 0.7)], gts, [0.5])
    assert r.ap[0, 0] == pytest.approx(1.0)
    assert r.num_ground_truths.tolist() == [2]
    r = evaluate([(0, 0, 10, 0, 0.9)], gts, [0.5])
    assert r.ap[0, 0] == pytest.approx(0.5)


def test_zero_length_segments_follow_the_official_nan():
    # Zero-length prediction vs zero-length gt: 0/0 = NaN passes every threshold,
    # even at another position. Against positive lengths the tIoU is 0.
    assert np.isnan(segment_tiou(np.array([3.0, 3.0]), np.array([5.0, 5.0])))
    assert segment_tiou(np.array([4.0, 6.0]), np.array([5.0, 5.0])) == 0
    gts = [(0, 5, 5, 0)]
    r = evaluate([(0, 3, 3, 0, 0.9)], gts, [0.5, 0.95])
    np.testing.assert_allclose(r.ap[0], [1.0, 1.0])
    r = evaluate([(0, 4, 6, 0, 0.9)], gts, [0.5])
    assert r.ap[0, 0] == 0
    # A zero-length gt still counts in npos.
    r = evaluate([(0, 0, 10, 0, 0.9)], [(0, 0, 10, 0), (0, 5, 5, 0)], [0.5])
    assert r.ap[0, 0] == pytest.approx(0.5)


def test_segments_that_end_before_they_start_follow_the_official_formula():
    # The official code takes such segments as they are: the intersection is 0, so
    # tIoU = 0 / (len_p + len_g), which is NaN (matched at every threshold, tried
    # first) when len_p == -len_g, and <= 0 (never matched) otherwise.
    # G0=[10,7] (length -3), G1=[0,4]. P1=[20,23] (length 3): 0/0 with G0, 0 with
    # G1 -> TP through G0. P2=[0,4]: tIoU 1 with G1 -> TP. P3=[9,8] (length -1):
    # 0/(-4) with G0, 0/3 with G1 -> FP. npos 2: precision 1, 1, 2/3 -> AP 1.
    gts = [(0, 10, 7, 0), (0, 0, 4, 0)]
    preds = [(0, 20, 23, 0, 0.9), (0, 0, 4, 0, 0.8), (0, 9, 8, 0, 0.7)]
    r = evaluate(preds, gts, [0.5, 0.95])
    np.testing.assert_allclose(r.ap[0], [1.0, 1.0], atol=1e-12)
    tp = match_predictions(*as_instances(*_rows(preds), *_rows(gts)), tiou_thresholds=[0.5])
    assert tp.tolist() == [[True, True, False]]
    # An inverted prediction of length -4 against G1 (length 4): 0/0, a TP.
    r = evaluate([(0, 6, 2, 0, 0.9)], [(0, 0, 4, 0)], [0.5])
    np.testing.assert_allclose(r.ap[0], [1.0], atol=1e-12)


def test_tiou_exactly_at_the_threshold_matches():
    # [5,10] vs [0,10]: tIoU 0.5; the gt starts exactly at end - length / t.
    r = evaluate([(0, 5, 10, 0, 0.9)], [(0, 0, 10, 0)], [0.5])
    assert r.ap[0, 0] == 1.0
    r = evaluate([(0, 0, 5, 0, 0.9)], [(0, 0, 10, 0)], [0.5])
    assert r.ap[0, 0] == 1.0


def test_equal_scores_lower_video_then_earlier_row_first():
    gts = [(0, 0, 10, 0), (5, 0, 10, 1)]
    # Same score: the video-0 TP comes before the video-3 FP (AP 1); move the TP to
    # video 5 and the FP first (AP 1/2).
    r = evaluate([(3, 0, 10, 0, 0.5), (0, 0, 10, 0, 0.5)], gts, [0.5])
    assert r.ap[0, 0] == 1.0
    r = evaluate([(3, 0, 10, 1, 0.5), (5, 0, 10, 1, 0.5)], gts, [0.5])
    assert r.ap[1, 0] == 0.5
    # Same video, same score: row order. FP row first -> 1/2; TP row first -> 1.
    r = evaluate([(0, 0, 4, 0, 0.5), (0, 0, 10, 0, 0.5)], gts, [0.5])
    assert r.ap[0, 0] == 0.5
    r = evaluate([(0, 0, 10, 0, 0.5), (0, 0, 4, 0, 0.5)], gts, [0.5])
    assert r.ap[0, 0] == 1.0


def test_no_ground_truth_gives_nan_and_no_prediction_gives_zero():
    r = evaluate_detections(Instances([0], [[0, 1]], [0], [0.5]), Instances([], [], []))
    assert r.labels.size == 0 and np.isnan(r.average_mAP)
    r = evaluate_detections(Instances([], [], [], []), Instances([0], [[0, 1]], [3]))
    assert r.ap.tolist() == [[0.0] * 5] and r.average_mAP == 0.0


@pytest.mark.parametrize(
    "pred, gt, thresholds, message",
    [
        (dict(scores=[np.nan]), {}, [0.5], r"pred\.scores: every score must be finite"),
        (dict(segments=[[0.0, np.inf]]), {}, [0.5], r"pred\.segments: every start and end"),
        (dict(labels=[0.5]), {}, [0.5], r"pred\.labels: expected 1 integers, got float64"),
        (dict(scores=[0.1, 0.2]), {}, [0.5], r"pred\.scores: expected shape \(1,\), got \(2,\)"),
        (dict(scores=None), {}, [0.5], r"pred\.scores: expected 1 scores, got None"),
        ({}, dict(scores=[0.5]), [0.5], r"gt\.scores: ground truth has no scores"),
        ({}, dict(video=[0.0]), [0.5], r"gt\.video: expected a 1-D integer array, got float64"),
        ({}, dict(segments=[[0.0, 1.0, 2.0]]), [0.5], r"gt\.segments: expected shape \(1, 2\)"),
        ({}, {}, [0.0], r"\(0, 1\]"),
        ({}, {}, [], r"\(0, 1\]"),
    ],
)
def test_bad_input_is_rejected(pred, gt, thresholds, message):
    good_pred = Instances(video=[0], segments=[[0.0, 1.0]], labels=[0], scores=[0.5])
    good_gt = Instances(video=[0], segments=[[0.0, 1.0]], labels=[0])
    assert evaluate_detections(good_pred, good_gt, [0.5]).average_mAP == 1.0
    with pytest.raises(ValueError, match=message):
        evaluate_detections(replace(good_pred, **pred), replace(good_gt, **gt), thresholds)


def test_rows_must_be_instances():
    gt = Instances(video=[0], segments=[[0.0, 1.0]], labels=[0])
    with pytest.raises(TypeError, match="pred: expected Instances, got tuple"):
        match_predictions(([0], [[0.0, 1.0]], [0], [0.5]), gt)


def test_video_key_is_stable_and_63_bit():
    key = video_key("video_test_0000004")
    assert 0 <= key < 2**63
    # The same value in a fresh interpreter (no per-process hash seed).
    code = "from salad_lightning.metrics.functional import video_key; print(video_key('video_test_0000004'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == key


# --- generated cases against the transcription -------------------------------------


def random_case(
    rng: np.random.Generator, ties: bool = False, scale: float = 1.0, inverted: bool = False
):
    n_videos, n_classes = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    n_gt, n_pred = int(rng.integers(0, 12)), int(rng.integers(0, 40))
    gv = rng.integers(0, n_videos, n_gt)
    gl = rng.integers(0, n_classes, n_gt)
    start = rng.uniform(0, 50, n_gt)
    gs = np.stack([start, start + rng.uniform(0.5, 15, n_gt)], axis=1)
    if n_gt and rng.random() < 0.3:
        gs[0, 1] = gs[0, 0]  # zero length
    if n_gt > 1 and rng.random() < 0.3:  # an exact duplicate
        gs[1], gv[1], gl[1] = gs[0], gv[0], gl[0]
    if n_gt:  # most predictions are jittered copies of a gt
        base = rng.integers(0, n_gt, n_pred)
        ps = gs[base] + rng.normal(0, 2, (n_pred, 2))
        pv = np.where(rng.random(n_pred) < 0.7, gv[base], rng.integers(0, n_videos + 1, n_pred))
        pl = np.where(rng.random(n_pred) < 0.8, gl[base], rng.integers(0, n_classes + 1, n_pred))
    else:
        ps = rng.uniform(0, 50, (n_pred, 2))
        pv = rng.integers(0, n_videos, n_pred)
        pl = rng.integers(0, n_classes, n_pred)
    ps.sort(axis=1)
    if n_pred and rng.random() < 0.3:
        ps[0, 1] = ps[0, 0]
    if inverted and n_gt and n_pred:  # segments that end before they start
        gs[-1] = gs[-1, ::-1]
        ps[-1] = ps[-1, ::-1]
        if rng.random() < 0.5:  # a prediction whose length is minus the gt's: 0/0
            ps[0] = [ps[0, 0], ps[0, 0] + gs[-1, 0] - gs[-1, 1]]
            pv[0], pl[0] = gv[-1], gl[-1]
    scores = rng.integers(0, 4, n_pred) / 4 if ties else rng.random(n_pred)
    return pv, ps * scale, scores, pl, gv, gs * scale, gl


THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.95]


def assert_matches_reference(case, thresholds=THRESHOLDS, label=""):
    result = evaluate_detections(*as_instances(*case), tiou_thresholds=thresholds)
    classes, ap, mean_ap, avg = reference_evaluate(*case, thresholds)
    assert result.labels.tolist() == classes, label
    if classes:
        np.testing.assert_allclose(result.ap, ap, rtol=0, atol=1e-9, err_msg=label)
        np.testing.assert_allclose(result.mAP, mean_ap, rtol=0, atol=1e-9, err_msg=label)
        assert result.average_mAP == pytest.approx(avg, abs=1e-9), label


def test_generated_cases_with_distinct_scores_match_the_reference():
    rng = np.random.default_rng(2021)
    for i in range(250):
        assert_matches_reference(random_case(rng), label=f"case {i}")


def test_generated_cases_with_equal_scores_match_the_reference():
    # The transcription breaks ties by the same documented rule.
    rng = np.random.default_rng(7)
    for i in range(100):
        assert_matches_reference(random_case(rng, ties=True), label=f"case {i}")


def test_generated_cases_with_inverted_segments_match_the_reference():
    rng = np.random.default_rng(12)
    for i in range(150):
        assert_matches_reference(random_case(rng, inverted=True), label=f"case {i}")


def test_huge_coordinates_use_the_exact_fallback_search():
    # Starts spread over 1e15: the float search key would lose precision, so the
    # complex key takes over; results still match the transcription.
    rng = np.random.default_rng(3)
    for i in range(20):
        case = random_case(rng, scale=1e13)
        assert_matches_reference(case, label=f"case {i}")


def test_result_does_not_depend_on_how_rows_are_split_or_ordered():
    # Shuffle whole videos (keeping each video's rows in order): the rule for ties
    # (score, video key, row within video) gives the same answer.
    rng = np.random.default_rng(11)
    for i in range(30):
        pv, ps, scores, pl, gv, gs, gl = random_case(rng, ties=True)
        perm = np.argsort(rng.permutation(pv.max() + 1 if len(pv) else 1)[pv], kind="stable")
        a = evaluate_detections(*as_instances(pv, ps, scores, pl, gv, gs, gl))
        b = evaluate_detections(
            *as_instances(pv[perm], ps[perm], scores[perm], pl[perm], gv, gs, gl)
        )
        np.testing.assert_array_equal(a.ap, b.ap, err_msg=f"case {i}")
