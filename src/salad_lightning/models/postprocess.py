"""From network outputs to scored segments in seconds (SPEC §2, §5).

Everything here is plain torch, vectorised over the batch and the steps, and runs on
whatever device the network outputs live on; :func:`postprocess_batch` moves the
final, small result to the CPU once.

Pipeline of :func:`postprocess_batch`: offsets -> index-unit segments
(:func:`offsets_to_segments`) -> seconds, label and class confidence per valid step
(:func:`decode`) -> fused score (:func:`fuse_scores`) -> optional pre-NMS top-k ->
soft/hard NMS (:func:`batched_soft_nms`) or plain top-k -> per-video dicts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from salad_lightning.data.mapping import index_to_seconds

FUSION_MODES = ("regression", "arithmetic", "geometric", "normalized_product")
NMS_METHODS = ("gaussian", "linear", "hard")
NMS_MODES = ("soft", "hard", "none")
SOFT_METHODS = ("gaussian", "linear")


def offsets_to_segments(offsets: Tensor, max_offset: float | Tensor) -> Tensor:
    """``(a_t, b_t)`` (B, T, 2) in [0, 1] -> segments ``[t - a_t W, t + b_t W]`` (B, T, 2).

    Index units; ``W = max_offset`` is a number, a 0-d tensor or a (B,) tensor.
    """
    T = offsets.shape[-2]
    t = torch.arange(T, device=offsets.device, dtype=offsets.dtype)
    W = torch.as_tensor(max_offset, device=offsets.device, dtype=offsets.dtype)
    if W.dim() == 1:
        W = W.view(-1, 1)
    return torch.stack((t - offsets[..., 0] * W, t + offsets[..., 1] * W), dim=-1)


def segment_iou(a: Tensor, b: Tensor) -> Tensor:
    """Evaluator's tIoU of segments ``a`` (..., 2) and ``b`` (..., 2), broadcast.

    ``intersection / union`` with ``union = len(a) + len(b) - intersection``
    (the ActivityNet evaluator's formula, so disjoint segments have union equal to
    the sum of their lengths); 0 where the union is 0.
    """
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    # inter <= union, so a zero union has a zero intersection: 0 / tiny = 0.
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


class Decoded(NamedTuple):
    """One proposal per step of a padded batch; ``mask`` marks the valid ones."""

    segments: Tensor  # (B, T, 2) seconds, clamped to [0, duration]
    score: Tensor  # (B, T) self-assessment score p_r
    cls_score: Tensor  # (B, T) p_c, probability of the predicted action class
    labels: Tensor  # (B, T) int64 action class 0..K-1 (network column - 1)
    mask: Tensor  # (B, T) bool, False at padded steps


def decode(
    segments_idx: Tensor,
    score: Tensor,
    cls_probs: Tensor,
    frame_mask: Tensor,
    scale: Tensor,
    offset: Tensor,
    duration: Tensor,
) -> Decoded:
    """Turn per-step predictions into proposals in seconds (SPEC §5).

    ``segments_idx`` (B, T, 2) index units, ``score`` (B, T) in [0, 1], ``cls_probs``
    (B, T, K+1) softmax output (column 0 background), ``frame_mask`` (B, T),
    ``scale``/``offset``/``duration`` (B,) the per-video time mapping. The label is
    the argmax over the action columns 1..K (ties: lowest class), returned as 0..K-1;
    ``cls_score`` is that column's probability.
    """
    if cls_probs.shape[-1] < 2:
        raise ValueError(
            f"cls_probs needs K+1 >= 2 columns (column 0 = background), found {cls_probs.shape[-1]}"
        )
    action = cls_probs[..., 1:]
    labels = action.argmax(dim=-1)  # first maximum on ties
    cls_score = action.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    seconds = index_to_seconds(segments_idx, scale, offset, duration)
    return Decoded(seconds, score, cls_score, labels, frame_mask.bool())


def fuse_scores(p_r: Tensor, p_c: Tensor, mode: str = "regression", zeta: float = 1.0) -> Tensor:
    """Proposal score from the self-assessment ``p_r`` and class confidence ``p_c``.

    ``regression``: p_r (paper default); ``arithmetic``: (p_r + p_c) / 2;
    ``geometric``: sqrt(p_r p_c); ``normalized_product``: p_r (1 - exp(-zeta p_c)).
    """
    if mode == "regression":
        return p_r
    if mode == "arithmetic":
        return 0.5 * (p_r + p_c)
    if mode == "geometric":
        return torch.sqrt(p_r * p_c)
    if mode == "normalized_product":
        return p_r * (1.0 - torch.exp(-zeta * p_c))
    raise ValueError(f"unknown score fusion mode {mode!r}; allowed: {', '.join(FUSION_MODES)}")


def _sort_desc(scores: Tensor) -> Tensor:
    """Indices sorting ``scores`` descending along the last dim; ties keep index order."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def topk(segments: Tensor, scores: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` highest-scoring proposals of one video, sorted by score descending.

    Ties are broken by the lower original index first.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, found {k}")
    order = _sort_desc(scores)[:k]
    return segments[order], scores[order], labels[order]


def batched_soft_nms(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor | None = None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    min_score: float = 0.001,
    max_segments: int | None = 200,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS on B videos at once: segments (B, M, 2), scores/labels/valid (B, M).

    Returns ``(index, score, kept)``, each (B, S) with ``S = min(max_segments, M)``:
    ``index[b, j]`` is the position (into M) of the j-th kept proposal of video b,
    ``score[b, j]`` its score when it was picked (after decay), ``kept[b, j]`` False
    for the slots past the end of video b's list. Semantics as :func:`soft_nms`.

    One iteration per kept slot, each O(B * M) tensor work (about 20 small ops)
    with no host sync: the IoU row of the picked proposal is computed on the fly,
    so memory is O(B * M), not O(M^2); total O(S * B * M). The loop stops early
    once every video is exhausted (checked every iteration on CPU, every 16 on
    other devices, where the check is a sync). Measured on THUMOS-like sizes
    (M = 2300, S = 200, 20 classes): ~20 ms per video on CPU; on an H100 the loop
    is launch-bound, ~50 ms for 1 video and ~60 ms for a batch of 16
    (``experiments/benchmarks/postprocess.py``).
    """
    if method not in NMS_METHODS:
        raise ValueError(f"unknown NMS method {method!r}; allowed: {', '.join(NMS_METHODS)}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for Gaussian soft-NMS, found {sigma}")
    if max_segments is not None and max_segments < 0:
        raise ValueError(f"max_segments must be >= 0 or None, found {max_segments}")
    if segments.dim() != 3 or segments.shape[-1] != 2 or segments.shape[:2] != scores.shape:
        raise ValueError(
            f"expected segments (B, M, 2) and scores (B, M), found "
            f"{tuple(segments.shape)} and {tuple(scores.shape)}"
        )
    B, M = scores.shape
    S = M if max_segments is None else min(max_segments, M)
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
        same = None if class_agnostic else labels == labels.gather(1, best)
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
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    min_score: float = 0.001,
    max_segments: int | None = 200,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS of one video: segments (M, 2), scores (M,), labels (M,).

    Returns the kept ``(segments, scores, labels)`` sorted by score descending, the
    scores being the decayed ones. Semantics:

    1. proposals with ``score < min_score`` are dropped at the start;
    2. pick the highest remaining score (ties: lower original index first) and keep
       it;
    3. decay the remaining proposals with the picked one's label (every remaining
       proposal if ``class_agnostic``), ``iou`` being :func:`segment_iou` with the
       picked one: ``gaussian``: ``score *= exp(-iou**2 / sigma)``; ``linear``:
       ``score *= 1 - iou`` if ``iou >= iou_threshold``; ``hard``: removed if
       ``iou >= iou_threshold``;
    4. drop the remaining proposals whose score is now below ``min_score``;
    5. repeat from 2 until nothing remains or ``max_segments`` are kept.

    Scores only decrease, so the picked scores come out non-increasing. Cost
    O(max_segments * M) time, O(M) memory; see :func:`batched_soft_nms`.
    """
    index, kept_score, kept = batched_soft_nms(
        segments.unsqueeze(0),
        scores.unsqueeze(0),
        labels.unsqueeze(0),
        method=method,
        sigma=sigma,
        iou_threshold=iou_threshold,
        min_score=min_score,
        max_segments=max_segments,
        class_agnostic=class_agnostic,
    )
    index = index[0][kept[0]]
    return segments[index], kept_score[0][kept[0]], labels[index]


def _float(x: Tensor) -> Tensor:
    """Half-precision outputs (autocast) are decoded in float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def postprocess_batch(
    *,
    segments: Tensor,
    score_logits: Tensor,
    cls_logits: Tensor,
    frame_mask: Tensor,
    scale: Tensor,
    offset: Tensor,
    duration: Tensor,
    fusion: str = "regression",
    zeta: float = 1.0,
    nms: str = "soft",
    nms_method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    min_score: float = 0.001,
    max_segments: int | None = 200,
    pre_nms_topk: int | None = None,
    top_k: int | None = None,
    class_agnostic: bool = False,
) -> list[dict[str, Tensor]]:
    """Network outputs of a padded batch -> per-video detections on the CPU.

    ``segments`` (B, T, 2) index units (:func:`offsets_to_segments`),
    ``score_logits`` (B, T) and ``cls_logits`` (B, T, K+1) come from
    :class:`~salad_lightning.models.net.SaladOutput`; ``frame_mask`` (B, T) and the
    time mapping ``scale``/``offset``/``duration`` (B,) from the batch.

    - ``fusion``/``zeta``: see :func:`fuse_scores`.
    - ``pre_nms_topk``: keep only this many best-scoring valid steps per video
      before NMS (``None``, the default: all of them, as the paper does).
    - ``nms``: ``"soft"`` (``nms_method`` gaussian | linear), ``"hard"`` or
      ``"none"``; NMS keeps at most ``max_segments`` and drops scores under
      ``min_score`` (see :func:`soft_nms`); ``"none"`` applies no score threshold.
    - ``top_k``: final cap per video after everything else (ActivityNet: 20 with
      ``nms="none"``); ``None``: no cap.

    Returns B dicts ``{"segments": (M, 2) seconds, "scores": (M,), "labels": (M,)
    int64 0..K-1}``, sorted by score descending (ties: lower step first).
    """
    if nms not in NMS_MODES:
        raise ValueError(f"unknown nms {nms!r}; allowed: {', '.join(NMS_MODES)}")
    if nms == "soft" and nms_method not in SOFT_METHODS:
        raise ValueError(
            f"unknown nms_method {nms_method!r} for nms='soft'; allowed: {', '.join(SOFT_METHODS)}"
        )
    if fusion not in FUSION_MODES:
        raise ValueError(
            f"unknown score fusion mode {fusion!r}; allowed: {', '.join(FUSION_MODES)}"
        )
    segments, score_logits, cls_logits = (_float(x) for x in (segments, score_logits, cls_logits))
    device = segments.device
    dec = decode(
        segments,
        torch.sigmoid(score_logits),
        torch.softmax(cls_logits, dim=-1),
        frame_mask.to(device),
        scale.to(device),
        offset.to(device),
        duration.to(device),
    )
    score = fuse_scores(dec.score, dec.cls_score, fusion, zeta)

    # Valid steps first, best first; padded steps sort last and stay marked invalid.
    order = _sort_desc(torch.where(dec.mask, score, torch.full_like(score, -math.inf)))
    if pre_nms_topk is not None:
        order = order[:, :pre_nms_topk]
    segments = dec.segments.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    score = score.gather(1, order)
    labels = dec.labels.gather(1, order)
    valid = dec.mask.gather(1, order)

    if nms != "none":
        index, score, valid = batched_soft_nms(
            segments,
            score,
            labels,
            valid,
            method=nms_method if nms == "soft" else "hard",
            sigma=sigma,
            iou_threshold=iou_threshold,
            min_score=min_score,
            max_segments=max_segments,
            class_agnostic=class_agnostic,
        )
        segments = segments.gather(1, index.unsqueeze(-1).expand(-1, -1, 2))
        labels = labels.gather(1, index)
    if top_k is not None:
        segments, score, labels, valid = (x[:, :top_k] for x in (segments, score, labels, valid))

    # One transfer for the whole batch, then per-video selection on the CPU.
    segments, score, labels, valid = (x.cpu() for x in (segments, score, labels, valid))
    return [
        {
            "segments": segments[b][valid[b]],
            "scores": score[b][valid[b]],
            "labels": labels[b][valid[b]],
        }
        for b in range(valid.shape[0])
    ]
