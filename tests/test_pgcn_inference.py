"""pgcn/inference.py on a hand-worked video: scores, refinement, top-k, NMS order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from salad_lightning.pgcn.inference import (
    class_scores,
    detections,
    refine_segments,
    score_proposals,
)
from salad_lightning.pgcn.targets import RegressionStats

LN2 = math.log(2.0)
# two proposals, K = 2
SEGMENTS = np.array([[10.0, 20.0], [12.0, 22.0]])
# p0: softmax(0, ln 2, 0) = (1/4, 2/4, 1/4) -> (0.5, 0.25) x exp(0, ln 2) = (0.5, 0.5)
# p1: softmax(ln 2, 0, 0) = (2/4, 1/4, 1/4) -> (0.25, 0.25) x exp(ln 4, 0) = (1.0, 0.25)
ACTIVITY = np.array([[0.0, LN2, 0.0], [LN2, 0.0, 0.0]])
COMPLETENESS = np.array([[0.0, LN2], [2 * LN2, 0.0]])
SCORES = np.array([[0.5, 0.5], [1.0, 0.25]])
# statistics: shift mean 0.1, std 0.5; log ratio mean 0, std 1
STATS = RegressionStats(mean=np.array([0.1, 0.0]), std=np.array([0.5, 1.0]))
# p0 class 0: (3.8, 0) -> shift 3.8 x 0.5 + 0.1 = 2: centre 15 + 2 x 10 = 35, length 10: [30, 40]
# p0 class 1: (-0.2, ln 2) -> shift 0: centre 15, length 10 x 2 = 20: [5, 25]
# p1 both classes: (-0.2, 0) -> unchanged: [12, 22]
REGRESSION = np.array([[[3.8, 0.0], [-0.2, LN2]], [[-0.2, 0.0], [-0.2, 0.0]]])
REFINED = np.array([[[30.0, 40.0], [5.0, 25.0]], [[12.0, 22.0], [12.0, 22.0]]])


def test_scores_and_refinement_by_hand():
    np.testing.assert_allclose(class_scores(ACTIVITY, COMPLETENESS), SCORES, rtol=1e-12)
    np.testing.assert_allclose(refine_segments(SEGMENTS, REGRESSION, STATS), REFINED, rtol=1e-12)
    # cut to the video (P-GCN clips to [0, 1] of its length): [30, 40] -> [30, 35]
    clipped = refine_segments(SEGMENTS, REGRESSION, STATS, clip=(0.0, 35.0))
    np.testing.assert_allclose(clipped[0, 0], [30.0, 35.0])


def test_top_k_keeps_the_best_pairs():
    # 4 pairs: p1c0 1.0, p0c0 0.5, p0c1 0.5, p1c1 0.25 -> the 3 best drop p1c1
    scored = score_proposals(SEGMENTS, ACTIVITY, COMPLETENESS, REGRESSION, STATS, top_k=3)
    assert scored.keep.tolist() == [[True, True], [True, False]]
    # top 1 of the two tied 0.5 pairs and the 1.0: ties go to the lower position (p0c0)
    scored = score_proposals(SEGMENTS, ACTIVITY, COMPLETENESS, REGRESSION, STATS, top_k=2)
    assert scored.keep.tolist() == [[True, False], [True, False]]


def test_nms_on_the_unrefined_proposals_as_p_gcn():
    scored = score_proposals(SEGMENTS, ACTIVITY, COMPLETENESS, REGRESSION, STATS, top_k=3)
    # class 0: p1 (1.0) picked; p0's proposal [10, 20] has tIoU 8 / 12 >= 0.2 with p1's
    # [12, 22]: removed, although its refined segment [30, 40] is far away.
    # class 1: p0 alone, kept with its refined segment [5, 25].
    seg, score, label = detections(scored)
    np.testing.assert_allclose(seg, [[12.0, 22.0], [5.0, 25.0]])
    np.testing.assert_allclose(score, [1.0, 0.5])
    assert label.tolist() == [0, 1]
    # on the refined segments [30, 40] and [12, 22] are disjoint: both kept; p0c0 and
    # p0c1 tie at 0.5, the lower position (p0c0) first
    seg, score, label = detections(scored, nms_on="refined")
    np.testing.assert_allclose(seg, [[12.0, 22.0], [30.0, 40.0], [5.0, 25.0]])
    np.testing.assert_allclose(score, [1.0, 0.5, 0.5])
    assert label.tolist() == [0, 0, 1]


def test_large_logits_stay_finite_and_shapes_are_checked():
    act = np.array([[1000.0, 1000.0, -1000.0]])
    scores = class_scores(act, np.zeros((1, 2)))
    np.testing.assert_allclose(scores, [[0.5, 0.0]])
    with pytest.raises(ValueError, match=r"\(P, K\+1\) and \(P, K\)"):
        class_scores(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="nms_on"):
        detections(score_proposals(SEGMENTS, ACTIVITY, COMPLETENESS, REGRESSION, STATS), nms_on="x")
