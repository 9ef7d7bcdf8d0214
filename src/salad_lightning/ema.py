"""An exponential moving average (EMA) of the weights, which validation, the checkpoints
and the test use in place of the raw weights (``callbacks=ema``; docs/evaluation.md,
"Numbers comparable with published tables").

ActionFormer evaluates such an average (decay 0.999, updated after every optimiser
step); Lightning has the callback (``EMAWeightAveraging``, Lightning >= 2.6), used here
where installed, with :class:`SmallEMA` (the same average, hooks and checkpoint layout)
for older versions. What both do:

- after every optimiser step (``trainer.global_step`` advanced; also under the manual
  optimisation of ``model.cuda_graph``, whose steps go through Lightning's optimiser):
  ``average = decay * average + (1 - decay) * weights``, the first update a copy. The
  average is a separate copy of the module, updated eagerly, outside any CUDA graph;
  buffers (SALAD's ``max_offset``) are copied, not averaged, so they stay exact;
- validation runs on the average (swapped in for the epoch, swapped back after), so
  ``val/mAP`` and the best checkpoint are the average's;
- a checkpoint's ``state_dict`` is the average (``mode=test``, ``mode=validate``,
  ``export_alpha`` and the test after training read it as any checkpoint), the raw
  weights are under ``current_model_state`` and the update count under
  ``averaging_state``; resuming (``resume=RUN``) restores both, so the average goes on
  as if never interrupted;
- under DDP every process keeps its own average of the same (synchronised) weights.

Two changes to Lightning's callback: it builds the average when fitting starts, before
the strategy moves the module to its device, so both callbacks here move it there
(``on_fit_start``) and an update does not copy every weight between devices; and it puts
a checkpoint's raw weights into the module whenever it is loaded by a trainer that has
fitted, so that the test after training (``trainer.test(ckpt_path=...)``) evaluated the
raw weights; here that happens only when fitting (resuming).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

try:  # Lightning >= 2.6
    from pytorch_lightning.callbacks import EMAWeightAveraging
except ImportError:  # pragma: no cover - the installed version has it
    EMAWeightAveraging = None

# the callbacks' key in a checkpoint: either callback resumes the other's runs
STATE_KEY = "WeightEMA"

__all__ = [
    "LightningEMA",
    "SmallEMA",
    "averaged_state",
    "ema_avg_fn",
    "evaluated_weights",
    "weight_ema",
]


def ema_avg_fn(decay: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``decay * average + (1 - decay) * current`` (torch's ``get_ema_avg_fn``)."""

    def update(average: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        return decay * average + (1 - decay) * current

    return update


def _check(decay: float, update_every_n_steps: int, update_starting_at_step: int | None) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"callbacks.ema.decay must be in [0, 1], found {decay}")
    every = update_every_n_steps
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(
            f"callbacks.ema.update_every_n_steps must be an integer >= 1, found {every!r}"
        )
    if update_starting_at_step is not None and update_starting_at_step < 0:
        raise ValueError(
            f"callbacks.ema.update_starting_at_step must be >= 0, found {update_starting_at_step}"
        )


def _fitting(trainer: pl.Trainer) -> bool:
    """Whether ``trainer`` fits: only then does a checkpoint's average go back into the
    callback and its raw weights into the module; a test, validation or prediction keeps
    the checkpoint's ``state_dict``, the average."""
    return trainer.state.fn == TrainerFn.FITTING


def _to_module_device(average: AveragedModel | None, module: pl.LightningModule) -> None:
    if average is not None:
        average.to(module.device)


class SmallEMA(pl.Callback):
    """The EMA of :mod:`salad_lightning.ema` for Lightning versions without
    ``EMAWeightAveraging``: the same updates (``should_update``: every
    ``update_every_n_steps``-th optimiser step from ``update_starting_at_step``), swaps
    and checkpoint keys, so that either reads the other's checkpoints."""

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        _check(decay, update_every_n_steps, update_starting_at_step)
        self.decay = float(decay)
        self.update_every_n_steps = int(update_every_n_steps)
        self.update_starting_at_step = update_starting_at_step
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0  # optimiser steps when last updated

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and step_idx % self.update_every_n_steps == 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = AveragedModel(
                pl_module, avg_fn=ema_avg_fn(self.decay), use_buffers=False
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _to_module_device(self._average_model, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if trainer.global_step > self._latest_update_step and self.should_update(
            step_idx=trainer.global_step - 1
        ):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = trainer.global_step

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None:
            _swap(self._average_model, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None:
            _swap(self._average_model, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._average_model is not None
        for average, current in _pairs(self._average_model, pl_module):
            current.data.copy_(average.data)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            return
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k[7:]: v for k, v in state.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {
            k: v for k, v in state.items() if not k.startswith("module.")
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None or not _fitting(trainer):
            return
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            state = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
            self._average_model.load_state_dict(state | checkpoint["averaging_state"])
            # the module was loaded from "state_dict", the average: the raw weights now
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            rank_zero_warn(
                "the checkpoint has no weight average: the average starts from its weights"
            )
            self._average_model.module.load_state_dict(
                deepcopy(checkpoint["state_dict"]), strict=False
            )


def _pairs(average_model: AveragedModel, pl_module: pl.LightningModule):
    module = average_model.module
    return zip(
        itertools.chain(module.parameters(), module.buffers()),
        itertools.chain(pl_module.parameters(), pl_module.buffers()),
    )


def _swap(average_model: AveragedModel, pl_module: pl.LightningModule) -> None:
    # in place (`.data.copy_`): the tensors CUDA graphs captured keep their addresses
    for average, current in _pairs(average_model, pl_module):
        kept = average.data.clone()
        average.data.copy_(current.data)
        current.data.copy_(kept)


if EMAWeightAveraging is not None:

    class LightningEMA(EMAWeightAveraging):
        """Lightning's ``EMAWeightAveraging`` with buffers copied rather than averaged and
        the average kept on the module's device."""

        def __init__(self, **settings: Any) -> None:
            """``settings``: :class:`SmallEMA`'s (``decay``, ``update_every_n_steps``,
            ``update_starting_at_step``), checked as it checks them."""
            s = SmallEMA(**settings)
            super().__init__(
                use_buffers=False,
                decay=s.decay,
                update_every_n_steps=s.update_every_n_steps,
                update_starting_at_step=s.update_starting_at_step,
            )
            self.decay = s.decay

        @property
        def state_key(self) -> str:
            return STATE_KEY

        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            _to_module_device(self._average_model, pl_module)

        def on_load_checkpoint(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
        ) -> None:
            # Lightning's would load the raw weights into the module whenever the average
            # exists, so a test after fitting (`trainer.test(ckpt_path=...)`) evaluated them
            if _fitting(trainer):
                super().on_load_checkpoint(trainer, pl_module, checkpoint)

else:  # pragma: no cover
    LightningEMA = None  # type: ignore[assignment,misc]


def weight_ema(
    decay: float = 0.999,
    update_every_n_steps: int = 1,
    update_starting_at_step: int | None = None,
) -> pl.Callback:
    """The EMA callback (``callbacks.ema``): Lightning's where installed, else
    :class:`SmallEMA`."""
    cls = LightningEMA if LightningEMA is not None else SmallEMA
    return cls(
        decay=decay,
        update_every_n_steps=update_every_n_steps,
        update_starting_at_step=update_starting_at_step,
    )


@contextmanager
def evaluated_weights(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Iterator[None]:
    """The weights the run validates and checkpoints, in ``pl_module`` for the block:
    with an EMA callback that holds an average, the average swapped in (in place, as for
    validation) and back out after; without one, the module's own weights."""
    kinds = tuple(k for k in (SmallEMA, LightningEMA) if k is not None)
    averages = [
        cb._average_model
        for cb in trainer.callbacks
        if isinstance(cb, kinds) and cb._average_model is not None
    ]
    if not averages:
        yield
        return
    _swap(averages[0], pl_module)
    try:
        yield
    finally:
        _swap(averages[0], pl_module)


def averaged_state(callback: pl.Callback) -> dict[str, torch.Tensor]:
    """The average a callback holds, as the module's ``state_dict`` (what a checkpoint
    saves as its ``state_dict``)."""
    model = getattr(callback, "_average_model", None)
    if model is None:
        raise ValueError("the EMA callback has no average (it is built when fitting starts)")
    return {k[7:]: v for k, v in model.state_dict().items() if k.startswith("module.")}
