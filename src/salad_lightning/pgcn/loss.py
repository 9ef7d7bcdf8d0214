"""P-GCN's losses (``pgcn_train.py``, ``ops/pgcn_ops.py``, ``pgcn_models.py::train_forward``).

Inputs are per video: B videos x S samples (S = 8, the slots of
``pgcn/targets.py::sample_centres``: 1 foreground, 6 incomplete, 1 background), the
network's outputs for the samples' centres reshaped to (B, S, ...), and each sample's
``kinds`` (what it is after P-GCN's fill-in), ``labels`` (class + 1, 0 background) and
normalised regression targets.

- **activity**: cross-entropy of the K+1 logits, averaged over the foreground and
  background samples (kinds 0 and 2), the label being 0 for background;
- **completeness**: P-GCN's ``CompletenessLoss``. Slot positions decide, not kinds: in
  each video the first ``num_positive`` slots (1) are positives and the next
  ``num_negative`` (6) negatives, even when a slot was filled from the foreground
  because the video had no incomplete proposal. Per sample the hinge
  ``max(0, 1 - y z)`` on the logit ``z`` of its label's class (y = +1 / -1). All
  positives are kept; of each video's negatives the ``max(int(6 x 0.17), 1) = 1``
  largest losses are kept (online hard-example mining per video: P-GCN groups the
  negatives by video). The sum is divided by ``B x num_positive +
  max(int(B x num_negative x 0.17), 1)`` (P-GCN's count, computed on the batch's
  negatives: 32 for B = 32, the number kept, but not for every B);
- **regression**: on foreground samples, the smooth L1 (beta 1) between the two values
  of the sample's class and its targets, averaged over the 2 x (foreground count)
  values and multiplied by 2 (P-GCN's ``ClassWiseRegressionLoss``);
- **total** = activity + 0.5 completeness + 0.5 regression (``--comp_loss_weight``,
  ``--reg_loss_weight``).

Nothing here reads a value back from the device: the selections are masks and the
counts are tensors (a term without samples is 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from salad_lightning.pgcn.targets import BACKGROUND, FOREGROUND

__all__ = [
    "OHEM_RATIO",
    "PGCNLoss",
    "activity_loss",
    "completeness_loss",
    "pgcn_loss",
    "regression_loss",
]

OHEM_RATIO = 0.17  # CompletenessLoss(ohem_ratio=0.17)
COMPLETENESS_WEIGHT = 0.5  # --comp_loss_weight
REGRESSION_WEIGHT = 0.5  # --reg_loss_weight


class PGCNLoss(NamedTuple):
    """The total and its three terms (0-d tensors); weights applied in ``total`` only."""

    total: Tensor
    activity: Tensor
    completeness: Tensor
    regression: Tensor


def activity_loss(logits: Tensor, labels: Tensor, kinds: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` (..., K+1) over the foreground and background samples."""
    logits, labels, kinds = logits.flatten(0, -2), labels.flatten(), kinds.flatten()
    used = ((kinds == FOREGROUND) | (kinds == BACKGROUND)).to(logits.dtype)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * used).sum() / used.sum().clamp_min(1)


def _hinge_at_label(logits: Tensor, labels: Tensor, sign: float) -> Tensor:
    z = logits.gather(-1, (labels - 1).unsqueeze(-1)).squeeze(-1)
    return torch.relu(1 - sign * z)


def completeness_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    num_positive: int = 1,
    num_negative: int = 6,
    ohem_ratio: float = OHEM_RATIO,
) -> Tensor:
    """P-GCN's completeness hinge loss with OHEM on ``logits`` (B, S, K), ``labels`` (B, S).

    Slots ``[:num_positive]`` are positives, ``[num_positive:num_positive + num_negative]``
    negatives; their labels must be classes (1..K). Rule in the module docstring.
    """
    b = logits.shape[0]
    pos = _hinge_at_label(logits[:, :num_positive], labels[:, :num_positive], 1.0)
    stop = num_positive + num_negative
    neg = _hinge_at_label(logits[:, num_positive:stop], labels[:, num_positive:stop], -1.0)
    keep = max(int(num_negative * ohem_ratio), 1)
    hardest = neg.topk(keep, dim=1).values
    count = b * num_positive + max(int(b * num_negative * ohem_ratio), 1)
    return (pos.sum() + hardest.sum()) / count


def regression_loss(regression: Tensor, labels: Tensor, targets: Tensor, kinds: Tensor) -> Tensor:
    """2 x the mean smooth L1 of the label's class values ``regression`` (..., K, 2) against
    ``targets`` (..., 2), over the foreground samples."""
    reg, labels = regression.flatten(0, -3), labels.flatten()
    targets, kinds = targets.flatten(0, -2), kinds.flatten()
    fg = kinds == FOREGROUND
    cls = (labels - 1).clamp_min(0)  # a non-foreground sample's value is masked out
    pred = reg.gather(1, cls.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1)
    l1 = F.smooth_l1_loss(pred, targets.to(pred.dtype), reduction="none", beta=1.0).sum(-1)
    count = 2 * fg.sum().clamp_min(1)
    return 2 * (l1 * fg.to(l1.dtype)).sum() / count


def pgcn_loss(
    activity_logits: Tensor,
    completeness_logits: Tensor,
    regression: Tensor,
    labels: Tensor,
    kinds: Tensor,
    reg_targets: Tensor,
    *,
    num_positive: int = 1,
    num_negative: int = 6,
    ohem_ratio: float = OHEM_RATIO,
    completeness_weight: float = COMPLETENESS_WEIGHT,
    regression_weight: float = REGRESSION_WEIGHT,
) -> PGCNLoss:
    """All terms on a batch: outputs (B, S, K+1), (B, S, K), (B, S, K, 2); labels, kinds
    (B, S); reg_targets (B, S, 2) normalised. ``num_positive`` / ``num_negative``: the
    foreground and incomplete slots per video (``targets.samples_per_kind``: 1, 6)."""
    if activity_logits.dim() != 3 or labels.shape != activity_logits.shape[:2]:
        raise ValueError(
            f"expected activity logits (B, S, K+1) and labels (B, S), found "
            f"{tuple(activity_logits.shape)} and {tuple(labels.shape)}"
        )
    act = activity_loss(activity_logits, labels, kinds)
    comp = completeness_loss(
        completeness_logits,
        labels,
        num_positive=num_positive,
        num_negative=num_negative,
        ohem_ratio=ohem_ratio,
    )
    reg = regression_loss(regression, labels, reg_targets, kinds)
    total = act + completeness_weight * comp + regression_weight * reg
    return PGCNLoss(total, act, comp, reg)
