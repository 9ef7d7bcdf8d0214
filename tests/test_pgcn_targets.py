"""pgcn/targets.py: labelling and sampling against P-GCN's loops (tests/_literal_pgcn.py),
regression targets against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _literal_pgcn import LiteralVideo, literal_regression_stats, literal_video_samples
from salad_lightning.pgcn.graph import neighbour_slots, sample_neighbourhoods
from salad_lightning.pgcn.targets import (
    BACKGROUND,
    FOREGROUND,
    INCOMPLETE,
    RegressionStats,
    best_ground_truth,
    label_proposals,
    regression_targets,
    sample_centres,
    sample_targets,
    samples_per_kind,
)


def make_video(rng: np.random.Generator, *, incomplete=True, background=True):
    """A video of length 100 with 1-3 ground truths and proposals of every kind around
    them (on a quarter grid, so tIoUs hit the thresholds' neighbourhoods), some past the
    video's end, some of zero length."""
    length = 100.0
    n_gt = int(rng.integers(1, 4))
    gts, labels = [], []
    for _ in range(n_gt):
        s = 0.25 * rng.integers(0, 320)
        gts.append((s, s + 0.25 * rng.integers(8, 80)))
        labels.append(int(rng.integers(0, 5)))
    gts.append((99.5, 104.0))  # overflows the video: cut at 100
    labels.append(1)
    props = []
    for _ in range(int(rng.integers(5, 40))):
        s, e = gts[int(rng.integers(len(gts)))]
        u = rng.random()
        if u < 0.3:  # near a ground truth: foreground or unused
            props.append((s + 0.25 * rng.integers(-4, 5), e + 0.25 * rng.integers(-4, 5)))
        elif u < 0.55 and incomplete:  # a small part of one: incomplete
            props.append((s + 0.25 * rng.integers(0, 4), s + 0.25 * rng.integers(4, 10)))
        elif background:  # far away: background (or too short to be)
            t = 0.25 * rng.integers(0, 400)
            props.append((t, t + 0.25 * rng.integers(0, 40)))
        else:
            props.append((s + 0.25 * rng.integers(-4, 5), e + 0.25 * rng.integers(-4, 5)))
    props.append((98.0, 103.0))  # past the end
    props.append((101.0, 102.0))  # starts after the end: left out
    props.append((5.0, 5.0))  # zero length: left out
    seg = np.sort(np.array(props), axis=1)
    return seg, np.array(gts), np.array(labels), length


def _literal_pool_rows(video: LiteralVideo):
    return [
        (p.start, p.end, kind, p.label, *p.regression_targets())
        for kind, part in enumerate(video.pools())
        for p in part
    ]


@pytest.mark.parametrize("seed", range(8))
def test_labelling_matches_the_transcription(seed):
    rng = np.random.default_rng(seed)
    seg, gts, labels, length = make_video(rng)
    pool = label_proposals(seg, gts, labels, length)
    expected = _literal_pool_rows(LiteralVideo(seg, gts, labels, length))
    ours = np.column_stack([pool.segments, pool.kinds, pool.labels, pool.reg_targets])
    np.testing.assert_allclose(ours, np.array(expected).reshape(-1, 6), rtol=0, atol=1e-12)
    counts = [sum(1 for r in expected if r[2] == k) for k in range(3)]
    assert list(pool.counts) == counts
    # the ground truths close the foreground part, as P-GCN's get_fg appends them
    n_gt = int(pool.is_ground_truth.sum())
    assert pool.is_ground_truth[counts[0] - n_gt : counts[0]].all()
    assert (pool.source[pool.is_ground_truth] >= len(seg)).all()


@pytest.mark.parametrize(
    "seed,incomplete,background",
    [(0, True, True), (1, True, True), (2, False, True), (3, True, False), (4, False, False)],
)
def test_sampling_matches_the_transcription(seed, incomplete, background):
    rng = np.random.default_rng(10 + seed)
    videos = [make_video(rng, incomplete=incomplete, background=background) for _ in range(3)]
    pools = [label_proposals(*v) for v in videos]
    literal = [LiteralVideo(*v) for v in videos]
    stats = RegressionStats.from_pools(pools)
    literal_stats = literal_regression_stats(literal)
    np.testing.assert_allclose(np.stack([stats.mean, stats.std]), literal_stats, rtol=1e-12)
    for pool, video in zip(pools, literal):
        ours_rng, literal_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        centres, kinds = sample_centres(pool, ours_rng)
        nodes = sample_neighbourhoods(neighbour_slots(pool.segments), centres, ours_rng)
        labels, reg = sample_targets(pool, centres, kinds, stats)
        samples, _ = literal_video_samples(video, literal_rng, literal_stats)
        np.testing.assert_array_equal(nodes, np.array([s[0] for s in samples]))
        np.testing.assert_array_equal(kinds, [s[1] for s in samples])
        np.testing.assert_array_equal(labels, [s[2] for s in samples])
        np.testing.assert_allclose(reg, np.array([s[3] for s in samples]), rtol=1e-12, atol=1e-12)
        assert ours_rng.random() == literal_rng.random()


def test_a_missing_kind_is_drawn_from_the_foreground():
    # one ground truth, one foreground proposal, nothing else
    pool = label_proposals(np.array([[10.0, 20.0]]), np.array([[10.0, 20.5]]), np.array([3]), 50.0)
    assert pool.counts == (2, 0, 0)
    centres, kinds = sample_centres(pool, np.random.default_rng(0))
    assert kinds.tolist() == [FOREGROUND] * 8
    assert set(centres.tolist()) <= {0, 1}
    assert (pool.labels[centres] == 4).all()  # class 3 -> column 4


def test_no_foreground_is_an_error_naming_the_video():
    pool = label_proposals(np.array([[10.0, 20.0]]), np.zeros((0, 2)), np.zeros(0), 50.0)
    assert pool.counts == (0, 0, 1)
    with pytest.raises(ValueError, match="'vid7'.*no foreground"):
        sample_centres(pool, np.random.default_rng(0), video_id="vid7")


def test_samples_per_kind_rounds_as_p_gcn():
    assert samples_per_kind() == (1, 6, 1)
    # int(10 / 8) = 1 foreground, int(10 / 8) = 1 background, the 8 others incomplete
    assert samples_per_kind(10) == (1, 8, 1)
    # int(8 * 2 / 9) = 1, int(8 * 1 / 9) = 0
    assert samples_per_kind(8, (2, 6, 1)) == (1, 7, 0)


def test_regression_targets_by_hand():
    # proposal [2, 6]: centre 4, length 4; ground truth [3, 11]: centre 7, length 8
    # shift (7 - 4) / 4 = 0.75, log(8 / 4) = log 2
    out = regression_targets(np.array([[2.0, 6.0]]), np.array([[3.0, 11.0]]))
    np.testing.assert_allclose(out, [[0.75, math.log(2.0)]], rtol=1e-15)


def test_best_ground_truth_by_hand():
    # proposal [0, 10] against [0, 5] (tIoU 5/10) and [5, 10] (5/10): a tie, the first
    # wins; overlap with self 5/10. Proposal [20, 24] against [21, 25]: tIoU 3/5 = 0.6,
    # overlap with self 3/4. Proposal [30, 31]: no overlap.
    seg = np.array([[0.0, 10.0], [20.0, 24.0], [30.0, 31.0]])
    gt = np.array([[0.0, 5.0], [5.0, 10.0], [21.0, 25.0]])
    iou, best, overlap = best_ground_truth(seg, gt)
    np.testing.assert_allclose(iou, [0.5, 0.6, 0.0])
    assert best.tolist() == [0, 2, -1]
    np.testing.assert_allclose(overlap, [0.5, 0.75, 0.0])


def test_kinds_by_hand():
    # video of length 100, one ground truth [40, 60] of class 2
    seg = np.array(
        [
            [41.0, 60.0],  # tIoU 19/20 = 0.95 > 0.7: foreground
            [40.0, 54.0],  # tIoU 14/20 = 0.7, not > 0.7 (P-GCN's strict test): unused
            [40.0, 44.0],  # tIoU 4/20 = 0.2 < 0.3, overlap with self 4/4: incomplete
            [0.0, 5.0],  # no overlap, coverage 5/100 = 0.05 > 0.02: background
            [0.0, 1.0],  # no overlap, coverage 0.01: neither
            [59.5, 70.0],  # tIoU 0.5/30 = 0.0167, overlap 0.5/10.5 = 0.048: incomplete
        ]
    )
    pool = label_proposals(seg, np.array([[40.0, 60.0]]), np.array([2]), 100.0)
    assert pool.kinds.tolist() == [FOREGROUND, FOREGROUND, INCOMPLETE, INCOMPLETE, BACKGROUND]
    assert pool.source.tolist() == [0, 6, 2, 5, 3]  # 6: the ground truth (row P + 0)
    assert pool.labels.tolist() == [3, 3, 3, 3, 0]
    # foreground [41, 60] -> [40, 60]: shift (50 - 50.5) / 19, log(20 / 19)
    np.testing.assert_allclose(pool.reg_targets[0], [-0.5 / 19, math.log(20 / 19)], rtol=1e-14)
    assert pool.reg_targets[1:].tolist() == [[0.0, 0.0]] * 4


def test_regression_stats_round_trip_and_normalise():
    stats = RegressionStats(mean=np.array([0.1, -0.2]), std=np.array([0.5, 2.0]))
    again = RegressionStats.from_dict(stats.to_dict())
    x = np.array([[0.6, 1.8]])
    np.testing.assert_allclose(again.normalise(x), [[1.0, 1.0]])
    np.testing.assert_allclose(again.denormalise(again.normalise(x)), x)
