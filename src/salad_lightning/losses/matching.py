"""Self-assessment matching: paper Algorithm 1, vectorised (docs/method.md §3), and its ablations (docs/method.md §7).

Algorithm 1 walks the steps by decreasing score and, for every ground truth ``n``
not yet matched (``beta[n] == 0``) that contains the step, marks the step as a
competitor (``alpha[t, n] = 1``) and matches ``n`` to it if its proposal has
``tIoU > mu``. Because ``beta`` is per ground truth, the loop splits by ``n``:
among the valid steps inside ``n``, in score order, every step up to and
including the first one with ``tIoU > mu`` competes, that first one is the
positive, the later ones are pruned. So with ``rank[t]`` the position of step
``t`` in score order and ``r[n]`` the smallest rank among the steps inside ``n``
with ``tIoU > mu`` (``T`` when there is none)::

    alpha[t, n] = inside[t, n] & (rank[t] <= r[n])
    y[t]        = any_n(inside[t, n] & tiou[t, n] > mu & rank[t] == r[n])

which needs one sort per batch row and a masked minimum, no loop over steps or
ground truths, and no host-device synchronisation.

Rules the paper leaves open (the literal reference in ``tests/_literal_algorithm1.py``
follows the same ones):

- score order: descending, equal scores ordered by lower step index first;
- step ``t`` sits at position ``float(t)``; it is inside ``[s, e]`` iff
  ``s <= t <= e`` (closed interval); padded steps and padded ground truths are
  never inside anything;
- tIoU is Eq. (1) as printed, ``(min(e, ê) - max(s, ŝ)) / (max(e, ê) - min(s, ŝ))``,
  unclamped (negative for disjoint segments), and **0 where the denominator is
  <= 0** (both segments the same single point, or malformed ``start > end`` input);
- ``tIoU > mu`` is strict.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

PRUNING_MODES = ("salad", "none", "top1_iou", "random", "frozen")
TARGET_MODES = ("salad", "max_score", "score_gt_half", "iou_gt_mu")


class MatchResult(NamedTuple):
    """Output of :func:`greedy_match`; every tensor is detached and on the input device."""

    alpha: Tensor  # (B, T, N) bool: step t regresses ground truth n
    y: Tensor  # (B, T) bool: self-assessment target of step t
    tiou: Tensor  # (B, T, N) float: Eq. (1) of step t's proposal with gt n (0 on padded pairs)
    inside: Tensor  # (B, T, N) bool: valid step t lies inside valid gt n
    beta: Tensor  # (B, N) bool: Algorithm 1's beta, gt n matched by some step with tIoU > mu


def check_mode(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise a ValueError naming the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, found {value!r}")


def segment_tiou(segments: Tensor, gt_segments: Tensor) -> Tensor:
    """Eq. (1) between every step's proposal and every ground truth, differentiable.

    ``segments`` (B, T, 2), ``gt_segments`` (B, N, 2) -> (B, T, N). Unclamped; 0
    where the hull length ``max(e, ê) - min(s, ŝ)`` is <= 0. The guard keeps the
    gradient finite too (the division only sees safe denominators).
    """
    s_hat, e_hat = segments[..., 0].unsqueeze(-1), segments[..., 1].unsqueeze(-1)
    s, e = gt_segments[..., 0].unsqueeze(-2), gt_segments[..., 1].unsqueeze(-2)
    inter = torch.minimum(e, e_hat) - torch.maximum(s, s_hat)
    hull = torch.maximum(e, e_hat) - torch.minimum(s, s_hat)
    ok = hull > 0
    safe_hull = torch.where(ok, hull, torch.ones_like(hull))
    return torch.where(ok, inter / safe_hull, torch.zeros_like(inter))


def _check_shapes(
    segments: Tensor, scores: Tensor, gt_segments: Tensor, gt_mask: Tensor, frame_mask: Tensor
) -> tuple[int, int, int]:
    if segments.dim() != 3 or segments.shape[-1] != 2:
        raise ValueError(f"segments must be (B, T, 2), found {tuple(segments.shape)}")
    b, t = segments.shape[:2]
    if gt_segments.dim() != 3 or gt_segments.shape[0] != b or gt_segments.shape[-1] != 2:
        raise ValueError(f"gt_segments must be ({b}, N, 2), found {tuple(gt_segments.shape)}")
    n = gt_segments.shape[1]
    expected = {"scores": (scores, (b, t)), "gt_mask": (gt_mask, (b, n))}
    expected["frame_mask"] = (frame_mask, (b, t))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {shape}, found {tuple(tensor.shape)}")
    return b, t, n


def _first_in_order(mask: Tensor, key: Tensor, sentinel: int) -> Tensor:
    """(B, T, N) mask, (B, T, 1) integer key -> (B, N): smallest key where mask, else sentinel."""
    filled = torch.where(mask, key, torch.full_like(key, sentinel))
    return filled.amin(dim=1)


@torch.no_grad()
def greedy_match(
    segments: Tensor,
    scores: Tensor,
    gt_segments: Tensor,
    gt_mask: Tensor,
    frame_mask: Tensor,
    mu: float,
    *,
    pruning: str = "salad",
    target: str = "salad",
    generator: torch.Generator | None = None,
    frozen_alpha: Tensor | None = None,
) -> MatchResult:
    """Who regresses which ground truth (``alpha``) and the self-assessment target (``y``).

    Args:
        segments: (B, T, 2) proposal ``[start, end]`` of each step, feature-index units.
        scores: (B, T) self-assessment scores ``p_t`` (probabilities; only their order
            matters, except for ``target="score_gt_half"``).
        gt_segments: (B, N, 2) ground truths, same units. N may be 0.
        gt_mask: (B, N) bool, False = padding.
        frame_mask: (B, T) bool, False = padding (never inside, never positive).
        mu: tIoU threshold (strict ``>``).
        pruning: who gets ``alpha = 1`` among the valid steps inside gt ``n``:
            ``"salad"`` Algorithm 1; ``"none"`` all of them; ``"top1_iou"`` only the one
            with the highest tIoU (ties: lower t); ``"random"`` each with probability 0.5,
            from exactly one draw ``u = torch.rand((B, T, N), generator=generator,
            device=segments.device, dtype=torch.float32)``, ``alpha = inside & (u < 0.5)``;
            ``"frozen"`` ``frozen_alpha`` (B, T, N) masked by ``frame_mask`` and ``gt_mask``
            (not by ``inside``: the file's alpha is taken as written).
        target: ``"salad"`` Algorithm 1's y; ``"max_score"`` y = 1 for the highest-score
            valid step inside each gt (ties: lower t), tIoU ignored; ``"score_gt_half"``
            y = ``p_t > 0.5`` on valid steps; ``"iou_gt_mu"`` y = 1 where tIoU > mu with
            some gt the step is inside, other steps ignored.

    Pruning and target are independent. Ties, the inside test and the tIoU
    degenerate rule are in the module docstring.
    """
    check_mode("pruning", pruning, PRUNING_MODES)
    check_mode("target", target, TARGET_MODES)
    b, t, n = _check_shapes(segments, scores, gt_segments, gt_mask, frame_mask)
    if pruning == "frozen" and (frozen_alpha is None or tuple(frozen_alpha.shape) != (b, t, n)):
        found = None if frozen_alpha is None else tuple(frozen_alpha.shape)
        raise ValueError(f"pruning='frozen' needs frozen_alpha of shape {(b, t, n)}, found {found}")
    segments, scores, gt_segments = segments.detach(), scores.detach(), gt_segments.detach()
    device = segments.device
    gt_mask, frame_mask = (
        gt_mask.to(device=device, dtype=torch.bool),
        frame_mask.to(device, torch.bool),
    )
    gt_segments = gt_segments.to(device=device, dtype=segments.dtype)

    valid_pair = frame_mask.unsqueeze(-1) & gt_mask.unsqueeze(-2)  # (B, T, N)
    tiou = torch.where(valid_pair, segment_tiou(segments, gt_segments), 0.0)
    if pruning == "random":
        # Drawn before any early return so the generator advances identically for every T.
        # `generator` only when given: torch.compile cannot trace the overload that takes
        # `generator=None` with dynamic shapes (eager draws the same numbers either way)
        kw = {} if generator is None else {"generator": generator}
        draw = torch.rand((b, t, n), device=device, dtype=torch.float32, **kw)
    if t == 0:
        empty = torch.zeros((b, 0, n), dtype=torch.bool, device=device)
        no_step = torch.zeros((b, 0), dtype=torch.bool, device=device)
        return MatchResult(empty, no_step, tiou, empty, torch.zeros_like(gt_mask))

    pos = torch.arange(t, device=device, dtype=segments.dtype).view(1, t, 1)
    inside = valid_pair & (gt_segments[..., 0].unsqueeze(1) <= pos)
    inside = inside & (pos <= gt_segments[..., 1].unsqueeze(1))

    # rank[b, t] = position of step t in score order (descending, ties lower t first).
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    steps = torch.arange(t, device=device).expand(b, t)
    rank = torch.empty_like(order).scatter_(1, order, steps).unsqueeze(-1)  # (B, T, 1)

    # Algorithm 1, per ground truth: the first inside step (score order) with tIoU > mu.
    above = inside & (tiou > mu)
    first_above = _first_in_order(above, rank, t).unsqueeze(1)  # (B, 1, N); t = none
    winner = above & (rank == first_above)
    beta = winner.any(dim=1)

    if pruning == "salad":
        alpha = inside & (rank <= first_above)
    elif pruning == "none":
        alpha = inside
    elif pruning == "top1_iou":
        best = torch.where(inside, tiou, float("-inf")).amax(dim=1, keepdim=True)
        is_best = inside & (tiou == best)
        first_best = _first_in_order(is_best, steps.unsqueeze(-1), t).unsqueeze(1)
        alpha = is_best & (steps.unsqueeze(-1) == first_best)
    elif pruning == "random":
        alpha = inside & (draw < 0.5)
    else:  # frozen
        alpha = frozen_alpha.detach().to(device=device, dtype=torch.bool) & valid_pair

    if target == "salad":
        y = winner.any(dim=2)
    elif target == "max_score":
        top = inside & (rank == _first_in_order(inside, rank, t).unsqueeze(1))
        y = top.any(dim=2)
    elif target == "score_gt_half":
        y = frame_mask & (scores > 0.5)
    else:  # iou_gt_mu
        y = above.any(dim=2)

    return MatchResult(alpha=alpha, y=y, tiou=tiou, inside=inside, beta=beta)
