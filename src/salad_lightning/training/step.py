"""Training-step strategies: how a batch becomes the loss and its gradients.

One interface (:class:`TrainingStep`), three implementations chosen once, when the
module is built (:func:`salad_lightning.training.factory.make_training_step`):

- :class:`EagerStep`: the network, then the loss (:class:`HeadLoss`); Lightning's
  automatic optimisation does the backward and the optimiser step;
- :class:`CompiledStep`: the same with :class:`HeadLoss` (heads, decoding, matching,
  loss) compiled by ``torch.compile`` as one graph; the GRU stays cuDNN's;
- :class:`~salad_lightning.training.graphs.GraphStep`: forward and backward replayed
  from CUDA graphs, under manual optimisation.

Each refuses the settings it cannot take, by key, before the first step
(:meth:`TrainingStep.check`). The LightningModule only calls the strategy and logs
what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from salad_lightning.data.batch import Batch
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.losses.frozen import FrozenAlpha
from salad_lightning.models.postprocess import offsets_to_segments

if TYPE_CHECKING:
    import pytorch_lightning as pl

STAT_KEYS = ("pruned_share", "gt_matched_share", "positives_per_video", "competitors_per_gt")
LOSS_KEYS = ("train/loss", "train/loss_sa", "train/loss_reg", "train/loss_cls")


class HeadLoss:
    """Heads, decoding, matching and loss from the encoder's state: the logged values by
    key (``train/loss`` among them). The part of the step that ``compile`` turns into one
    graph and that a CUDA graph captures with the encoder and the backward."""

    def __init__(self, net: nn.Module, criterion: SaladCriterion) -> None:
        self.net, self.criterion = net, criterion

    def __call__(
        self,
        state: Tensor,
        max_offset: Tensor,
        gt_segments: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
        frame_mask: Tensor,
        frozen_alpha: Tensor | None,
        *,
        cls_only: bool,
    ) -> dict[str, Tensor]:
        out = self.net.heads(state)
        result = self.criterion(
            offsets_to_segments(out.offsets, max_offset),
            out.score_logits,
            out.cls_logits,
            gt_segments,
            gt_labels,
            gt_mask,
            frame_mask,
            cls_only=cls_only,
            frozen_alpha=frozen_alpha,
        )
        total = result.total
        if cls_only:
            # the regression and self-assessment heads sit out of the classification
            # pre-training; keep them in the graph so that DDP's reducer sees every parameter
            total = total + 0.0 * (out.offsets.sum() + out.score_logits.sum())
        logs = dict(zip(LOSS_KEYS, (total, result.loss_sa, result.loss_reg, result.loss_cls)))
        logs.update({f"train/{k}": result.stats[k] for k in STAT_KEYS})
        return logs


class TrainingStep:
    """The step of one training batch: ``step(module, batch, cls_only)`` returns the logged
    values (0-d tensors; ``train/loss`` keeps its graph under automatic optimisation)."""

    automatic_optimization = True

    def __init__(
        self, net: nn.Module, criterion: SaladCriterion, *, frozen: FrozenAlpha | None = None
    ) -> None:
        self.head_loss = HeadLoss(net, criterion)
        self.frozen = frozen

    def check(self, trainer: pl.Trainer) -> None:
        """Refuse, by key, the trainer settings this strategy cannot honour."""

    def on_train_start(self, module: pl.LightningModule) -> None:
        """Choices that need the device and the process count."""

    def on_train_epoch_end(self, module: pl.LightningModule) -> None:
        """Work Lightning leaves to the module at the end of an epoch."""

    def eager_logs(
        self, module: pl.LightningModule, batch: Batch, cls_only: bool, head_loss: Any = None
    ) -> dict[str, Tensor]:
        """Forward and loss of the batch: the encoder, then ``head_loss`` (default
        :attr:`head_loss`) on the batch's targets."""
        state = self.head_loss.net.encode(batch.features, batch.lengths_host)
        alpha = self.frozen.batch_alpha(batch, state.device) if self.frozen else None
        return (head_loss or self.head_loss)(
            state,
            module.max_offset,
            batch.gt_segments,
            batch.gt_labels,
            batch.gt_mask,
            batch.frame_mask,
            alpha,
            cls_only=cls_only,
        )

    def step(self, module: pl.LightningModule, batch: Batch, cls_only: bool) -> dict[str, Tensor]:
        return self.eager_logs(module, batch, cls_only)


class EagerStep(TrainingStep):
    """The network and the loss as plain PyTorch; Lightning's automatic optimisation."""


class CompiledStep(TrainingStep):
    """:class:`HeadLoss` compiled as one graph (dynamic shapes) at the first step; the
    encoder stays eager (cuDNN's GRU). The compiled function is not part of the module's
    state, so checkpoints keep their ``net.*`` keys, and copies compile their own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compiled: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "compiled": None}

    def step(self, module: pl.LightningModule, batch: Batch, cls_only: bool) -> dict[str, Tensor]:
        if self.compiled is None:
            self.compiled = torch.compile(self.head_loss, dynamic=True)
        return self.eager_logs(module, batch, cls_only, self.compiled)
