"""pgcn/graph.py against the node-by-node transcription of P-GCN in tests/_literal_pgcn.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _literal_pgcn import (
    literal_block_adjacency,
    literal_mask,
    literal_matrices,
    literal_neighbourhood,
    literal_slots,
)
from salad_lightning.pgcn.graph import (
    neighbour_slots,
    neighbourhood_adjacency,
    neighbourhood_mask,
    neighbourhood_size,
    pairwise_distance,
    pairwise_tiou,
    sample_neighbourhoods,
)


def make_proposals(rng: np.random.Generator, p: int) -> np.ndarray:
    """Proposals on a quarter grid with the awkward cases: duplicates (earlier and later),
    nested and touching segments, zero lengths, many overlaps above 0.7."""
    segs = []
    for _ in range(p):
        u = rng.random()
        if segs and u < 0.15:  # a duplicate of an earlier one
            segs.append(segs[int(rng.integers(len(segs)))])
        elif segs and u < 0.35:  # a small change of an earlier one: high tIoU
            s, e = segs[int(rng.integers(len(segs)))]
            segs.append((s + 0.25 * rng.integers(-2, 3), e + 0.25 * rng.integers(-2, 3)))
        elif segs and u < 0.45:  # touching an earlier one
            s, e = segs[int(rng.integers(len(segs)))]
            segs.append((e, e + 0.25 * rng.integers(0, 30)))
        else:
            s = 0.25 * rng.integers(0, 400)
            segs.append((s, s + 0.25 * rng.integers(0, 60)))
    seg = np.array(segs, dtype=np.float64)
    return np.sort(seg, axis=1)


@pytest.mark.parametrize("seed", range(6))
def test_matrices_and_slots_match_the_transcription(seed):
    rng = np.random.default_rng(seed)
    seg = make_proposals(rng, int(rng.integers(1, 40)))
    iou, dis = literal_matrices(seg)
    np.testing.assert_allclose(pairwise_tiou(seg), np.array(iou), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pairwise_distance(seg), np.array(dis), rtol=0, atol=1e-12)
    slots = neighbour_slots(seg)
    expected = [literal_slots(c, iou, dis) for c in range(len(seg))]
    np.testing.assert_array_equal(slots, np.array(expected))


def test_slots_on_a_hand_worked_example():
    # A [0, 10], B [0, 9], C [1, 10], D [20, 30], E [12, 14]
    # tIoU(A, B) = 9/10, tIoU(A, C) = 9/10: a tie, B (lower index) first; the two
    # candidates repeat to fill 8 slots. A's disjoint ones: E at |5 - 13| / 14 = 0.571,
    # D at |5 - 25| / 30 = 0.667: E first.
    # D has no contextual candidate: 8 x itself. Disjoint: A 20/30 = 2/3, B 20.5/30 = 0.683,
    # C 19.5/29 = 0.672, E 12/18 = 2/3: A and E tie at 2/3, A first.
    # E: no contextual; disjoint A (8/14 = 0.571), B (8.5/14 = 0.607), C (7.5/13 = 0.577),
    # D (12/18): A then C.
    seg = np.array([[0, 10], [0, 9], [1, 10], [20, 30], [12, 14]], dtype=float)
    slots = neighbour_slots(seg)
    a, b, c, d, e = range(5)
    assert slots[a].tolist() == [b, c, b, c, b, c, b, c, e, d]
    assert slots[d].tolist() == [d] * 8 + [a, e]
    assert slots[e].tolist() == [e] * 8 + [a, c]
    # B: tIoU(B, A) = 0.9, tIoU(B, C) = 8/10 = 0.8: A then C
    assert slots[b].tolist()[:8] == [a, c] * 4


def test_touching_segments_are_disjoint_and_a_lone_node_is_its_own_neighbour():
    seg = np.array([[0.0, 2.0], [2.0, 5.0]])
    assert pairwise_tiou(seg)[0, 1] == 0.0
    assert neighbour_slots(seg)[0].tolist() == [0] * 8 + [1, 1]
    one = neighbour_slots(np.array([[3.0, 4.0]]))
    assert one.tolist() == [[0] * 10]


@pytest.mark.parametrize("seed", range(5))
def test_sampled_neighbourhoods_consume_the_same_draws_as_the_transcription(seed):
    rng = np.random.default_rng(100 + seed)
    seg = make_proposals(rng, int(rng.integers(1, 30)))
    iou, dis = literal_matrices(seg)
    centres = rng.integers(0, len(seg), size=int(rng.integers(1, 12)))
    ours_rng, literal_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    nodes = sample_neighbourhoods(neighbour_slots(seg), centres, ours_rng)
    expected = [literal_neighbourhood(int(c), iou, dis, literal_rng) for c in centres]
    assert nodes.shape == (len(centres), 21)
    np.testing.assert_array_equal(nodes, np.array(expected))
    assert ours_rng.random() == literal_rng.random()  # the same number of draws


@pytest.mark.parametrize("seed", range(4))
def test_test_time_rule_picks_the_same_segments(seed):
    # P-GCN's test script takes out the proposal of highest tIoU with the node (an
    # identical segment listed earlier, if any) instead of the node itself: the indices
    # may differ, the segments (hence the features) may not.
    rng = np.random.default_rng(200 + seed)
    seg = make_proposals(rng, 40)
    seg = seg[seg[:, 1] > seg[:, 0]]  # P-GCN's reader drops zero-length proposals
    seg = np.concatenate([seg, seg[::3]])  # many exact duplicates, listed later
    iou, dis = literal_matrices(seg)
    centres = np.arange(len(seg))
    ours = sample_neighbourhoods(neighbour_slots(seg), centres, np.random.default_rng(seed))
    literal_rng = np.random.default_rng(seed)
    test_time = [
        literal_neighbourhood(int(c), iou, dis, literal_rng, test_time=True) for c in centres
    ]
    assert not np.array_equal(ours, np.array(test_time))  # the rules do differ here...
    np.testing.assert_array_equal(seg[ours], seg[np.array(test_time)])  # ...not their segments


def test_children_are_drawn_without_replacement_from_the_slots():
    # a node whose ten slots are all different gives four different children
    seg = np.array([[0.0, 10.0]] + [[20.0 + 5 * k, 22.0 + 5 * k] for k in range(3)])
    slots = neighbour_slots(seg, num_contextual=8, num_surrounding=2)
    nodes = sample_neighbourhoods(slots, np.zeros(200, dtype=np.int64), np.random.default_rng(0))
    # node 0: no contextual candidate (8 x itself), nearest disjoint 1 and 2
    assert set(np.unique(nodes[:, 1:5])) == {0, 1, 2}
    assert ((nodes[:, 1:5] == 1).sum(axis=1) <= 1).all()  # slot 1 holds proposal 1 once


def test_mask_is_the_transcribed_pattern():
    mask = neighbourhood_mask()
    assert neighbourhood_size() == 21
    torch.testing.assert_close(mask, literal_mask(), rtol=0, atol=0)
    # rows 0..4: 1 on the diagonal and 1/4 on four children; the 16 leaves' rows empty
    assert mask.sum(dim=1).tolist() == [2.0] * 5 + [0.0] * 16
    assert mask[2, 9:13].tolist() == [0.25] * 4


def test_adjacency_matches_the_block_diagonal_transcription():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 21, 5, generator=g, dtype=torch.float64)
    feats[1, 7] = feats[1, 0]  # an identical node: cosine 1
    feats[2, 3] = -feats[2, 0]  # an opposite node: cosine -1, clipped to 0
    ours = neighbourhood_adjacency(feats, neighbourhood_mask(dtype=torch.float64))
    big = literal_block_adjacency(feats)
    for n in range(3):
        block = big[21 * n : 21 * (n + 1), 21 * n : 21 * (n + 1)]
        torch.testing.assert_close(ours[n], block, rtol=1e-12, atol=1e-12)
    assert ours[2, 0, 3] == 0.0
    # off-diagonal blocks of P-GCN's matrix are zero: nothing crosses neighbourhoods
    assert big[:21, 21:].abs().max() == 0.0
    rows = torch.arange(5)
    torch.testing.assert_close(
        neighbourhood_adjacency(feats, neighbourhood_mask(dtype=torch.float64), rows=rows),
        ours[:, :5],
    )


def test_a_zero_feature_has_zero_similarity_instead_of_nan():
    feats = torch.ones(1, 21, 4)
    feats[0, 1] = 0.0
    adj = neighbourhood_adjacency(feats, neighbourhood_mask())
    assert torch.isfinite(adj).all()
    assert adj[0, 0, 1] == 0.0 and adj[0, 0, 2] == 0.25
