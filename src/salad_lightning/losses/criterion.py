"""The SALAD loss, Eq. (2)-(4) as docs/method.md §4 reads them.

``L = L_sa + L_r + lambda2 * L_cls`` with

- ``L_sa = sum_t BCE(p_t, y_t)`` over valid steps, from the logits (finite when
  ``p_t`` saturates);
- ``L_r = lambda1 * sum_t sum_n alpha[t, n] * (1 - tIoU(seg_t, gt_n))``, the tIoU
  recomputed from ``segments`` so the gradient reaches the regression head
  (``alpha`` comes from the matching and is constant);
- ``L_cls`` (``cls_loss="bce"``, Eq. 3) ``= sum_t w_t sum_k BCE(ĉ_t[k], c_t[k])``:
  ``ĉ_t = softmax(cls_logits)`` over the K+1 columns, ``c_t`` the multi-hot
  vector of the labels of the ground truths containing t (label k -> column k+1),
  ``w_t = 1`` when t is inside some ground truth, else 0. The BCE is **summed over
  the K+1 columns**, background column included (as a negative on action steps).
  ``log(1 - ĉ)`` is computed without cancellation (for the largest column as a
  log-sum-exp over the other columns), so the loss and its gradient stay finite
  and exact when the softmax saturates.
- ``cls_loss="ce"``: cross-entropy ``-sum_k q_t[k] log ĉ_t[k]`` over **all valid
  steps**; ``q_t`` is column 0 on background steps and the normalised multi-hot
  vector on action steps (each label of the containing ground truths weighted
  equally).

Reductions: ``"sum"`` sums each term per video and averages over the batch
(divides by B); ``"mean"`` divides each term's batch total by its count over the
batch: valid steps for ``L_sa``, ``alpha`` ones for ``L_r``, weighted steps for
``L_cls`` (action steps for ``bce``, valid steps for ``ce``); counts clamped to >= 1.

Nothing here synchronises host and device: the stats are 0-d tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from salad_lightning.losses.matching import (
    PRUNING_MODES,
    TARGET_MODES,
    MatchResult,
    check_mode,
    greedy_match,
    segment_tiou,
)

REDUCTIONS = ("sum", "mean")
CLS_LOSSES = ("bce", "ce")


@dataclass
class LossOutput:
    """The loss terms (0-d tensors) and matching diagnostics."""

    total: Tensor
    loss_sa: Tensor  # L_sa
    loss_reg: Tensor  # L_r, lambda1 included
    loss_cls: Tensor  # L_cls, lambda2 *not* included
    stats: dict[str, Tensor] = field(default_factory=dict)
    match: MatchResult | None = None


def log_one_minus_softmax(logits: Tensor) -> Tensor:
    """``log(1 - softmax(logits))`` along the last dim, exact when saturated.

    For a column that is not the largest, ``softmax <= 1/2`` and ``log1p(-p)`` is
    accurate. For the largest column, ``1 - p = sum_{j != k} exp(z_j) / sum_j exp(z_j)``
    is a difference of two log-sum-exps. Needs at least two columns.
    """
    log_p = torch.log_softmax(logits, dim=-1)
    top = logits.argmax(dim=-1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
    others = torch.logsumexp(logits.masked_fill(is_top, float("-inf")), dim=-1, keepdim=True)
    top_value = others - torch.logsumexp(logits, dim=-1, keepdim=True)
    # The unused branch gets a safe input so its gradient cannot be 0 * inf.
    safe_log_p = torch.where(is_top, torch.full_like(log_p, -1.0), log_p)
    return torch.where(is_top, top_value.expand_as(logits), torch.log1p(-torch.exp(safe_log_p)))


def class_targets(inside: Tensor, gt_labels: Tensor, gt_mask: Tensor, num_columns: int) -> Tensor:
    """(B, T, K+1) multi-hot ``c_t``: columns ``label + 1`` of the gts containing step t.

    Built by comparison rather than ``F.one_hot`` (which checks the label range on
    the host); a label outside ``0..K-1`` sets no column.
    """
    columns = torch.arange(num_columns, device=gt_labels.device)
    one_hot = (gt_labels.unsqueeze(-1) + 1 == columns) & gt_mask.unsqueeze(-1)  # (B, N, K+1)
    counts = torch.bmm(inside.float(), one_hot.float())
    return counts > 0


class SaladCriterion(torch.nn.Module):
    """SALAD's training loss: matching (Algorithm 1) + Eq. (2)-(4). See the module docstring."""

    def __init__(
        self,
        *,
        lambda1: float = 1.0,
        lambda2: float = 0.1,
        mu: float = 0.5,
        reduction: str = "sum",
        cls_loss: str = "bce",
        pruning: str = "salad",
        target: str = "salad",
    ) -> None:
        super().__init__()
        check_mode("reduction", reduction, REDUCTIONS)
        check_mode("cls_loss", cls_loss, CLS_LOSSES)
        check_mode("pruning", pruning, PRUNING_MODES)
        check_mode("target", target, TARGET_MODES)
        self.lambda1, self.lambda2, self.mu = float(lambda1), float(lambda2), float(mu)
        self.reduction, self.cls_loss = reduction, cls_loss
        self.pruning, self.target = pruning, target

    def extra_repr(self) -> str:
        return (
            f"lambda1={self.lambda1}, lambda2={self.lambda2}, mu={self.mu}, "
            f"reduction={self.reduction!r}, cls_loss={self.cls_loss!r}, "
            f"pruning={self.pruning!r}, target={self.target!r}"
        )

    def _reduce(self, total: Tensor, count: Tensor, batch: int) -> Tensor:
        if self.reduction == "sum":
            return total / max(batch, 1)
        return total / count.clamp(min=1)

    def forward(
        self,
        segments: Tensor,
        score_logits: Tensor,
        cls_logits: Tensor,
        gt_segments: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
        frame_mask: Tensor,
        *,
        cls_only: bool = False,
        generator: torch.Generator | None = None,
        frozen_alpha: Tensor | None = None,
    ) -> LossOutput:
        """Loss terms for a batch.

        Args:
            segments: (B, T, 2) proposals ``[t - a W, t + b W]``, index units, with grad.
            score_logits: (B, T), ``p_t = sigmoid(score_logits)``.
            cls_logits: (B, T, K+1), column 0 background.
            gt_segments: (B, N, 2); gt_labels: (B, N) int, 0..K-1; gt_mask: (B, N) bool.
            frame_mask: (B, T) bool, False = padding.
            cls_only: classification pre-training: ``L_sa = L_r = 0``, ``total = lambda2 L_cls``.
            generator, frozen_alpha: passed to :func:`greedy_match` (``random`` / ``frozen``).
        """
        if cls_logits.dim() != 3 or cls_logits.shape[-1] < 2:
            raise ValueError(
                f"cls_logits must be (B, T, K+1) with K >= 1, found {tuple(cls_logits.shape)}"
            )
        if tuple(score_logits.shape) != tuple(segments.shape[:2]):
            raise ValueError(
                f"score_logits must be {tuple(segments.shape[:2])}, found {tuple(score_logits.shape)}"
            )
        B = segments.shape[0]
        frame_mask = frame_mask.to(torch.bool)
        gt_mask = gt_mask.to(torch.bool)
        gt_segments = gt_segments.to(segments.dtype)
        match = greedy_match(
            segments.detach(),
            torch.sigmoid(score_logits.detach()),
            gt_segments,
            gt_mask,
            frame_mask,
            self.mu,
            pruning=self.pruning,
            target=self.target,
            generator=generator,
            frozen_alpha=frozen_alpha,
        )
        zero = score_logits.new_zeros(())

        # --- classification, Eq. (3)
        action = match.inside.any(dim=-1)  # (B, T): w_t
        multi_hot = class_targets(match.inside, gt_labels, gt_mask, cls_logits.shape[-1])
        multi_hot = multi_hot.to(cls_logits.dtype)
        log_p = torch.log_softmax(cls_logits, dim=-1)
        if self.cls_loss == "bce":
            per_col = multi_hot * log_p + (1 - multi_hot) * log_one_minus_softmax(cls_logits)
            cls_w = action
            cls_total = -torch.where(action, per_col.sum(dim=-1), 0.0).sum()
        else:
            background = torch.zeros_like(multi_hot)
            background[..., 0] = 1
            target = torch.where(action.unsqueeze(-1), multi_hot, background)
            target = target / target.sum(dim=-1, keepdim=True).clamp(min=1)
            cls_w = frame_mask
            cls_total = -torch.where(frame_mask, (target * log_p).sum(dim=-1), 0.0).sum()
        loss_cls = self._reduce(cls_total, cls_w.sum(), B)

        if cls_only:
            loss_sa = loss_reg = zero
        else:
            # --- self-assessment, Eq. (2) first term
            y = match.y.to(score_logits.dtype)
            bce = F.binary_cross_entropy_with_logits(score_logits, y, reduction="none")
            loss_sa = self._reduce(torch.where(frame_mask, bce, 0.0).sum(), frame_mask.sum(), B)
            # --- regression, Eq. (2) second term, as lambda1 * sum alpha (1 - tIoU)
            tiou = segment_tiou(segments, gt_segments)
            reg_total = torch.where(match.alpha, 1 - tiou, 0.0).sum()
            loss_reg = self.lambda1 * self._reduce(reg_total, match.alpha.sum(), B)
        total = loss_sa + loss_reg + self.lambda2 * loss_cls
        return LossOutput(
            total=total,
            loss_sa=loss_sa,
            loss_reg=loss_reg,
            loss_cls=loss_cls,
            stats=match_stats(match, gt_mask, self.mu, B),
            match=match,
        )


@torch.no_grad()
def match_stats(match: MatchResult, gt_mask: Tensor, mu: float, batch: int) -> dict[str, Tensor]:
    """Diagnostics of one matching, as 0-d float tensors (no host sync).

    - ``pruned_share``: among valid steps inside at least one gt, the share with
      ``alpha = 0`` for every gt;
    - ``gt_matched_share``: among valid gts, the share with a ``y = 1`` step inside
      them whose tIoU with them is > mu (for ``target="salad"`` this is Algorithm 1's
      ``beta``);
    - ``positives_per_video``: number of ``y = 1`` steps divided by B;
    - ``competitors_per_gt``: number of ``alpha = 1`` pairs per valid gt.
    """
    inside_any = match.inside.any(dim=-1)
    n_inside = inside_any.sum().float()
    pruned = (inside_any & ~match.alpha.any(dim=-1)).sum().float()
    n_gt = gt_mask.sum().float()
    matched = (match.inside & match.y.unsqueeze(-1) & (match.tiou > mu)).any(dim=1)
    return {
        "pruned_share": pruned / n_inside.clamp(min=1),
        "gt_matched_share": (matched & gt_mask).sum().float() / n_gt.clamp(min=1),
        "positives_per_video": match.y.sum().float() / max(batch, 1),
        "competitors_per_gt": match.alpha.sum().float() / n_gt.clamp(min=1),
    }
