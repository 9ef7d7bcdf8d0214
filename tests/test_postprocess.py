"""Post-processing against hand-worked values and the literal loops in ``_literal_nms``."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from _literal_nms import literal_soft_nms, literal_tiou, literal_topk, thumos_like_proposals
from salad_lightning.data.mapping import TimeMapping
from salad_lightning.models.net import SaladOutput
from salad_lightning.models.nms import NMSSettings, soft_nms_numpy
from salad_lightning.models.postprocess import (
    batched_soft_nms,
    decode,
    fuse_scores,
    offsets_to_segments,
    postprocess_batch,
    segment_iou,
    soft_nms,
    topk,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# THUMOS14-sized videos (20 classes alike, one class with 90% of the proposals, two
# classes) and an ActivityNet-sized one, as the benchmark times them.
PEER_CASES = [
    ("even", 2300, 20, 200),
    ("dominant", 2300, 20, 200),
    ("two", 2300, 20, 200),
    ("dominant", 100, 200, 20),
]


def _random_case(rng: random.Random, m: int, n_labels: int = 3, distinct: bool = True):
    segments = []
    for _ in range(m):
        r = rng.random()
        if r < 0.1 and segments:  # exact duplicate: iou 1
            segments.append(list(rng.choice(segments)))
            continue
        start = rng.uniform(0, 40)
        length = 0.0 if r < 0.15 else rng.uniform(0.1, 12)  # some zero-length segments
        segments.append([start, start + length])
    if distinct:
        scores = rng.sample(range(1, 10**6), m)
        scores = [s / 10**6 for s in scores]
    else:
        scores = [rng.choice([0.2, 0.4, 0.6, 0.8]) for _ in range(m)]
    labels = [rng.randrange(n_labels) for _ in range(m)]
    return segments, scores, labels


def _tensors(segments, scores, labels, device="cpu"):
    return (
        torch.tensor(segments, dtype=torch.float64, device=device).reshape(-1, 2),
        torch.tensor(scores, dtype=torch.float64, device=device),
        torch.tensor(labels, dtype=torch.int64, device=device),
    )


# The implementations under test: soft_nms_numpy one pick at a time ("loop"), in rounds
# (with 2 candidates per round, so that a small case takes several rounds, and with the
# default), and as it chooses; the torch loop on the CPU; batched_soft_nms, which picks
# one of them by device.
NUMPY_IMPLS = {
    "loop": dict(loop_below=2**62),
    "rounds-2": dict(loop_below=0, candidates=2),
    "rounds": dict(loop_below=0),
    "numpy": {},
}
IMPLS = [*NUMPY_IMPLS, "torch-cpu"] + [f"batched-{d}" for d in DEVICES]


def _run(impl, segments, scores, labels, **kw):
    """Kept positions (list) and scores (float64 tensor) of one video, in pick order."""
    if impl in NUMPY_IMPLS or impl.startswith("rounds-"):
        if impl.startswith("rounds-"):
            kw |= dict(loop_below=0, candidates=int(impl.split("-")[1]))
        else:
            kw |= NUMPY_IMPLS[impl]
        index, score = soft_nms_numpy(
            np.array(segments, dtype=np.float64).reshape(-1, 2),
            np.array(scores, dtype=np.float64),
            np.array(labels),  # ints or floats, as given
            **kw,
        )
        assert index.dtype == np.int64 and score.dtype == np.float64
        return index.tolist(), torch.from_numpy(score)
    if impl == "torch-cpu":
        kw["backend"] = "torch"
    device = "cpu" if impl == "torch-cpu" else impl.split("-")[1]
    batch = (x[None] for x in _tensors(segments, scores, labels, device))
    index, score, kept = (x[0].cpu() for x in batched_soft_nms(*batch, **kw))
    n = int(kept.sum())
    assert kept[:n].all() and not kept[n:].any()
    return index[:n].tolist(), score[:n]


def _check_against_literal(segments, scores, labels, impl, **kw):
    ref = literal_soft_nms(segments, scores, labels, **kw)
    index, score = _run(impl, segments, scores, labels, **kw)
    assert index == [i for i, _ in ref]
    torch.testing.assert_close(
        score, torch.tensor([s for _, s in ref], dtype=torch.float64), rtol=1e-9, atol=1e-12
    )


def _random_kw(rng, method, class_agnostic):
    return dict(
        method=method,
        sigma=rng.choice([0.1, 0.5, 1.0]),
        iou_threshold=rng.choice([0.0, 0.3, 0.5, 0.7]),
        min_score=rng.choice([0.0, 0.001, 0.1, 0.3]),
        max_segments=rng.choice([None, 1, 4, 200]),
        class_agnostic=class_agnostic,
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_soft_nms_matches_literal(method, class_agnostic, impl):
    rng = random.Random(f"{method}-{class_agnostic}")  # str seeds are not salted per run
    for _ in range(60):
        segments, scores, labels = _random_case(rng, rng.choice([0, 1, 2, 5, 20, 60]))
        kw = _random_kw(rng, method, class_agnostic)
        _check_against_literal(segments, scores, labels, impl, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_soft_nms_ties_match_literal(method, class_agnostic, impl):
    # Four score values and duplicated segments: equal scores meet in every round, and
    # the lower index must go first, before and after decay (hard NMS keeps them equal).
    rng = random.Random(7)
    for _ in range(40):
        m = rng.choice([3, 10, 40, 120])
        segments, scores, labels = _random_case(rng, m, distinct=False)
        kw = _random_kw(rng, method, class_agnostic)
        _check_against_literal(segments, scores, labels, impl, **kw)


@pytest.mark.parametrize("candidates", [1, 2, 3, 8])
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_soft_nms_numpy_many_rounds_match_literal(method, candidates):
    # Larger videos and few candidates per round: many rounds, the cut of `max_segments`
    # rising as picks come in, the arrays compacted as proposals die.
    rng = random.Random(candidates)
    for _ in range(6):
        segments, scores, labels = _random_case(rng, rng.choice([150, 400]), n_labels=4)
        kw = _random_kw(rng, method, class_agnostic=rng.random() < 0.3)
        _check_against_literal(segments, scores, labels, f"rounds-{candidates}", **kw)


@pytest.mark.parametrize("mode", ["even", "dominant", "two"])
def test_soft_nms_thumos_sized_matches_literal(mode):
    # The benchmark's videos: 2,300 proposals, peaks of heavily overlapping segments.
    segments, scores, labels = thumos_like_proposals(2300, 20, mode, seed=1)
    _check_against_literal(segments, scores, labels, "batched-cpu")


def test_soft_nms_numpy_all_tied():
    # One score for all: a round's candidates must be the lowest indices among the tied.
    # A chain of segments, each overlapping the next (iou 0.2), listed right to left so
    # that index order is not time order: hard NMS keeps every other one from index 0.
    segments = [[300.0 - i, 301.5 - i] for i in range(300)]
    kw = dict(method="hard", iou_threshold=0.1, max_segments=None)
    index, _ = _run("rounds-4", segments, [0.5] * 300, [0] * 300, **kw)
    assert index == list(range(0, 300, 2))
    for method in ("gaussian", "linear", "hard"):
        for labels in ([0] * 300, [i % 3 for i in range(300)]):
            _check_against_literal(
                segments, [0.5] * 300, labels, "rounds-4", method=method, iou_threshold=0.1
            )


def test_soft_nms_numpy_rounds_equal_the_loop():
    segments, scores, labels = thumos_like_proposals(600, 5, "even", seed=2)
    base = _run("loop", segments, scores, labels)
    for candidates in (1, 5, 17, 300, 1000):
        index, score = _run(f"rounds-{candidates}", segments, scores, labels)
        assert index == base[0]
        torch.testing.assert_close(score, base[1], rtol=1e-12, atol=0)
    # ActivityNet-sized: the loop, as soft_nms_numpy chooses it.
    segments, scores, labels = thumos_like_proposals(100, 200, "dominant", seed=2)
    for impl in ("numpy", "rounds"):
        _check_against_literal(segments, scores, labels, impl, max_segments=20)


@pytest.mark.parametrize("impl", ["rounds-8", "loop"])
def test_soft_nms_numpy_odd_inputs_match_literal(impl):
    # Labels 0.1 apart, negative, or 0, 1, 2^60, 2^60 + 1 (too close for float offsets:
    # the rounds rank those); segments reversed (end < start: they never overlap) or far
    # from zero.
    relabels = [lambda c: 0.1 * c, lambda c: -3 * c, lambda c: ((c // 2) << 60) + c % 2]
    rng = random.Random(9)
    for _ in range(10):
        segments, scores, labels = _random_case(rng, 200, n_labels=4)
        for i in rng.sample(range(200), 20):
            segments[i].reverse()
        for relabel, shift in zip(relabels, (0.0, 0.0, 1e7)):
            seg = [[s + shift, e + shift] for s, e in segments]
            _check_against_literal(seg, scores, [relabel(c) for c in labels], impl)


def _peer_soft_nms(nms_1d_cpu, segments, scores, labels, *, max_segments):
    """ActionFormer's multiclass soft-NMS: its C++ op per class, then one sort and cut.

    Its C++ loop keeps the scores under ``min_score`` until the first decay, so they are
    dropped here first, as our step 1 does.
    """
    keep = torch.nonzero(scores >= 0.001).squeeze(1)
    picked, value = [], []
    for c in torch.unique(labels[keep]):
        idx = keep[labels[keep] == c]
        dets = segments.new_empty((idx.numel(), 3))
        inds = nms_1d_cpu.softnms(segments[idx], scores[idx], dets, 0.5, 0.5, 0.001, 2)
        picked.append(idx[inds])
        value.append(dets[: inds.numel(), 2])
    picked, value = torch.cat(picked), torch.cat(value)
    order = value.argsort(descending=True)[:max_segments]
    return picked[order], value[order]


@pytest.mark.parametrize(("mode", "n", "classes", "max_segments"), PEER_CASES)
def test_soft_nms_matches_actionformer(mode, n, classes, max_segments):
    nms_1d_cpu = pytest.importorskip(
        "nms_1d_cpu",
        reason="ActionFormer's compiled soft-NMS is not importable; "
        "experiments/benchmarks/postprocess.py builds it and prints how to run this test",
    )
    segments, scores, labels = thumos_like_proposals(n, classes, mode, seed=3)
    # float32, as the C++ op reads it; distinct scores, since its ties go another way.
    seg = torch.tensor(segments, dtype=torch.float32)
    sc = torch.tensor(scores, dtype=torch.float32)
    assert sc.unique().numel() == n
    lab = torch.tensor(labels)
    peer_index, peer_score = _peer_soft_nms(nms_1d_cpu, seg, sc, lab, max_segments=max_segments)
    index, score, kept = batched_soft_nms(seg[None], sc[None], lab[None], max_segments=max_segments)
    index, score = index[0][kept[0]], score[0][kept[0]]
    assert len(index) == len(peer_index)
    assert sorted(index.tolist()) == sorted(peer_index.tolist())
    torch.testing.assert_close(score, peer_score, rtol=1e-4, atol=1e-6)


def test_linear_full_overlap_with_zero_min_score():
    # Identical segments: linear decay multiplies by 1 - iou = 0. The picked (removed)
    # proposals must stay removed (no -inf * 0 = NaN resurrecting them).
    segments = torch.tensor([[1.0, 3.0]] * 3)
    scores = torch.tensor([0.9, 0.8, 0.7])
    seg, sc, lab = soft_nms(
        segments, scores, torch.zeros(3), method="linear", iou_threshold=0.5, min_score=0.0
    )
    assert sc.tolist() == [pytest.approx(0.9), 0.0, 0.0]
    assert len(seg) == 3
    _, sc, _ = soft_nms(segments, scores, torch.zeros(3), method="linear", min_score=0.001)
    assert sc.tolist() == [pytest.approx(0.9)]


def test_soft_nms_hand_worked():
    # Picks 0 (0.9). Same label: 1 ([2, 6]: inter 2, union 4 + 4 - 2 = 6, iou 1/3)
    # decays to 0.8 exp(-(1/9) / 0.5) = 0.6406 < 0.7, so 2 (other label) comes
    # second; 3 is disjoint and keeps 0.1.
    segments = torch.tensor([[0.0, 4.0], [2.0, 6.0], [1.0, 3.0], [10.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    labels = torch.tensor([0, 0, 1, 0])
    seg, sc, lab = soft_nms(segments, scores, labels, sigma=0.5)
    decayed = 0.8 * math.exp(-(1 / 9) / 0.5)
    assert lab.tolist() == [0, 1, 0, 0]
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.7, decayed, 0.1]))
    assert seg.tolist() == [[0.0, 4.0], [1.0, 3.0], [2.0, 6.0], [10.0, 11.0]]
    # Linear with threshold 0.3: 0.8 * (1 - 1/3); hard with threshold 0.3: 1 removed.
    _, sc, _ = soft_nms(segments, scores, labels, method="linear", iou_threshold=0.3)
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.7, 0.8 * 2 / 3, 0.1]))
    _, sc, _ = soft_nms(segments, scores, labels, method="linear", iou_threshold=0.4)
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.8, 0.7, 0.1]))
    _, sc, lab = soft_nms(segments, scores, labels, method="hard", iou_threshold=0.3)
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.7, 0.1]))
    # Class-agnostic hard NMS: 2 ([1, 3] inside [0, 4], iou 0.5) goes too.
    _, sc, _ = soft_nms(
        segments, scores, labels, method="hard", iou_threshold=0.3, class_agnostic=True
    )
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.1]))
    # iou exactly at the threshold counts (>=): [1, 3] in [0, 4] has iou 2 / 4 = 0.5.
    for impl in IMPLS:
        pair = ([[0.0, 4.0], [1.0, 3.0]], [0.9, 0.8], [0, 0])
        assert _run(impl, *pair, method="linear", iou_threshold=0.5)[1].tolist() == [0.9, 0.4]
        assert _run(impl, *pair, method="hard", iou_threshold=0.5)[0] == [0]
        assert _run(impl, *pair, method="hard", iou_threshold=0.50001)[0] == [0, 1]
    # min_score drops the decayed ones and the initially low ones; max_segments caps.
    _, sc, _ = soft_nms(segments, scores, labels, min_score=0.65)
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.7]))
    _, sc, _ = soft_nms(segments, scores, labels, max_segments=2)
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.7]))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_soft_nms_equals_per_video(device):
    rng = random.Random(3)
    B, M = 4, 30
    cases = [_random_case(rng, M) for _ in range(B)]
    seg = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    sc = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    lab = torch.tensor([c[2] for c in cases])
    valid = torch.ones(B, M, dtype=torch.bool)
    valid[1, 20:] = False
    valid[3, :] = False
    index, kept_score, kept = (
        x.cpu()
        for x in batched_soft_nms(
            seg.to(device), sc.to(device), lab.to(device), valid.to(device), max_segments=12
        )
    )
    for b in range(B):
        n = int(valid[b].sum())
        ref = literal_soft_nms(cases[b][0][:n], cases[b][1][:n], cases[b][2][:n], max_segments=12)
        k = int(kept[b].sum())
        assert kept[b, :k].all() and not kept[b, k:].any()
        assert index[b, :k].tolist() == [i for i, _ in ref]
        torch.testing.assert_close(
            kept_score[b, :k], torch.tensor([s for _, s in ref], dtype=torch.float64)
        )


def test_soft_nms_argument_errors():
    s = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="gaussian, linear, hard"):
        soft_nms(s, torch.ones(2), torch.zeros(2), method="box")
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(s, torch.ones(2), torch.zeros(2), sigma=0.0)
    with pytest.raises(ValueError, match="candidates"):
        soft_nms_numpy(s.numpy(), np.ones(2), np.zeros(2), candidates=0)
    with pytest.raises(ValueError, match="max_segments must be >= 0"):
        NMSSettings(max_segments=-1)
    with pytest.raises(TypeError, match="iou_treshold"):  # a typo names itself
        soft_nms(s, torch.ones(2), torch.zeros(2), iou_treshold=0.3)
    with pytest.raises(ValueError, match="backend 'numpy'"):
        batched_soft_nms(s[None], torch.ones(1, 2), torch.zeros(1, 2), backend="numpy")
    with pytest.raises(ValueError, match="finite"):
        soft_nms_numpy(np.array([[0.0, np.nan], [0, 1]]), np.ones(2), np.zeros(2))


def test_batched_soft_nms_non_finite_segments_take_the_torch_loop():
    # A NaN segment (a diverged network) is not for the NumPy rounds; that video gets the
    # torch loop's answer, the others the NumPy one.
    rng = random.Random(4)
    seg, sc, lab = (
        torch.stack(x) for x in zip(*(_tensors(*_random_case(rng, 30)) for _ in range(2)))
    )
    seg[1, 3, 1] = math.nan
    got = batched_soft_nms(seg, sc, lab, max_segments=10)
    loop = batched_soft_nms(seg, sc, lab, max_segments=10, backend="torch")
    for g, t in zip(got, loop):
        torch.testing.assert_close(g[1], t[1])
    index, _ = _run("numpy", *(x.tolist() for x in (seg[0], sc[0], lab[0])), max_segments=10)
    assert got[0][0].tolist() == index


def test_batched_soft_nms_half_precision():
    seg, sc, lab = _tensors(*_random_case(random.Random(5), 40))
    seg, sc = seg.bfloat16(), sc.bfloat16()
    index, score, kept = batched_soft_nms(seg[None], sc[None], lab[None])
    ref_index, ref_score, ref_kept = batched_soft_nms(
        seg[None].double(), sc[None].double(), lab[None]
    )
    assert score.dtype == torch.bfloat16 and kept.sum() > 10
    assert torch.equal(index[kept], ref_index[ref_kept])
    torch.testing.assert_close(score[kept], ref_score[ref_kept].bfloat16())


def test_segment_iou_matches_literal():
    rng = random.Random(11)
    a = [_random_case(rng, 1)[0][0] for _ in range(300)]
    b = [_random_case(rng, 1)[0][0] for _ in range(300)]
    got = segment_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    ref = torch.tensor([literal_tiou(x, y) for x, y in zip(a, b)], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    # Hand-worked: disjoint -> 0; union is the sum of lengths, not the hull.
    pairs = torch.tensor(
        [[[0.0, 2.0], [3.0, 4.0]], [[0.0, 2.0], [1.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]
    )
    torch.testing.assert_close(
        segment_iou(pairs[:, 0], pairs[:, 1]), torch.tensor([0.0, 0.25, 0.0])
    )


def test_offsets_to_segments_hand_worked():
    offsets = torch.tensor([[[0.5, 0.25], [0.0, 1.0], [1.0, 0.0]]])
    expected = torch.tensor([[[-2.0, 1.0], [1.0, 5.0], [-2.0, 2.0]]])
    torch.testing.assert_close(offsets_to_segments(offsets, 4.0), expected)
    two = torch.cat([offsets, offsets])
    got = offsets_to_segments(two, torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], torch.tensor([[-1.0, 0.5], [1.0, 3.0], [0.0, 2.0]]))


def _mapping_tensors(maps):
    return [
        torch.tensor([getattr(m, k) for m in maps], dtype=torch.float64)
        for k in ("scale", "offset", "duration")
    ]


def test_decode_hand_worked():
    maps = [
        TimeMapping.from_clip(fps=30, stride=4, window=16, duration=3.0),
        TimeMapping.from_clip(fps=25, stride=4, window=16, duration=10.0),
    ]
    seg_idx = torch.tensor(
        [
            [[3.0, 4.5], [-5.0, 1.0], [21.0, 30.0]],  # 0.6667..0.8667 s; clamp at 0; clamp at 3
            [[0.0, 2.0], [7.0, 9.0], [99.0, 99.0]],  # last step is padding
        ]
    )
    score = torch.tensor([[0.9, 0.5, 0.1], [0.3, 0.2, 1.0]])
    cls = torch.tensor(
        [
            [[0.5, 0.1, 0.3, 0.1], [0.1, 0.2, 0.2, 0.5], [0.0, 0.4, 0.4, 0.2]],
            [[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]],
        ]
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    dec = decode(seg_idx, score, cls, mask, *_mapping_tensors(maps))
    for b, m in enumerate(maps):
        np.testing.assert_allclose(
            dec.segments[b].numpy(), m.to_seconds(seg_idx[b].numpy()), rtol=1e-6
        )
    np.testing.assert_allclose(dec.segments[0, 0].numpy(), [20 / 30, 26 / 30], rtol=1e-6)
    assert dec.segments[0, 1].tolist() == [0.0, pytest.approx(12 / 30)]
    assert dec.segments[0, 2].tolist() == [3.0, 3.0]
    # Background column 0 is never the label, even when it is the largest; ties -> lowest.
    assert dec.labels.tolist() == [[1, 2, 0], [0, 2, 0]]
    torch.testing.assert_close(dec.cls_score, torch.tensor([[0.3, 0.5, 0.4], [0.1, 1.0, 1.0]]))
    assert dec.mask.tolist() == mask.tolist()
    torch.testing.assert_close(dec.score, score)


def test_fuse_scores_hand_computed():
    p_r, p_c = torch.tensor([0.8, 0.25]), torch.tensor([0.2, 1.0])
    torch.testing.assert_close(fuse_scores(p_r, p_c), p_r)
    torch.testing.assert_close(fuse_scores(p_r, p_c, "arithmetic"), torch.tensor([0.5, 0.625]))
    torch.testing.assert_close(fuse_scores(p_r, p_c, "geometric"), torch.tensor([0.4, 0.5]))
    expected = torch.tensor([0.8 * (1 - math.exp(-0.4)), 0.25 * (1 - math.exp(-2.0))])
    torch.testing.assert_close(fuse_scores(p_r, p_c, "normalized_product", zeta=2.0), expected)
    with pytest.raises(ValueError, match="regression, arithmetic, geometric, normalized_product"):
        fuse_scores(p_r, p_c, "harmonic")


def test_topk_matches_literal_with_ties():
    rng = random.Random(5)
    for _ in range(100):
        m = rng.randrange(0, 30)
        scores = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(m)]
        k = rng.randrange(0, 35)
        seg = torch.arange(2 * m, dtype=torch.float64).view(m, 2)
        s, sc, lab = topk(seg, torch.tensor(scores, dtype=torch.float64), torch.arange(m), k)
        ref = literal_topk(scores, k)
        assert lab.tolist() == ref
        assert sc.tolist() == [scores[i] for i in ref]
        assert s.tolist() == seg[ref].reshape(-1, 2).tolist()


def _reference_postprocess(out, lengths, maps, W, **kw):
    """Per video, per step, with the literal loops and TimeMapping.to_seconds."""
    results = []
    for b, (n, m) in enumerate(zip(lengths, maps)):
        segs, scores, labels = [], [], []
        for t in range(n):
            a, e = out.offsets[b, t].tolist()
            segs.append(m.to_seconds([t - a * W, t + e * W]).tolist())
            p_r = 1 / (1 + math.exp(-out.score_logits[b, t].item()))
            logits = out.cls_logits[b, t].tolist()
            probs = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits][1:]
            label = max(range(len(probs)), key=lambda k, pr=probs: (pr[k], -k))
            labels.append(label)
            if kw.get("fusion") == "arithmetic":
                scores.append((p_r + probs[label]) / 2)
            else:
                scores.append(p_r)
        if kw["nms"] == "none":
            idx = literal_topk(scores, kw["top_k"])
            kept = [(i, scores[i]) for i in idx]
        else:
            method = "hard" if kw["nms"] == "hard" else kw.get("nms_method", "gaussian")
            kept = literal_soft_nms(
                segs,
                scores,
                labels,
                method=method,
                max_segments=kw["max_segments"],
                class_agnostic=kw.get("class_agnostic", False),
            )
            if kw["top_k"] is not None:
                kept = kept[: kw["top_k"]]
        results.append((kept, segs, labels))
    return results


@pytest.mark.parametrize(
    "kw",
    [
        {"nms": "soft", "max_segments": 200, "top_k": None},
        {"nms": "soft", "max_segments": 5, "top_k": None},
        {"nms": "soft", "max_segments": 200, "top_k": 3, "class_agnostic": True},
        {"nms": "soft", "nms_method": "linear", "max_segments": 200, "top_k": None},
        {"nms": "hard", "max_segments": 200, "top_k": None, "fusion": "arithmetic"},
        {"nms": "none", "max_segments": 200, "top_k": 4},
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_postprocess_batch_matches_reference(kw, device):
    torch.manual_seed(0)
    lengths, T, K, W = [12, 7, 9], 12, 4, 3.0
    maps = [
        TimeMapping.from_clip(fps=30, stride=4, window=16, duration=1.7),
        TimeMapping.from_clip(fps=25, stride=4, window=16, duration=2.0),
        TimeMapping.from_resize(length=9, duration=5.0),
    ]
    out = SaladOutput(
        torch.rand(3, T, 2, dtype=torch.float64),
        torch.randn(3, T, dtype=torch.float64) * 2,
        torch.randn(3, T, K + 1, dtype=torch.float64),
    )
    frame_mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    out.score_logits[~frame_mask] = 50.0  # padded steps would win if they leaked
    scale, offset, duration = _mapping_tensors(maps)
    got = postprocess_batch(
        segments=offsets_to_segments(out.offsets.to(device), W),
        score_logits=out.score_logits.to(device),
        cls_logits=out.cls_logits.to(device),
        frame_mask=frame_mask.to(device),
        scale=scale.to(device),
        offset=offset.to(device),
        duration=duration.to(device),
        **kw,
    )
    ref = _reference_postprocess(out, lengths, maps, W, **kw)
    assert len(got) == 3
    for b, (g, (kept, segs, labels)) in enumerate(zip(got, ref)):
        idx = [i for i, _ in kept]
        assert len(idx) > 1
        assert g.labels.dtype == np.int64 and g.video_id == str(b)  # default ids: positions
        assert g.labels.tolist() == [labels[i] for i in idx]
        torch.testing.assert_close(
            torch.from_numpy(g.scores), torch.tensor([s for _, s in kept], dtype=torch.float64)
        )
        torch.testing.assert_close(
            torch.from_numpy(g.segments),
            torch.tensor([segs[i] for i in idx], dtype=torch.float64).reshape(-1, 2),
        )
        assert bool((g.scores[1:] <= g.scores[:-1]).all())


def test_postprocess_batch_pre_nms_topk_and_errors():
    torch.manual_seed(1)
    score_logits = torch.randn(1, 10)
    args = dict(
        segments=offsets_to_segments(torch.rand(1, 10, 2), 2.0),
        score_logits=score_logits,
        cls_logits=torch.randn(1, 10, 3),
        frame_mask=torch.ones(1, 10, dtype=torch.bool),
        scale=torch.ones(1, dtype=torch.float64),
        offset=torch.zeros(1, dtype=torch.float64),
        duration=torch.full((1,), 100.0, dtype=torch.float64),
    )
    got = postprocess_batch(nms="none", pre_nms_topk=3, video_ids=["v"], **args)[0]
    best3 = torch.sigmoid(score_logits[0]).sort(descending=True).values[:3]
    torch.testing.assert_close(torch.from_numpy(got.scores).float(), best3)
    assert got.video_id == "v" and got.best_score == pytest.approx(float(best3[0]))
    # pre_nms_topk=3 then soft-NMS: at most those 3 proposals survive.
    assert len(postprocess_batch(pre_nms_topk=3, min_score=0.0, **args)[0].scores) == 3
    # Half-precision outputs (autocast) are decoded in float32: the sigmoid of the
    # bfloat16 logits taken in float32, not rounded to bfloat16 again.
    half = dict(args, score_logits=score_logits.bfloat16())
    decoded = torch.sigmoid(score_logits.bfloat16().float()[0]).sort(descending=True).values
    scores = postprocess_batch(nms="none", **half)[0].scores
    assert scores.tolist() == decoded.double().tolist()
    assert scores.tolist() != decoded.bfloat16().double().tolist()
    with pytest.raises(ValueError, match="2 ids for a batch of 1"):
        postprocess_batch(video_ids=["a", "b"], **args)
    with pytest.raises(ValueError, match="soft, hard, none"):
        postprocess_batch(nms="greedy", **args)
    with pytest.raises(ValueError, match="gaussian, linear"):
        postprocess_batch(nms_method="hard", **args)
    with pytest.raises(ValueError, match="regression, arithmetic"):
        postprocess_batch(fusion="max", **args)
