"""P-GCN's proposal graph: edges, the 21-node neighbourhoods it samples, their adjacency.

Segments may be in any unit (seconds or feature-index units): the tIoU and P-GCN's
normalised distance do not change with the unit or the origin.

**Edges** (P-GCN's ``pgcn_dataset.py``, ``ops/detection_metrics.py``; defaults are its
THUMOS14 settings, ``data/dataset_cfg.yaml``):

- *contextual*: the other proposals with ``tIoU > iou_threshold`` (0.7), best first;
- *surrounding*: the proposals disjoint from it (``tIoU <= 0``) with
  ``distance > distance_threshold`` (0), nearest first. The distance is P-GCN's code's:
  ``|c_i - c_j| / (max(e_i, e_j) - min(s_i, s_j))``, the distance between the centres
  over the length of the pair's hull (0 when the hull has zero length).

The code puts no upper bound on the surrounding edges' distance: with ``dis_threshold``
0 every other disjoint proposal is a candidate, and the nearest ones are taken. The
code's rule is the one here.

**Children.** Each node has ten *slots* (:func:`neighbour_slots`): the 8 best contextual
candidates and the 2 nearest surrounding ones. When a kind has fewer candidates than
slots, its list is repeated in order (``np.tile``: candidates a, b, c fill 8 slots as
a b c a b c a b); a kind without candidates fills its slots with the node itself. A
node's 4 children are 4 of its ten slots drawn without replacement (P-GCN shuffles the
ten and keeps the first four), so a child can repeat when a slot value does.

**Neighbourhood** (:func:`sample_neighbourhoods`), P-GCN's order: node 0 is the centre,
nodes ``1..4`` its children, and node ``k`` (``k = 1..4``) has its children at
``1 + 4k .. 4 + 4k``: 1 + 4 + 16 = 21 nodes. P-GCN samples at training time (the 8
centres of each video) and at test time too (every proposal of the video is a centre,
with its own random children); both take a ``numpy.random.Generator`` here. Each node
draws one permutation of its ten slots (``Generator.permuted`` on a (M, 5, 10) array,
centre-major then node order), the same numbers ``Generator.shuffle`` would draw for the
same nodes one after the other, so a loop transcription can consume the same draws.

Differences from P-GCN's code, none of which changes which proposals become neighbours
beyond what is said:

- P-GCN works on frame numbers with an inclusive end (``+1`` frame in lengths,
  intersections and the hull); segments here are continuous, so two proposals that
  touch have ``tIoU = 0`` (disjoint) here, where P-GCN counts a one-frame overlap.
- zero-length proposals (P-GCN's reader drops them) have tIoU 0 with every proposal,
  themselves included, so no contextual candidates; they can be surrounding ones.
- equal tIoUs or distances: lower index first (P-GCN's ``np.argsort`` leaves their
  order to numpy's unstable sort).
- at test time P-GCN takes out the proposal with the highest tIoU with the node (itself,
  or an identical segment listed before it) rather than the node itself, and falls
  back to it when a kind is empty. Both rules pick among identical segments, which have
  identical features, so the network's output is the same.

**Adjacency** (:func:`neighbourhood_adjacency`): P-GCN's ``mask`` (row ``k`` of node
``k = 0..4``: 1 on itself and 1/4 on each of its children; the 16 leaves' rows are all
zero, as in P-GCN's code) times the cosine similarity of the nodes' features, clipped at
0. P-GCN builds it for the activity and the completeness features separately.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DISTANCE_THRESHOLD",
    "IOU_THRESHOLD",
    "NUM_CHILDREN",
    "NUM_CONTEXTUAL",
    "NUM_SURROUNDING",
    "neighbour_slots",
    "neighbourhood_adjacency",
    "neighbourhood_mask",
    "neighbourhood_size",
    "pairwise_distance",
    "pairwise_tiou",
    "sample_neighbourhoods",
]

IOU_THRESHOLD = 0.7  # P-GCN's iou_threshold: contextual edges at tIoU > 0.7
NUM_CONTEXTUAL = 8  # P-GCN's iou_num: contextual slots per node
DISTANCE_THRESHOLD = 0.0  # P-GCN's dis_threshold: surrounding edges at distance > 0
NUM_SURROUNDING = 2  # P-GCN's dis_num: surrounding slots per node
NUM_CHILDREN = 4  # P-GCN's child_num: children per node; adj_num = 1 + 4 + 16 = 21
COSINE_EPS = 1e-8  # floor of |a| |b| in the cosine (P-GCN divides unguarded: NaN on a zero feature)


def segment_array(segments: np.ndarray, what: str = "segments") -> np.ndarray:
    """``segments`` as a float64 (N, 2) array (an empty one from any empty input); a
    ValueError naming ``what`` for another shape."""
    seg = np.asarray(segments, dtype=np.float64)
    if seg.size == 0:
        seg = seg.reshape(0, 2)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise ValueError(f"expected {what} (N, 2), found {seg.shape}")
    return seg


def pairwise_tiou(segments: np.ndarray) -> np.ndarray:
    """(P, P) tIoU of every pair: ``max(0, intersection) / union``, 0 where the union is 0."""
    seg = segment_array(segments)
    s, e = seg[:, 0], seg[:, 1]
    inter = np.clip(np.minimum(e[:, None], e[None]) - np.maximum(s[:, None], s[None]), 0, None)
    union = (e - s)[:, None] + (e - s)[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def pairwise_distance(segments: np.ndarray) -> np.ndarray:
    """(P, P) P-GCN distance: ``|c_i - c_j|`` over the pair's hull length, 0 where that is 0."""
    seg = segment_array(segments)
    s, e = seg[:, 0], seg[:, 1]
    centre = 0.5 * (s + e)
    hull = np.maximum(e[:, None], e[None]) - np.minimum(s[:, None], s[None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hull > 0, np.abs(centre[:, None] - centre[None]) / hull, 0.0)


def _ranked_slots(key: np.ndarray, candidate: np.ndarray, num: int) -> np.ndarray:
    """(P, num): each row's candidates by increasing ``key`` (ties: lower index), repeated
    in order to fill ``num`` slots; the row's own index where it has none."""
    p = key.shape[0]
    order = np.argsort(np.where(candidate, key, np.inf), axis=1, kind="stable")
    count = candidate.sum(axis=1)
    pick = np.arange(num)[None, :] % np.maximum(count, 1)[:, None]
    slots = np.take_along_axis(order, pick, axis=1)
    return np.where(count[:, None] > 0, slots, np.arange(p)[:, None])


def neighbour_slots(
    segments: np.ndarray,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    num_contextual: int = NUM_CONTEXTUAL,
    distance_threshold: float = DISTANCE_THRESHOLD,
    num_surrounding: int = NUM_SURROUNDING,
) -> np.ndarray:
    """(P, num_contextual + num_surrounding) int64: every node's child slots (module docstring).

    Columns ``[:num_contextual]``: contextual candidates (``tIoU > iou_threshold``, the
    node itself excluded), best tIoU first; the rest: surrounding candidates
    (``tIoU <= 0`` and ``distance > distance_threshold``), nearest first. Fewer
    candidates than slots: the list repeated in order; none: the node itself.
    """
    seg = segment_array(segments)
    tiou = pairwise_tiou(seg)
    dist = pairwise_distance(seg)
    disjoint = (tiou <= 0) & (dist > distance_threshold)
    np.fill_diagonal(tiou, 0.0)  # P-GCN: "remove self" before the contextual test
    contextual = _ranked_slots(-tiou, tiou > iou_threshold, num_contextual)
    surrounding = _ranked_slots(dist, disjoint, num_surrounding)
    return np.concatenate([contextual, surrounding], axis=1)


def neighbourhood_size(num_children: int = NUM_CHILDREN) -> int:
    """Nodes in a neighbourhood: the centre, its children, theirs (P-GCN's adj_num: 21)."""
    return 1 + num_children * (num_children + 1)


def sample_neighbourhoods(
    slots: np.ndarray,
    centres: np.ndarray,
    rng: np.random.Generator,
    *,
    num_children: int = NUM_CHILDREN,
) -> np.ndarray:
    """(M, 21) int64 node indices of the neighbourhoods of ``centres`` (M,), P-GCN's order.

    ``slots`` from :func:`neighbour_slots` over the same proposals. For each centre
    (in order) and each of its nodes 0..4 (in order), one permutation of the slots is
    drawn from ``rng``; the node's children are the slots at its first ``num_children``
    positions.
    """
    slots = np.asarray(slots, dtype=np.int64)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1)
    m, width = len(centres), slots.shape[1]
    if width < num_children:
        raise ValueError(f"{width} slots per node cannot give {num_children} children")
    parents = num_children + 1
    perm = rng.permuted(np.tile(np.arange(width), (m, parents, 1)), axis=-1)
    nodes = np.empty((m, neighbourhood_size(num_children)), dtype=np.int64)
    nodes[:, 0] = centres
    for k in range(parents):  # node k's children; node k itself is known by then
        first = 1 + k * num_children
        picked = perm[:, k, :num_children]
        nodes[:, first : first + num_children] = np.take_along_axis(
            slots[nodes[:, k]], picked, axis=1
        )
    return nodes


def neighbourhood_mask(
    num_children: int = NUM_CHILDREN, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """P-GCN's (21, 21) sampling pattern: row k (k = 0..4) is 1 at k and 1/4 at k's children."""
    n = neighbourhood_size(num_children)
    mask = torch.zeros(n, n, dtype=dtype)
    for k in range(num_children + 1):
        first = 1 + k * num_children
        mask[k, first : first + num_children] = 1.0 / num_children
        mask[k, k] = 1.0
    return mask


def neighbourhood_adjacency(
    features: Tensor, mask: Tensor, *, rows: Tensor | None = None
) -> Tensor:
    """``relu(mask * cosine similarity)`` of each neighbourhood's nodes: (N, n, D) -> (N, n, n).

    With ``rows`` (indices into the n nodes) only those rows are built: (N, len(rows), n).
    The cosine's denominator ``|a| |b|`` is floored at 1e-8 (a zero feature has
    similarity 0 with everything; P-GCN's unguarded division gives NaN).
    """
    x = features
    query = x if rows is None else x[:, rows]
    m = mask if rows is None else mask[rows]
    dot = torch.bmm(query, x.transpose(1, 2))
    norm = x.norm(dim=-1)
    qnorm = norm if rows is None else norm[:, rows]
    cos = dot / (qnorm[:, :, None] * norm[:, None, :]).clamp_min(COSINE_EPS)
    return torch.relu(m.to(x.dtype) * cos)
