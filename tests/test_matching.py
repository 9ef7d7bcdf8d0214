"""greedy_match (vectorised) against the literal loops of tests/_literal_algorithm1.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _literal_algorithm1 import literal_match, literal_tiou
from salad_lightning.losses.matching import (
    PRUNING_MODES,
    TARGET_MODES,
    greedy_match,
    segment_tiou,
)

SCORE_SET = (0.1, 0.3, 0.5, 0.5, 0.7, 0.9)  # small set: many ties, and exactly 0.5
MU_SET = (0.5, 0.5, 0.3, 0.7, 0.0)


def make_case(rng: np.random.Generator, dtype: torch.dtype = torch.float64) -> dict:
    """One random batch with the awkward cases the matching must get right.

    Boundaries and offsets are on a quarter grid (exact in float32 too); some
    proposals are built so that their tIoU with a ground truth equals mu exactly.
    """
    B = int(rng.integers(1, 4))
    T = int(rng.integers(0, 13)) if rng.random() < 0.05 else int(rng.integers(1, 13))
    N = int(rng.integers(0, 5))
    mu = float(rng.choice(MU_SET))
    lengths = rng.integers(0 if rng.random() < 0.1 else 1, T + 1, size=B) if T else np.zeros(B)
    frame_mask = np.arange(T)[None, :] < lengths[:, None]
    if rng.random() < 0.2:  # holes anywhere, not only at the end
        frame_mask &= rng.random((B, T)) < 0.8

    gts = np.zeros((B, N, 2))
    for b in range(B):
        for n in range(N):
            if n > 0 and rng.random() < 0.25:  # identical segment, another label
                gts[b, n] = gts[b, n - 1]
            elif n > 0 and rng.random() < 0.2:  # nested in the previous one
                s, e = gts[b, n - 1]
                gts[b, n] = [s + 0.25 * rng.integers(0, 3), max(s, e - 0.25 * rng.integers(0, 3))]
            else:
                integer = rng.random() < 0.6  # integer boundaries: steps exactly on them
                s = rng.integers(-1, max(T, 1)) + (0 if integer else 0.25 * rng.integers(0, 4))
                length = rng.integers(0, 6) + (0 if integer else 0.25 * rng.integers(0, 4))
                gts[b, n] = [s, s + length]
    gt_mask = rng.random((B, N)) < 0.8
    gts = np.where(gt_mask[..., None], gts, rng.integers(-3, 10, size=(B, N, 2)))  # garbage pads

    steps = np.arange(T, dtype=np.float64)[None, :, None]
    segs = np.concatenate(
        [
            steps - 0.25 * rng.integers(0, 12, (B, T, 1)),
            steps + 0.25 * rng.integers(0, 12, (B, T, 1)),
        ],
        axis=-1,
    )
    if N:
        # Some proposals hit tIoU == mu exactly: [s, s + mu * L] against gt [s, s + L].
        for b in range(B):
            for t in range(T):
                if rng.random() < 0.3:
                    n = int(rng.integers(0, N))
                    s, e = gts[b, n]
                    choice = rng.random()
                    if choice < 0.5 and mu in (0.5, 0.0):
                        segs[b, t] = [s, s + 0.5 * (e - s)] if mu == 0.5 else [e, e + 1]
                    elif choice < 0.75:
                        segs[b, t] = [s, e]  # tIoU 1
                    else:
                        segs[b, t] = [s - (e - s), e]  # tIoU 0.5 again when e > s
    if dtype == torch.float64 and rng.random() < 0.3:
        segs = segs + rng.normal(0, 0.3, segs.shape)  # continuous values, exact in float64
        scores = rng.random((B, T))
    else:
        scores = rng.choice(SCORE_SET, size=(B, T))
    return dict(
        segments=torch.tensor(segs, dtype=dtype),
        scores=torch.tensor(scores, dtype=dtype),
        gt_segments=torch.tensor(gts, dtype=dtype).reshape(B, N, 2),
        gt_mask=torch.tensor(gt_mask, dtype=torch.bool).reshape(B, N),
        frame_mask=torch.tensor(frame_mask, dtype=torch.bool).reshape(B, T),
        mu=mu,
    )


def assert_same(case: dict, pruning: str, target: str, seed: int) -> None:
    B, T = case["scores"].shape
    N = case["gt_segments"].shape[1]
    frozen = torch.from_numpy(np.random.default_rng(seed).random((B, T, N)) < 0.5)
    kwargs = dict(pruning=pruning, target=target, frozen_alpha=frozen)
    got = greedy_match(**case, **kwargs, generator=torch.Generator().manual_seed(seed))
    alpha, y = literal_match(**case, **kwargs, generator=torch.Generator().manual_seed(seed))
    assert got.alpha.tolist() == alpha, (pruning, target, case)
    assert got.y.tolist() == y, (pruning, target, case)
    assert got.alpha.shape == (B, T, N) and got.y.shape == (B, T)


def test_vectorised_equals_literal_on_generated_cases():
    rng = np.random.default_rng(20210105)
    n_cases = 1200
    for i in range(n_cases):
        case = make_case(rng, torch.float64 if i % 2 else torch.float32)
        assert_same(case, "salad", "salad", i)
        # every variant, cycled so that every (pruning, target) pair occurs
        assert_same(case, PRUNING_MODES[i % 5], TARGET_MODES[(i // 5) % 4], i)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    pruning=st.sampled_from(PRUNING_MODES),
    target=st.sampled_from(TARGET_MODES),
)
def test_vectorised_equals_literal_hypothesis(seed, pruning, target):
    case = make_case(np.random.default_rng(seed), torch.float64)
    assert_same(case, pruning, target, seed % 1000)


def _one(segs, scores, gts, mu=0.5, frame_mask=None, **kw):
    segs = torch.tensor([segs], dtype=torch.float64)
    T = segs.shape[1]
    gts = torch.tensor([gts], dtype=torch.float64).reshape(1, -1, 2)
    fm = torch.ones(1, T, dtype=torch.bool) if frame_mask is None else torch.tensor([frame_mask])
    gm = torch.ones(1, gts.shape[1], dtype=torch.bool)
    return greedy_match(segs, torch.tensor([scores], dtype=torch.float64), gts, gm, fm, mu, **kw)


# Hand-worked case: T = 8, one ground truth [2, 6] (steps 2..6 inside, closed interval).
HAND_SEGS = [[0, 1], [0, 2], [2, 3], [2, 5.5], [3.5, 5.5], [2, 6], [5, 7], [6, 8]]
#           tIoU:   -      -   0.25  0.875    0.5       1.0    0.25    -
HAND_SCORES = [0.99, 0.1, 0.2, 0.8, 0.9, 0.7, 0.3, 0.95]
# Score order among inside steps: 4 (0.9, tIoU 0.5, not > 0.5) -> 3 (0.8, 0.875: match).


def test_hand_worked_algorithm1():
    m = _one(HAND_SEGS, HAND_SCORES, [[2, 6]])
    assert m.alpha[0, :, 0].tolist() == [False, False, False, True, True, False, False, False]
    assert m.y[0].tolist() == [False, False, False, True, False, False, False, False]
    assert m.beta.tolist() == [[True]]
    assert m.inside[0, :, 0].tolist() == [False, False, True, True, True, True, True, False]
    assert m.tiou[0, 4, 0].item() == 0.5 and m.tiou[0, 3, 0].item() == 0.875


def test_hand_worked_variants():
    kw = dict(segs=HAND_SEGS, scores=HAND_SCORES, gts=[[2, 6]])
    none = _one(**kw, pruning="none", target="iou_gt_mu")
    assert none.alpha[0, :, 0].tolist() == [False, False, True, True, True, True, True, False]
    assert none.y[0].tolist() == [False, False, False, True, False, True, False, False]
    top1 = _one(**kw, pruning="top1_iou", target="max_score")
    assert top1.alpha[0, :, 0].tolist() == [False] * 5 + [True, False, False]  # step 5, tIoU 1
    assert top1.y[0].tolist() == [False] * 4 + [True] + [False] * 3  # step 4, best inside score
    half = _one(**kw, target="score_gt_half", frame_mask=[True] * 7 + [False])
    assert half.y[0].tolist() == [True, False, False, True, True, True, False, False]


def test_hand_worked_nothing_above_mu_and_ties():
    # mu = 0.9: order 4 (0.5), 3 (0.875), 5 (1.0 > 0.9: match); 6 and 2 are pruned.
    m = _one(HAND_SEGS, HAND_SCORES, [[2, 6]], mu=0.9)
    assert m.alpha[0, :, 0].tolist() == [False, False, False, True, True, True, False, False]
    assert m.y[0].tolist() == [False] * 5 + [True, False, False]
    # mu = 1.0: no tIoU is strictly above it, every inside step competes, nobody is positive.
    m = _one(HAND_SEGS, HAND_SCORES, [[2, 6]], mu=1.0, pruning="salad")
    assert m.alpha[0, :, 0].tolist() == [False, False, True, True, True, True, True, False]
    assert not m.y.any() and not m.beta.any()
    # Equal scores: the lower step comes first; step 1 matches, step 3 is pruned.
    segs = [[0, 2], [0, 2], [0, 2], [0, 2]]
    m = _one(segs, [0.5, 0.7, 0.2, 0.7], [[0, 3]])  # tIoU 2/3 everywhere
    assert m.alpha[0, :, 0].tolist() == [False, True, False, False]
    assert m.y[0].tolist() == [False, True, False, False]


def test_identical_ground_truths_share_the_winner():
    # THUMOS14 CliffDiving / Diving: the same segment twice with two labels.
    m = _one(HAND_SEGS, HAND_SCORES, [[2, 6], [2, 6], [6, 8]])
    assert torch.equal(m.alpha[0, :, 0], m.alpha[0, :, 1])
    # gt [6, 8] holds steps 6 and 7 (6 is on the boundary of both [2, 6] and [6, 8]);
    # in score order 7 (0.95, tIoU 1.0) comes first and matches; step 6 (0.3) is pruned.
    assert m.y[0].tolist() == [False, False, False, True, False, False, False, True]
    assert m.alpha[0, :, 2].tolist() == [False] * 7 + [True]
    assert m.beta.tolist() == [[True, True, True]]


def test_tiou_equal_to_mu_is_not_a_match():
    # gt [2, 6], proposal [2, 4]: tIoU exactly 0.5 in float32 and float64.
    for dtype in (torch.float32, torch.float64):
        segs = torch.tensor(
            [[[0.0, 1.0], [2.0, 4.0], [2.0, 4.0 + 2**-10], [2.0, 4.0]]], dtype=dtype
        )
        gts = torch.tensor([[[2.0, 6.0]]], dtype=dtype)
        scores = torch.tensor([[0.95, 0.9, 0.8, 0.85]], dtype=dtype)
        ones = torch.ones(1, 4, dtype=torch.bool)
        m = greedy_match(segs, scores, gts, ones[:, :1], ones, 0.5)
        assert m.tiou[0, 1, 0].item() == 0.5 and m.tiou[0, 2, 0].item() > 0.5
        # order among inside steps 2, 3: 3 (0.85, tIoU 0.5: not a match), 2 (0.8, match)
        assert m.y[0].tolist() == [False, False, True, False]
        assert m.alpha[0, :, 0].tolist() == [False, False, True, True]


def test_no_ground_truth():
    B, T = 2, 5
    segs = torch.zeros(B, T, 2)
    scores = torch.rand(B, T)
    fm = torch.ones(B, T, dtype=torch.bool)
    for gts, gm in (
        (torch.zeros(B, 0, 2), torch.zeros(B, 0, dtype=torch.bool)),
        (torch.tensor([[[0.0, 4.0]], [[1.0, 2.0]]]), torch.zeros(B, 1, dtype=torch.bool)),
    ):
        for pruning in PRUNING_MODES:
            for target in ("salad", "max_score", "iou_gt_mu"):
                frozen = torch.ones(B, T, gts.shape[1], dtype=torch.bool)
                m = greedy_match(
                    segs,
                    scores,
                    gts,
                    gm,
                    fm,
                    0.5,
                    pruning=pruning,
                    target=target,
                    frozen_alpha=frozen,
                )
                assert m.alpha.shape == (B, T, gts.shape[1]) and not m.alpha.any()
                assert m.y.shape == (B, T) and not m.y.any()


def test_tiou_degenerate_rule_and_reference_agree():
    # Same single point: hull 0 -> 0. Zero-length proposal inside a gt: 0. Disjoint: negative.
    pairs = [
        ((3.0, 3.0), (3.0, 3.0)),
        ((3.0, 3.0), (2.0, 4.0)),
        ((0.0, 1.0), (2.0, 4.0)),
        ((1.0, 3.0), (2.0, 4.0)),
    ]
    expected = [0.0, 0.0, -0.25, 1 / 3]
    segs = torch.tensor([[p[0] for p in pairs]], dtype=torch.float64)
    gts = torch.tensor([[p[1] for p in pairs]], dtype=torch.float64)
    full = segment_tiou(segs, gts)[0]
    for i, (seg, gt) in enumerate(pairs):
        assert full[i, i].item() == pytest.approx(expected[i], abs=1e-15)
        assert literal_tiou(seg, gt) == pytest.approx(expected[i], abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_no_grad(dtype):
    case = make_case(np.random.default_rng(7), dtype)
    while case["gt_segments"].shape[1] == 0 or case["scores"].shape[1] == 0:
        case = make_case(np.random.default_rng(int(case["scores"].numel()) + 8), dtype)
    case["segments"].requires_grad_(True)
    case["scores"].requires_grad_(True)
    m = greedy_match(**case)
    assert m.tiou.dtype == dtype and not m.tiou.requires_grad
    assert m.alpha.dtype == torch.bool and m.y.dtype == torch.bool and m.inside.dtype == torch.bool
    assert not any(x.requires_grad for x in m)
    alpha, y = literal_match(
        **{k: (v.detach() if torch.is_tensor(v) else v) for k, v in case.items()}
    )
    assert m.alpha.tolist() == alpha and m.y.tolist() == y


def test_bad_keywords_raise():
    case = make_case(np.random.default_rng(0))
    with pytest.raises(ValueError, match="'salad', 'none', 'top1_iou', 'random', 'frozen'"):
        greedy_match(**case, pruning="greedy")
    with pytest.raises(ValueError, match="'max_score'"):
        greedy_match(**case, target="iou")
    with pytest.raises(ValueError, match="frozen_alpha"):
        greedy_match(**case, pruning="frozen")
