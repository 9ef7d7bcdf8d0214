"""pgcn/features.py: a hand-worked example and a brute-force integration."""

from __future__ import annotations

import numpy as np
import pytest

from salad_lightning.pgcn.features import interval_means, pool_proposal_features

# the sequence 0, 2, 4, 0 at indices 0..3 (one channel), and the same x 10 in a second
X = np.array([[0.0, 0.0], [2.0, 20.0], [4.0, 40.0], [0.0, 0.0]])


def test_interval_means_by_hand():
    # [0.5, 2.5]: the interpolant is 1 at 0.5, 2 at 1, 4 at 2, 2 at 2.5; trapezoids
    #   (1 + 2) / 2 * 0.5 + (2 + 4) / 2 * 1 + (4 + 2) / 2 * 0.5 = 0.75 + 3 + 1.5 = 5.25,
    #   over a length of 2: 2.625
    # [-1, 0.5]: constant 0 before index 0, then (0 + 1) / 2 * 0.5 = 0.25; 0.25 / 1.5 = 1/6
    # [2.5, 2.5]: zero length, the value at 2.5: 2
    # [0, 3]: (1 + 3 + 2) / 3 = 2
    # [3, 5] and [-2, -1]: past the ends, the end values 0
    a = np.array([0.5, -1.0, 2.5, 0.0, 3.0, -2.0])
    b = np.array([2.5, 0.5, 2.5, 3.0, 5.0, -1.0])
    expected = np.array([2.625, 1 / 6, 2.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(interval_means(X, a, b), np.stack([expected, 10 * expected], 1))


def test_proposal_features_by_hand():
    # proposal [1, 2], L = 1: start part [0.5, 1]: (1 + 2) / 2 = 1.5; course [1, 2]:
    # (2 + 4) / 2 = 3; end part [2, 2.5]: (4 + 2) / 2 = 3.
    act, comp = pool_proposal_features(X[:, :1], np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(act, [[3.0]])
    np.testing.assert_allclose(comp, [[1.5, 3.0, 3.0]])
    # cut at (0.8, 3): the start part [0.8, 1]: (1.6 + 2) / 2 = 1.8; the end part is inside
    _, comp = pool_proposal_features(X[:, :1], np.array([[1.0, 2.0]]), bounds=(0.8, 3.0))
    np.testing.assert_allclose(comp, [[1.8, 3.0, 3.0]])
    # a proposal starting at the bound: its start part is empty, the value at 1: 2
    _, comp = pool_proposal_features(X[:, :1], np.array([[1.0, 2.0]]), bounds=(1.0, 3.0))
    np.testing.assert_allclose(comp, [[2.0, 3.0, 3.0]])
    # channels stay in their blocks: [start | course | end], C each
    _, comp = pool_proposal_features(X, np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(comp, [[1.5, 15.0, 3.0, 30.0, 3.0, 30.0]])


def _brute_force(x: np.ndarray, a: float, b: float, steps: int = 20001) -> np.ndarray:
    """np.interp holds the end values beyond the sequence, as the rule does; trapezoids
    on a fine grid whose nodes include every integer index in [a, b]."""
    idx = np.arange(len(x), dtype=float)
    if a == b:
        return np.array([np.interp(a, idx, x[:, c]) for c in range(x.shape[1])])
    grid = np.union1d(np.linspace(a, b, steps), idx[(idx > a) & (idx < b)])
    vals = np.stack([np.interp(grid, idx, x[:, c]) for c in range(x.shape[1])], 1)
    return np.trapezoid(vals, grid, axis=0) / (b - a)


@pytest.mark.parametrize("seed", range(4))
def test_means_match_a_brute_force_integration(seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 30))
    x = rng.normal(size=(t, 3))
    a = rng.uniform(-3, t + 2, size=12)
    b = a + rng.uniform(0, 8, size=12)
    b[:2] = a[:2]  # zero length
    ours = interval_means(x, a, b)
    for j in range(12):
        np.testing.assert_allclose(ours[j], _brute_force(x, a[j], b[j]), rtol=1e-7, atol=1e-9)


def test_completeness_parts_match_a_brute_force_integration():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(25, 2))
    seg = np.sort(rng.uniform(-2, 26, size=(6, 2)), axis=1)
    act, comp = pool_proposal_features(x, seg, bounds=(-0.5, 24.5))
    for j, (s, e) in enumerate(seg):
        half = 0.5 * (e - s)
        start = min(max(s - half, -0.5), s)
        end = max(min(e + half, 24.5), e)
        expected = np.concatenate(
            [_brute_force(x, start, s), _brute_force(x, s, e), _brute_force(x, e, end)]
        )
        np.testing.assert_allclose(comp[j], expected, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(act[j], expected[2:4], rtol=1e-7, atol=1e-9)


def test_dtype_single_step_and_errors():
    x32 = np.array([[1.0, 2.0]], dtype=np.float32)  # T = 1: constant everywhere
    act, comp = pool_proposal_features(x32, np.array([[-3.0, 4.0], [0.0, 0.0]]))
    assert act.dtype == np.float32 and comp.shape == (2, 6)
    np.testing.assert_array_equal(comp, np.tile([1.0, 2.0], (2, 3)))
    with pytest.raises(ValueError, match="proposal 1: .*start <= end"):
        pool_proposal_features(X, np.array([[0.0, 1.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(T, C\)"):
        interval_means(np.zeros((0, 3)), np.zeros(1), np.zeros(1))
