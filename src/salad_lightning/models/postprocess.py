"""From network outputs to scored segments in seconds (docs/method.md §2, §5).

Everything here is plain torch, vectorised over the batch and the steps, and runs on
whatever device the network outputs live on (soft-NMS, in ``models/nms.py``, runs in
NumPy when that device is the CPU); :func:`postprocess_batch` moves the final, small
result to the CPU once.

Pipeline of :func:`postprocess_batch`: offsets -> index-unit segments
(:func:`offsets_to_segments`) -> seconds, label and class confidence per valid step
(:func:`decode`) -> fused score (:func:`fuse_scores`) -> optional pre-NMS top-k ->
soft/hard NMS (:func:`batched_soft_nms`) or plain top-k -> one ``VideoDetections`` per
video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from salad_lightning.data.detections import VideoDetections
from salad_lightning.data.mapping import index_to_seconds

# NMS lives in models/nms.py; NMS_METHODS and soft_nms stay importable from here.
from salad_lightning.models.nms import NMS_METHODS as NMS_METHODS
from salad_lightning.models.nms import batched_soft_nms
from salad_lightning.models.nms import soft_nms as soft_nms

FUSION_MODES = ("regression", "arithmetic", "geometric", "normalized_product")
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
    """Turn per-step predictions into proposals in seconds (docs/method.md §5).

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
    video_ids: Sequence[str] | None = None,
) -> list[VideoDetections]:
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
    - ``video_ids``: the batch's video ids (default ``"0"``, ``"1"``, ...).

    Returns B :class:`~salad_lightning.data.detections.VideoDetections` (numpy):
    segments (M, 2) in seconds, scores (M,), labels (M,) 0..K-1, sorted by score
    descending (ties: lower step first), and ``best_score``, the video's highest fused
    score before NMS.
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
    masked = torch.where(dec.mask, score, torch.full_like(score, -math.inf))
    best = masked.amax(dim=1)  # before NMS: why a video may end with no detection
    order = _sort_desc(masked)
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
    segments, score, labels, valid, best = (
        x.cpu().numpy() for x in (segments, score, labels, valid, best)
    )
    ids = [str(b) for b in range(len(valid))] if video_ids is None else list(video_ids)
    if len(ids) != len(valid):
        raise ValueError(f"video_ids: {len(ids)} ids for a batch of {len(valid)} videos")
    return [
        VideoDetections(
            ids[b],
            segments[b][valid[b]],
            score[b][valid[b]],
            labels[b][valid[b]],
            best_score=float(best[b]),
        )
        for b in range(len(valid))
    ]
