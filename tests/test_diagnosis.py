"""DETAD's diagnosis: hand-worked cases, the loop transcription, and the evaluator."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from _literal_diagnosis import literal_diagnose
from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.metrics.diagnosis import (
    CHARACTERISTICS,
    ERROR_TYPES,
    PRESETS,
    Bins,
    diagnose,
)
from salad_lightning.metrics.evaluation import evaluate_videos
from salad_lightning.metrics.functional import Instances, evaluate_detections, match_detections
from salad_lightning.reporting import diagnose_evaluation, write_diagnosis

THUMOS = PRESETS["thumos14"]
ANET = PRESETS["activitynet"]


def run(preds, gts, duration, **kwargs):
    """diagnose() on rows (video, start, end, label[, score])."""
    preds = preds or [(0, 0.0, 1.0, 0, 0.0)][:0]
    pred = Instances(
        video=np.array([p[0] for p in preds], dtype=np.int64),
        segments=np.array([p[1:3] for p in preds], dtype=float).reshape(-1, 2),
        labels=np.array([p[3] for p in preds], dtype=np.int64),
        scores=np.array([p[4] for p in preds], dtype=float),
    )
    gt = Instances(
        video=np.array([g[0] for g in gts], dtype=np.int64),
        segments=np.array([g[1:3] for g in gts], dtype=float),
        labels=np.array([g[3] for g in gts], dtype=np.int64),
    )
    return diagnose(pred, gt, np.asarray(duration, dtype=float), **kwargs)


# --- hand-worked cases ------------------------------------------------------------


def test_one_prediction_of_each_type_by_hand():
    # Video 0 (100 s): r0 class 0 [10, 20], r1 class 1 [40, 44]. Video 1 (50 s): none.
    gts = [(0, 10, 20, 0), (0, 40, 44, 1)]
    preds = [
        (0, 10, 20, 0, 0.9),  # p0: tIoU 1 with r0 -> true positive
        (0, 11, 20, 0, 0.8),  # p1: r0 (taken) at 9/10 -> double detection
        (0, 40, 45, 0, 0.7),  # p2: r1 at 4/5, class 1 -> wrong label
        (0, 10, 40, 0, 0.6),  # p3: r0 at 10/30 -> localization
        (0, 15, 25, 1, 0.95),  # p4: r0 at 5/15, class 0 -> confusion
        (0, 70, 80, 1, 0.85),  # p5: no overlap -> background
        (1, 0, 10, 0, 0.55),  # p6: video without ground truth -> background
        (0, 40, 44, 1, 0.5),  # p7: tIoU 1 with r1 -> true positive
    ]
    d = run(preds, gts, [100, 50], **THUMOS)
    np.testing.assert_array_equal(d.prediction_type, [[0, 1, 2, 3, 4, 5, 5, 0]])
    out = d.to_json()
    # N = 2 ground truths / 2 classes = 1. Class 0: p0 first, precision 1 -> AP_N 1.
    # Class 1: p4, p5 false, p7 true: precision 1 / (1 + 2) -> AP_N 1/3. Mean 2/3.
    assert out["average_mAP_N"] == pytest.approx(2 / 3)
    # G_j = 1, so "kG" holds each class's k-th prediction. Class 0 ranks p0 p1 p2 p3 p6,
    # class 1 ranks p4 p5 p7.
    profile = out["false_positive_profile"]
    assert profile["1G"] == pytest.approx(
        dict.fromkeys(ERROR_TYPES, 0) | {"true_positive": 0.5, "confusion": 0.5}
    )
    assert profile["2G"] == pytest.approx(
        dict.fromkeys(ERROR_TYPES, 0) | {"double_detection": 0.5, "background": 0.5}
    )
    assert profile["3G"] == pytest.approx(
        dict.fromkeys(ERROR_TYPES, 0) | {"wrong_label": 0.5, "true_positive": 0.5}
    )
    assert profile["4G"] == pytest.approx(dict.fromkeys(ERROR_TYPES, 0) | {"localization": 1.0})
    assert profile["5G"] == pytest.approx(dict.fromkeys(ERROR_TYPES, 0) | {"background": 1.0})
    assert all(v is None for g in range(6, 11) for v in profile[f"{g}G"].values())
    # Removing p4 (confusion) or p5 (background) leaves one false positive before p7 in
    # class 1: AP_N 1/2, mean 3/4, gain 3/4 - 2/3 = 1/12. The other errors rank after
    # the class's last true positive: no gain.
    assert out["removed_error_gain"] == pytest.approx(
        {"double_detection": 0, "wrong_label": 0, "localization": 0}
        | {"confusion": 1 / 12, "background": 1 / 12}
    )
    # Length: r1 (4 s) in S, r0 (10 s) in M. Coverage: r1 4/100 = 0.04, the upper edge
    # of S (bins closed on the right); r0 0.1 in XL. Both in a video of 2 instances: S.
    none5 = dict.fromkeys(["XS", "S", "M", "L", "XL"])
    assert out["sensitivity"]["length"] == pytest.approx(none5 | {"S": 1 / 3, "M": 1.0})
    assert out["sensitivity"]["coverage"] == pytest.approx(none5 | {"S": 1 / 3, "XL": 1.0})
    none4 = dict.fromkeys(["XS", "S", "M", "L"])
    assert out["sensitivity"]["num_instances"] == pytest.approx(none4 | {"S": 2 / 3})
    # Both ground truths are found with precision above 0.05.
    assert out["false_negative_rate"]["length"] == none5 | {"S": 0.0, "M": 0.0}
    assert out["false_negative_rate"]["num_instances"] == none4 | {"S": 0.0}
    assert {k: list(v) for k, v in d.ground_truths_per_bin.items()} == {
        "length": [0, 1, 1, 0, 0],
        "coverage": [0, 1, 0, 0, 1],
        "num_instances": [0, 2, 0, 0],
    }


def test_equal_scores_rank_the_lower_video_first():
    # One class, r0 in video 1. pa (video 1) is a true positive, pb (video 0, no
    # ground truth) a background error; equal scores put pb first.
    gts = [(1, 0, 10, 0)]
    preds = [(1, 0, 10, 0, 0.5), (0, 0, 10, 0, 0.5)]
    d = run(preds, gts, [100, 100], limit_factor=1, **THUMOS)
    # All predictions: pb false, pa true -> precision 1 / (1 + 1), AP_N 1/2.
    assert d.average_mAP_N == pytest.approx(0.5)
    # Top 1 * G = 1 prediction: pb only.
    np.testing.assert_array_equal(d.prediction_type, [[-1, 5]])
    assert d.to_json()["false_positive_profile"]["1G"]["background"] == 1.0
    assert d.average_mAP_N_top == 0.0


def test_equal_tious_match_the_later_ground_truth():
    # ga [0, 5] (5 s: length S), gb [4, 12] (8 s: M), one class. p [0, 10] has tIoU
    # 5/10 = 6/12 = 0.5 with both; the official order tries the later row, gb.
    gts = [(0, 0, 5, 0), (0, 4, 12, 0)]
    d = run([(0, 0, 10, 0, 0.9)], gts, [100], **THUMOS)
    out = d.to_json()
    # N = 2. All: recall 1/2 at precision 1 -> AP_N 1/2.
    assert out["average_mAP_N"] == pytest.approx(0.5)
    # Bin S: ga alone, and p (matched outside the bin) is left out -> AP_N 0.
    # Bin M: gb, p a true positive: recall 1, precision 2 / (2 + 0) -> 1.
    assert out["sensitivity"]["length"]["S"] == 0.0
    assert out["sensitivity"]["length"]["M"] == pytest.approx(1.0)
    assert out["false_negative_rate"]["length"]["S"] == 1.0
    assert out["false_negative_rate"]["length"]["M"] == 0.0


@pytest.mark.parametrize("first_label, expected", [(1, 4), (0, 3)])
def test_equal_tious_type_by_the_first_ground_truth(first_label, expected):
    # q (class 0, [5, 25]) has tIoU 5/25 = 0.2 with both [0, 10] and [20, 30]. The
    # first row decides: another class -> confusion (4), the same -> localization (3).
    gts = [(0, 0, 10, first_label), (0, 20, 30, 1 - first_label)]
    d = run([(0, 5, 25, 0, 0.9)], gts, [100], **THUMOS)
    assert d.prediction_type.tolist() == [[expected]]


@pytest.mark.parametrize("false_positives, fn_rate", [(19, 1.0), (18, 0.0)])
def test_false_negative_needs_precision_above_five_percent(false_positives, fn_rate):
    # N = 1. The true positive ranks after k false positives: precision 1 / (1 + k),
    # 1/20 = 0.05 is not above the floor, 1/19 is.
    preds = [(1, 0, 10, 0, 0.9)] * false_positives + [(0, 0, 10, 0, 0.1)]
    d = run(preds, [(0, 0, 10, 0)], [100, 100], **THUMOS)
    assert d.false_negative_rate["length"][2] == fn_rate  # 10 s: M
    # Sensitivity keeps the match: recall 1 at precision 1 / (1 + k).
    assert d.sensitivity["length"][2] == pytest.approx(1 / (1 + false_positives))


def test_ground_truths_that_end_before_they_start_are_dropped_like_zero_length_ones():
    # Video 0 (100 s): r0 [10, 20] kept, r1 [30, 25] (length -5) dropped; the video still
    # counts 2 instances. p1 [40, 30] ends before it starts: tIoU 0 with r0, background.
    gts = [(0, 10, 20, 0), (0, 30, 25, 0)]
    preds = [(0, 10, 20, 0, 0.9), (0, 40, 30, 0, 0.5)]
    d = run(preds, gts, [100], **THUMOS)
    assert (d.num_ground_truths, d.num_dropped_ground_truths) == (1, 1)
    assert d.prediction_type.tolist() == [[0, 5]]


def test_zero_length_and_overlong_ground_truths_are_dropped():
    # Video 0 (100 s): r0 [10, 20] kept, r1 [5, 5] zero length, r2 [0, 120] longer than
    # the video (coverage 1.2). The video still counts 3 instances (as DETAD's data
    # files do): S.
    gts = [(0, 10, 20, 0), (0, 5, 5, 0), (0, 0, 120, 0)]
    preds = [(0, 0, 120, 0, 0.9), (0, 10, 20, 0, 0.8), (0, 5, 5, 0, 0.1)]
    d = run(preds, gts, [100], **(ANET | {"tiou_thresholds": (0.5,)}))
    assert (d.num_ground_truths, d.num_dropped_ground_truths) == (1, 2)
    # p0 meets r0 at 10/120 < 0.1, p2 has length 0: background. AP_N: 1 / (1 + 1).
    assert d.prediction_type.tolist() == [[5, 0, 5]]
    assert d.average_mAP_N == pytest.approx(0.5)
    assert d.to_json()["sensitivity"]["num_instances"] == {
        "XS": None,
        "S": pytest.approx(0.5),
        "M": None,
        "L": None,
    }


def test_an_evaluation_left_with_nothing_after_detads_drops_gives_none():
    """`diagnose_evaluation` (the run's diagnosis): ground truth only of zero length or
    longer than its video is nothing to diagnose, not an error; one kept instance is."""

    def video(vid, duration, segments):
        return VideoGroundTruth(
            vid, np.array(segments, float), np.zeros(len(segments), int), duration
        )

    overlong = [video("a", 100.0, [[0, 120]]), video("b", 50.0, [[5, 5]])]
    assert diagnose_evaluation(evaluate_videos([], overlong, [0.5]), **THUMOS) is None
    evaluation = evaluate_videos([], [*overlong, video("c", 100.0, [[10, 20]])], [0.5])
    d = diagnose_evaluation(evaluation, **THUMOS)
    assert (d.num_ground_truths, d.num_dropped_ground_truths) == (1, 2)
    # a video with ground truth but no duration is named
    with pytest.raises(ValueError, match=r"duration: none .* for 1 videos .*\['d'\]"):
        diagnose_evaluation(evaluate_videos([], [video("d", float("nan"), [[1, 2]])], [0.5]))


def test_the_evaluations_matching_is_the_diagnosis_matching():
    """Given the evaluation's matching (no ground truth dropped, the thresholds matched),
    the diagnosis reads it instead of matching again: the same result either way; with a
    matching that says otherwise, the result follows the matching given (so it is read)."""
    rng = np.random.default_rng(5)
    truths, dets = [], []
    for v in range(6):
        start = rng.uniform(0, 80, 4)
        segs = np.stack([start, start + rng.uniform(2, 15, 4)], axis=1)
        labels = rng.integers(0, 3, 4)
        truths.append(VideoGroundTruth(f"v{v}", segs, labels, 100.0))
        noisy = np.sort(segs[rng.integers(0, 4, 10)] + rng.normal(0, 2, (10, 2)), axis=1)
        dets.append(VideoDetections(f"v{v}", noisy, rng.random(10), rng.integers(0, 3, 10)))
    evaluation = evaluate_videos(dets, truths, ANET["tiou_thresholds"])
    e = evaluation
    with_matching = diagnose(e.pred, e.gt, e.durations, matching=e.matching, **ANET)
    without = diagnose(e.pred, e.gt, e.durations, **ANET)
    assert with_matching.to_json() == without.to_json()
    assert 0 < with_matching.average_mAP_N < 1
    np.testing.assert_array_equal(with_matching.prediction_type, without.prediction_type)
    # a matching with no true positive at all: read as given
    none = e.matching._replace(tp=np.zeros_like(e.matching.tp), gt=np.full_like(e.matching.gt, -1))
    assert diagnose(e.pred, e.gt, e.durations, matching=none, **ANET).average_mAP_N == 0.0
    # a matching without the diagnosis' thresholds is not used: the rows are matched here
    only = match_detections(e.pred, e.gt, [0.3])
    assert diagnose(e.pred, e.gt, e.durations, matching=only, **ANET).to_json() == without.to_json()


def test_class_without_predictions_scores_zero():
    gts = [(0, 0, 10, 0), (0, 20, 30, 1)]
    d = run([(0, 0, 10, 0, 0.9)], gts, [100], **THUMOS)
    assert d.average_mAP_N == pytest.approx(0.5)  # (1 + 0) / 2
    assert d.sensitivity["length"][2] == pytest.approx(0.5)  # both 10 s long: M


def test_no_prediction_at_all():
    d = run([], [(0, 0, 10, 0)], [100], **THUMOS)
    assert d.average_mAP_N == 0.0
    assert all(
        v is None for g in d.to_json()["false_positive_profile"].values() for v in g.values()
    )
    assert d.false_negative_rate["length"][2] == 1.0


def test_json_schema_is_exact():
    d = run([(0, 0, 10, 0, 0.9)], [(0, 0, 10, 0)], [100])
    out = json.loads(json.dumps(d.to_json(), allow_nan=False))
    assert list(out) == [
        "tiou_thresholds",
        "average_mAP_N",
        "false_positive_profile",
        "removed_error_gain",
        "sensitivity",
        "false_negative_rate",
    ]
    assert out["tiou_thresholds"] == list(ANET["tiou_thresholds"])
    assert list(out["false_positive_profile"]) == [f"{g}G" for g in range(1, 11)]
    assert all(list(v) == list(ERROR_TYPES) for v in out["false_positive_profile"].values())
    assert list(out["removed_error_gain"]) == list(ERROR_TYPES[1:])
    for key in ("sensitivity", "false_negative_rate"):
        assert list(out[key]) == list(CHARACTERISTICS)
        assert list(out[key]["length"]) == ["XS", "S", "M", "L", "XL"]
        assert list(out[key]["num_instances"]) == ["XS", "S", "M", "L"]


def test_write_diagnosis(tmp_path):
    d = run([(0, 0, 10, 0, 0.9), (0, 50, 60, 0, 0.5)], [(0, 0, 10, 0)], [100])
    paths = write_diagnosis(d, tmp_path / "diag")
    assert json.loads(paths["diagnosis"].read_text()) == json.loads(json.dumps(d.to_json()))
    for name in ("false_positive_analysis", "sensitivity_analysis", "false_negative_analysis"):
        assert paths[name] == tmp_path / "diag" / f"{name}.png"
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[name].stat().st_size > 10_000


@pytest.mark.parametrize(
    "pred, gt, change, message",
    [
        ({}, {"video": [3]}, {}, r"gt\.video: expected indices into video_duration \(0..1\), found 3..3"),
        ({"video": [-1]}, {}, {}, r"pred\.video: expected indices .* found -1..-1"),
        ({}, {}, {"video_duration": [0.0, 10.0]}, "positive duration .* found 0.0 for video 0"),
        ({"scores": [np.nan]}, {}, {}, r"pred\.scores: every score must be finite"),
        ({}, {"segments": [[5.0, np.inf]]}, {}, r"gt\.segments: every start and end must be finite"),
        ({}, {}, {"tiou_thresholds": (0.0,)}, r"\(0, 1\]"),
        ({}, {}, {"limit_factor": 0}, "limit_factor: expected a positive integer, got 0"),
        ({}, {"labels": [0.5]}, {}, r"gt\.labels: expected 1 integers"),
    ],
)  # fmt: skip
def test_bad_input_is_named(pred, gt, change, message):
    good_pred = Instances(video=[0], segments=[[0.0, 1.0]], labels=[0], scores=[0.5])
    good_gt = Instances(video=[0], segments=[[0.0, 1.0]], labels=[0])
    args = {"video_duration": [10.0, 10.0]}
    assert diagnose(good_pred, good_gt, **args).average_mAP_N == 1.0
    with pytest.raises(ValueError, match=message):
        diagnose(replace(good_pred, **pred), replace(good_gt, **gt), **(args | change))


def test_bins_are_checked_and_closed_on_the_right():
    with pytest.raises(ValueError, match="increasing edges, one more than the names"):
        Bins((0, 1), ("a", "b"))
    bins = Bins([0, 1, 2], ["a", "b"])
    assert bins.edges == (0.0, 1.0, 2.0)
    np.testing.assert_array_equal(
        bins.assign(np.array([-1, 0, 0.5, 1, 1.5, 2, 3])), [-1, 0, 0, 0, 1, 1, -1]
    )


def test_import_needs_neither_torch_nor_matplotlib():
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import numpy as np; from salad_lightning.metrics.diagnosis import diagnose; "
        "from salad_lightning.metrics.functional import Instances; "
        "d = diagnose(Instances([0], [[0., 1.]], [0], [1.]), Instances([0], [[0., 1.]], [0]), [5.]); "
        "print(d.average_mAP_N, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1.0", "False"]


# --- generated cases ---------------------------------------------------------------


def random_case(rng: np.random.Generator, n_videos: int, n_classes: int, n_gt: int, n_pred: int):
    """Integer segments and scores in tenths, so that tIoUs and scores tie often; some
    zero-length and overlong ground truths, a video without any, an unknown class."""
    duration = rng.integers(12, 60, n_videos).astype(float)
    gv = rng.integers(0, n_videos - 1, n_gt)
    gl = rng.integers(0, n_classes, n_gt)
    start = rng.integers(0, 30, n_gt)
    gs = np.stack([start, start + rng.integers(0, 16, n_gt)], axis=1).astype(float)
    base = rng.integers(0, n_gt, n_pred)
    near = rng.random(n_pred) < 0.7
    pv = np.where(near, gv[base], rng.integers(0, n_videos, n_pred))
    jitter = gs[base] + rng.integers(-3, 4, (n_pred, 2))
    ps = np.sort(np.where(near[:, None], jitter, rng.integers(0, 50, (n_pred, 2))), axis=1)
    pl = np.where(rng.random(n_pred) < 0.7, gl[base], rng.integers(0, n_classes + 1, n_pred))
    scores = rng.integers(0, 10, n_pred) / 10
    return [pv, ps, scores, pl, gv, gs, gl, duration]


def as_literal_bins(settings) -> dict:
    return {
        name: (list(settings[key].edges), list(settings[key].names))
        for name, key in zip(CHARACTERISTICS, ["length_bins", "coverage_bins", "instance_bins"])
    }


def assert_same(mine, ref, path="") -> None:
    if isinstance(ref, dict):
        assert list(mine) == list(ref), path
        for key in ref:
            assert_same(mine[key], ref[key], f"{path}/{key}")
    elif isinstance(ref, list):
        assert len(mine) == len(ref), path
        for i, (a, b) in enumerate(zip(mine, ref)):
            assert_same(a, b, f"{path}[{i}]")
    elif ref is None:
        assert mine is None, f"{path}: {mine} vs None"
    else:
        assert mine is not None and math.isclose(mine, ref, rel_tol=1e-12, abs_tol=1e-12), (
            f"{path}: {mine} vs {ref}"
        )


SMALL_BINS = {
    "length_bins": Bins((0, 4, 8, math.inf), ("S", "M", "L")),
    "coverage_bins": Bins((0, 0.1, 0.3, 1), ("S", "M", "L")),
    "instance_bins": Bins((-1, 2, 5, math.inf), ("S", "M", "L")),
}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "settings, limit_factor",
    [(THUMOS, 10), (ANET, 10), (SMALL_BINS | {"tiou_thresholds": (0.3, 0.5, 0.7)}, 2)],
)
def test_every_number_matches_the_transcription(seed, settings, limit_factor):
    rng = np.random.default_rng(seed)
    sizes = [(4, 3, 20, 150), (6, 2, 30, 300), (3, 4, 12, 80)][seed % 3]
    case = random_case(rng, *sizes)
    pv, ps, scores, pl, gv, gs, gl, duration = case
    d = diagnose(
        Instances(pv, ps, pl, scores),
        Instances(gv, gs, gl),
        duration,
        **settings,
        limit_factor=limit_factor,
    )
    ref = literal_diagnose(
        *case,
        settings["tiou_thresholds"],
        as_literal_bins(settings),
        limit_factor=limit_factor,
    )
    assert d.prediction_type.tolist() == ref.pop("prediction_type")
    assert d.average_mAP_N_top == pytest.approx(ref.pop("average_mAP_N_top"), rel=1e-12, abs=1e-12)
    assert_same(d.to_json(), ref)


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_evaluator_when_every_class_has_n_instances(seed):
    # With G_j = N for every class, R * N / (R * N + FP) = TP / (TP + FP): AP_N is the
    # official AP, computed by the project's evaluator.
    rng = np.random.default_rng(100 + seed)
    pv, ps, scores, pl, gv, gs, gl, duration = random_case(rng, 5, 3, 18, 200)
    gl = np.arange(18) % 3
    gs[:, 1] = np.minimum(np.maximum(gs[:, 1], gs[:, 0] + 1), duration[gv])
    gs[:, 0] = np.minimum(gs[:, 0], gs[:, 1] - 1)
    thresholds = [0.3, 0.5, 0.7]
    gt = Instances(gv, gs, gl)
    d = diagnose(Instances(pv, ps, pl, scores), gt, duration, tiou_thresholds=thresholds)
    assert d.num_dropped_ground_truths == 0
    known = pl < 3
    pred = Instances(pv[known], ps[known], pl[known], scores[known])
    reference = evaluate_detections(pred, gt, thresholds)
    assert d.average_mAP_N == pytest.approx(reference.average_mAP, rel=1e-12)
