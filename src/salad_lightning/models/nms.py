"""Class-aware soft-NMS (docs/method.md §5): a NumPy version for the CPU, a torch loop for other devices.

Both give the result of the greedy loop that :func:`soft_nms` documents: pick the highest
current score, decay the proposals it overlaps, repeat. :func:`batched_soft_nms` sends CPU
tensors to :func:`soft_nms_numpy`, one video at a time, and everything else (CUDA) to a
torch loop (``backend="torch"``) that runs the greedy loop on the whole batch at once.
The settings every entry point takes are the fields of :class:`NMSSettings`.

:func:`soft_nms_numpy` does not follow the loop one pick at a time. Call a proposal *x*
hit by *z* when picking *z* would change or remove *x*'s score (same class unless
class-agnostic, and a positive tIoU for Gaussian decay, ``iou >= iou_threshold`` for the
other methods). Rank proposals by current score, ties to the lower index. If *x* ranks
above every alive proposal that it is hit by, the loop picks *x* with its current score
and before any of them: their scores can only fall, and *x*'s changes only when one of
them is picked. So a round picks all such proposals at once (among the top ones by
score: those outside rank below) and applies their decays together, which is what the
loop does before it picks any proposal they hit. Ordering all the picks by rank then
gives the loop's sequence, ties included: when the loop picks *x*, every proposal still
alive ranks below it and can only fall. The benchmark's THUMOS14-sized videos (2,300
proposals, 200 kept) take 6-10 rounds instead of 200 picks; small problems (an
ActivityNet-sized video) go one pick at a time, which is cheaper there.
``tests/test_postprocess.py`` checks both against a plain loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

NMS_METHODS = ("gaussian", "linear", "hard")

# Candidates per round of soft_nms_numpy (the top ones by current score): more finds
# more picks per round (THUMOS14-sized videos: 9-13 rounds with 32, 6-10 with 64, 4-9
# with 128) but costs candidates^2 per round.
ROUND_CANDIDATES = 64
# Under this many proposals x kept, soft_nms_numpy picks one at a time: a pick costs
# about twenty NumPy calls on arrays of the video's length, a round about sixty, and an
# ActivityNet-sized video (100 proposals, 20 kept) takes 8-11 rounds for its 20 picks.
LOOP_BELOW = 16384
_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class NMSSettings:
    """The settings of soft-NMS (semantics in :func:`soft_nms`), checked once here.

    Every entry point (:func:`soft_nms`, :func:`batched_soft_nms`,
    :func:`soft_nms_numpy`) takes these fields as keyword arguments.
    """

    method: str = "gaussian"
    sigma: float = 0.5
    iou_threshold: float = 0.5
    min_score: float = 0.001
    max_segments: int | None = 200
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if self.method not in NMS_METHODS:
            raise ValueError(
                f"unknown NMS method {self.method!r}; allowed: {', '.join(NMS_METHODS)}"
            )
        if self.method == "gaussian" and not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 for Gaussian soft-NMS, found {self.sigma}")
        if self.max_segments is not None and self.max_segments < 0:
            raise ValueError(f"max_segments must be >= 0 or None, found {self.max_segments}")

    def cap(self, m: int) -> int:
        """How many of ``m`` proposals can be kept."""
        return m if self.max_segments is None else min(self.max_segments, m)


def _pair_iou(s1, e1, n1, s2, e2, n2):
    """tIoU of segments (s, e) with lengths n = e - s, as tests/_literal_nms.py computes it."""
    inter = np.minimum(e1, e2) - np.maximum(s1, s2)
    np.maximum(inter, 0.0, out=inter)
    # inter <= union, so a zero union has a zero intersection: 0 / tiny = 0.
    return inter / np.maximum(n1 + n2 - inter, _TINY)


def _hits(iou: np.ndarray, method: str, iou_threshold: float) -> np.ndarray:
    """Where a pick changes the other proposal's score (a superset would also be correct)."""
    if method == "gaussian":
        return iou > 0.0
    if method == "linear":  # 1 - 0 = 1 changes nothing, whatever the threshold
        return (iou >= iou_threshold) & (iou > 0.0)
    return iou >= iou_threshold


def soft_nms_numpy(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    candidates: int = ROUND_CANDIDATES,
    loop_below: int = LOOP_BELOW,
    **settings: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS of one video in NumPy: segments (M, 2), scores (M,), labels (M,), valid (M,).

    Returns ``(index, score)``: the positions (into M) of the kept proposals in pick order
    and their scores when picked, float64. Semantics as :func:`soft_nms`. Segments must
    be finite. Small problems (proposals x kept < ``loop_below``) go one pick at a time,
    the others in rounds (this module's docstring) of ``candidates`` (>= 1) proposals.
    Neither changes the result, only the speed. ``settings``: :class:`NMSSettings`.
    """
    return _numpy_one(
        segments, scores, labels, valid, NMSSettings(**settings), candidates, loop_below
    )


def _numpy_one(segments, scores, labels, valid, o: NMSSettings, candidates, loop_below):
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, found {candidates}")
    scores = np.asarray(scores, dtype=np.float64)
    keep = scores >= o.min_score
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    keep = np.flatnonzero(keep)
    cap = o.cap(keep.size)
    if cap == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    seg = np.asarray(segments, dtype=np.float64)
    s, e = seg[:, 0][keep], seg[:, 1][keep]  # (column gathers are cheaper than rows)
    if not (np.isfinite(s).all() and np.isfinite(e).all()):
        raise ValueError("soft_nms_numpy needs finite segments")
    lab = np.zeros(keep.size, np.int64) if o.class_agnostic else np.asarray(labels)[keep]
    args = (s, e, scores[keep], lab, keep)
    kw = dict(method=o.method, sigma=o.sigma, iou_threshold=o.iou_threshold, min_score=o.min_score)
    if keep.size * cap < loop_below:
        return _loop(*args, cap=cap, **kw)
    return _rounds(*args, cap=cap, candidates=candidates, **kw)


def _loop(s, e, cur, lab, idx, *, cap, method, sigma, iou_threshold, min_score):
    """The greedy loop itself, one pick at a time (arrays in index order: argmax ties)."""
    length = e - s
    picked: list[int] = []
    values: list[float] = []
    with np.errstate(invalid="ignore"):  # -inf * 0 = NaN marks a removed proposal too
        while len(picked) < cap:
            b = int(cur.argmax())
            if cur[b] == -math.inf:
                break
            picked.append(b)
            values.append(cur[b])
            iou = _pair_iou(s, e, length, s[b], e[b], length[b])
            same = lab == lab[b]
            if method == "gaussian":
                cur *= np.where(same, np.exp(-(iou * iou) / sigma), 1.0)
            elif method == "linear":
                cur *= np.where(same & (iou >= iou_threshold), 1.0 - iou, 1.0)
            else:
                cur[same & (iou >= iou_threshold)] = -math.inf
            cur[b] = -math.inf
            cur = np.where(cur >= min_score, cur, -math.inf)  # NaN fails too
    return idx[picked], np.array(values, dtype=np.float64)


def _rounds(s, e, cur, lab, idx, *, cap, candidates, method, sigma, iou_threshold, min_score):
    """The rounds of this module's docstring."""
    # Sorted by (class, start), the proposals a pick can hit form one contiguous run of
    # its class, found by two binary searches: starts <= its end, and running maximum of
    # the ends >= its start. Whole class numbers times a power of two above twice the
    # time span put every class on one sorted axis, in a stretch of its own. Rounding is
    # monotone, so these runs still contain every overlapping proposal; the tIoU computed
    # afterwards decides.
    if np.issubdtype(lab.dtype, np.integer) and lab.max() - lab.min() < 2**20:
        cls = lab - lab.min()
    else:  # labels that are not integers, or too far apart to stay exact as floats
        cls = np.unique(lab, return_inverse=True)[1]
    low = min(s.min(), e.min())
    offset = cls * 2.0 ** (math.frexp(max(s.max(), e.max()) - low)[1] + 1)
    key_s = (s - low) + offset
    order = np.argsort(key_s)
    s, e, cur, idx, offset, key_s = (a[order] for a in (s, e, cur, idx, offset, key_s))
    length = e - s
    key_e = (e - low) + offset
    key_reach = np.maximum.accumulate(key_e)
    # Hard NMS with iou_threshold <= 0 removes a pick's whole class, overlapping or not.
    whole_class = method == "hard" and iou_threshold <= 0

    picked_idx: list[np.ndarray] = []
    picked_val: list[np.ndarray] = []
    n_picked = 0
    floor = min_score
    n_alive = cur.size
    lower = np.tri(2 * candidates, 2 * candidates, -1, dtype=bool)  # a round has <= 2x
    with np.errstate(invalid="ignore"):  # -inf * 0 = NaN marks a removed proposal too
        while n_alive > 0:
            # The candidates: the top ones by current score, with every tie of the last.
            m = cur.size
            if n_alive > candidates:
                cut = np.partition(cur, m - candidates)[m - candidates]
                cand = np.flatnonzero(cur >= cut)
                if cand.size > 2 * candidates:  # many ties: keep the lower indices
                    above = cand[cur[cand] > cut]
                    tied = cand[cur[cand] == cut]
                    tied = tied[np.argsort(idx[tied], kind="stable")]
                    cand = np.concatenate((above, tied[: candidates - above.size]))
            else:
                cand = np.flatnonzero(cur > -math.inf)
            cand = cand[np.lexsort((idx[cand], -cur[cand]))]  # rank order

            # Winners: no higher-ranked candidate hits them. Proposals outside the
            # candidates rank below all of them, so they cannot matter.
            cs, ce = s[cand], e[cand]
            if method == "gaussian":  # iou > 0, or a positive overlap: fewer operations
                hit = np.minimum.outer(ce, ce) > np.maximum.outer(cs, cs)
            else:
                cn = length[cand]
                iou = _pair_iou(cs[:, None], ce[:, None], cn[:, None], cs, ce, cn)
                hit = _hits(iou, method, iou_threshold)
            co = offset[cand]
            hit &= co[:, None] == co
            hit &= lower[: cand.size, : cand.size]
            win = cand[~hit.any(axis=1)]
            picked_idx.append(idx[win])
            picked_val.append(cur[win])
            n_picked += win.size

            # Decay every proposal in the winners' runs: (winner, target) pairs.
            if whole_class:
                lo = np.searchsorted(offset, offset[win], "left")
                hi = np.searchsorted(offset, offset[win], "right")
            else:
                lo = np.searchsorted(key_reach, key_s[win], "left")
                hi = np.searchsorted(key_s, key_e[win], "right")
            count = np.maximum(hi - lo, 0)
            stop = np.cumsum(count)
            tgt = np.repeat(lo - stop + count, count) + np.arange(stop[-1])
            own = np.repeat(win, count)
            iou = _pair_iou(s[tgt], e[tgt], length[tgt], s[own], e[own], length[own])
            if method == "gaussian":
                # prod exp(-iou^2 / sigma) as one exp of the sum (equal to rounding).
                cur *= np.exp(np.bincount(tgt, iou * iou, minlength=m) * (-1.0 / sigma))
            else:
                hit = iou >= iou_threshold
                if method == "linear":
                    np.multiply.at(cur, tgt[hit], 1.0 - iou[hit])
                else:
                    cur[tgt[hit]] = -math.inf
            cur[win] = -math.inf

            # With `cap` picks in hand, the cap-th largest bounds the last kept score from
            # below: a proposal under it can only be picked after the cut, and it changes
            # nothing before its own pick, so it can go.
            if n_picked >= cap:
                values = np.concatenate(picked_val)
                floor = max(min_score, np.partition(values, values.size - cap)[values.size - cap])
            cur = np.where(cur >= floor, cur, -math.inf)  # NaN fails too
            n_alive = np.count_nonzero(cur > -math.inf)
            if 0 < n_alive <= m // 2:  # drop the dead, so rounds cost less
                live = np.flatnonzero(cur > -math.inf)
                cur, s, e, length, idx, offset, key_s, key_e, key_reach = (
                    a[live] for a in (cur, s, e, length, idx, offset, key_s, key_e, key_reach)
                )

    index = np.concatenate(picked_idx)
    value = np.concatenate(picked_val)
    order = np.lexsort((index, -value))[:cap]
    return index[order], value[order]


def batched_soft_nms(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor | None = None,
    *,
    backend: str = "auto",
    **settings: object,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS on B videos at once: segments (B, M, 2), scores/labels/valid (B, M).

    Returns ``(index, score, kept)``, each (B, S) with ``S = min(max_segments, M)``:
    ``index[b, j]`` is the position (into M) of the j-th kept proposal of video b,
    ``score[b, j]`` its score when it was picked (after decay), ``kept[b, j]`` False
    for the slots past the end of video b's list. Semantics as :func:`soft_nms`;
    ``settings``: the fields of :class:`NMSSettings`.

    ``backend="auto"``: CPU tensors go through :func:`soft_nms_numpy` video by video (a
    video with a non-finite segment through the torch loop), other devices through the
    torch loop. ``backend="torch"``: the torch loop on any device (what a GPU runs).
    """
    o = NMSSettings(**settings)
    _check_shapes(segments, scores)
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown soft-NMS backend {backend!r}; allowed: auto, torch")
    if backend == "torch" or segments.device.type != "cpu":
        return _torch_loop(segments, scores, labels, valid, o)
    B, M = scores.shape
    S = o.cap(M)
    # float64 here: NumPy has no bfloat16, and soft_nms_numpy works in float64 anyway.
    seg_np, score_np = (x.detach().double().numpy() for x in (segments, scores))
    label_np = labels.detach().numpy()
    valid_np = None if valid is None else valid.detach().numpy()
    index = np.zeros((B, S), dtype=np.int64)
    kept_score = np.full((B, S), -math.inf)
    for b in range(B):
        v = None if valid_np is None else valid_np[b]
        if np.isfinite(seg_np[b]).all():
            i, sc = _numpy_one(
                seg_np[b], score_np[b], label_np[b], v, o, ROUND_CANDIDATES, LOOP_BELOW
            )
        else:  # keep the torch loop's handling of NaN / inf segments
            one = None if valid is None else valid[b : b + 1]
            i, sc, k = _torch_loop(
                segments[b : b + 1], scores[b : b + 1], labels[b : b + 1], one, o
            )
            i, sc = i[0][k[0]].numpy(), sc[0][k[0]].double().numpy()
        index[b, : i.size] = i
        kept_score[b, : sc.size] = sc
    kept_score = torch.from_numpy(kept_score).to(scores.dtype)
    return torch.from_numpy(index), kept_score, kept_score > -math.inf


def _check_shapes(segments: Tensor, scores: Tensor) -> None:
    if segments.dim() != 3 or segments.shape[-1] != 2 or segments.shape[:2] != scores.shape:
        raise ValueError(
            f"expected segments (B, M, 2) and scores (B, M), found "
            f"{tuple(segments.shape)} and {tuple(scores.shape)}"
        )


def _torch_loop(
    segments: Tensor, scores: Tensor, labels: Tensor, valid: Tensor | None, o: NMSSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batched_soft_nms` as one torch loop over the batch, on any device.

    One iteration per kept slot, each O(B * M) tensor work (about 20 small ops)
    with no host sync: the IoU row of the picked proposal is computed on the fly,
    so memory is O(B * M), not O(M^2); total O(S * B * M). The loop stops early
    once every video is exhausted (checked every iteration on CPU, every 16 on
    other devices, where the check is a sync). On a GPU it is launch-bound, so the
    batch is what pays (``experiments/benchmarks/postprocess.py``).
    """
    method, sigma, iou_threshold, min_score = o.method, o.sigma, o.iou_threshold, o.min_score
    B, M = scores.shape
    S = o.cap(M)
    neg_inf = -math.inf
    # A removed proposal holds -inf: one tensor carries both scores and liveness.
    keep = scores >= min_score
    if valid is not None:
        keep &= valid.bool()
    cur = torch.where(keep, scores, neg_inf)
    starts, ends = segments[..., 0], segments[..., 1]
    lengths = ends - starts
    tiny = torch.finfo(segments.dtype).tiny
    index = torch.zeros(B, S, dtype=torch.long, device=scores.device)
    kept_score = torch.full((B, S), neg_inf, dtype=scores.dtype, device=scores.device)
    check_every = 1 if scores.device.type == "cpu" else 16
    for j in range(S):
        # argmax returns the first maximum: ties go to the lower index. (Not
        # max(dim=1): on CPU, for 2-7 rows it takes a threaded path that costs ms
        # when the cores are busy.)
        best = cur.argmax(dim=1, keepdim=True)
        value = cur.gather(1, best)
        if (j + 1) % check_every == 0 and bool(torch.isneginf(value).all()):
            break  # every video is exhausted
        index[:, j : j + 1] = best
        kept_score[:, j : j + 1] = value
        cur = cur.scatter(1, best, neg_inf)
        # segment_iou against the picked segment, inlined to save kernel launches.
        s, e = starts.gather(1, best), ends.gather(1, best)
        inter = (torch.minimum(ends, e) - torch.maximum(starts, s)).clamp_(min=0)
        iou = (inter / (lengths + (e - s) - inter).clamp_(min=tiny)).to(scores.dtype)
        same = None if o.class_agnostic else labels == labels.gather(1, best)
        if method == "gaussian":
            # exp(-iou^2 / sigma) as a power of 2: on CPU, torch.exp of a few thousand
            # elements goes through a multithreaded path that can be 1000x slower
            # when the cores are busy (measured: 8 ms vs 3 us); exp2 does not.
            exponent = iou.square_().mul_(-1.0 / (sigma * math.log(2.0)))
            if same is not None:
                exponent = exponent.masked_fill_(~same, 0.0)
            cur = cur * exponent.exp2_()
        else:
            hit = iou >= iou_threshold
            if same is not None:
                hit &= same
            if method == "linear":
                cur = cur * (1.0 - iou * hit)
            else:
                cur = cur.masked_fill(hit, neg_inf)
        # Drop what fell under min_score. Also turns -inf * 0 = NaN back into -inf,
        # since NaN >= min_score is False.
        cur = torch.where(cur >= min_score, cur, neg_inf)
    return index, kept_score, kept_score > neg_inf


def soft_nms(
    segments: Tensor, scores: Tensor, labels: Tensor, **settings: object
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS of one video: segments (M, 2), scores (M,), labels (M,).

    ``settings`` are the fields of :class:`NMSSettings` (by default Gaussian decay,
    ``sigma`` 0.5, ``iou_threshold`` 0.5, ``min_score`` 0.001, ``max_segments`` 200,
    per class). Returns the kept ``(segments, scores, labels)`` sorted by score descending, the
    scores being the decayed ones. Semantics:

    1. proposals with ``score < min_score`` are dropped at the start;
    2. pick the highest remaining score (ties: lower original index first) and keep
       it;
    3. decay the remaining proposals with the picked one's label (every remaining
       proposal if ``class_agnostic``), ``iou`` being the evaluator's tIoU with the
       picked one (intersection / (sum of lengths - intersection), 0 if that is 0): ``gaussian``: ``score *= exp(-iou**2 / sigma)``; ``linear``:
       ``score *= 1 - iou`` if ``iou >= iou_threshold``; ``hard``: removed if
       ``iou >= iou_threshold``;
    4. drop the remaining proposals whose score is now below ``min_score``;
    5. repeat from 2 until nothing remains or ``max_segments`` are kept.

    Scores only decrease, so the picked scores come out non-increasing. Runs through
    :func:`batched_soft_nms` (NumPy on the CPU, the torch loop elsewhere).
    """
    index, kept_score, kept = batched_soft_nms(
        segments.unsqueeze(0), scores.unsqueeze(0), labels.unsqueeze(0), **settings
    )
    index = index[0][kept[0]].to(segments.device)
    return segments[index], kept_score[0][kept[0]], labels[index]
