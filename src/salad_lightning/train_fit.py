"""`TrainFit`: how well a run fits its own training videos, measured while it trains.

Every ``every_n_epochs`` epochs, and at the last epoch, the module evaluates a fixed
sample of ``videos`` training videos, whole (no crops), with the same post-processing
and the same evaluation store as validation and test (its ``train`` store: gathered
across processes, matched once), and logs ``train/mAP@t``, ``train/mAP`` and
``train/ece``. A train fit far above the validation and test mAP says the model
overfits; a low one says it has not fit its data yet (undertrained, or too small).
The last value belongs to the last epoch's weights, the checkpoint a run tests
(``metrics.json``'s ``train`` entry). With a weight average (``callbacks=ema``) the
average is evaluated, as validation and the checkpoints use it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch

from salad_lightning.ema import evaluated_weights

log = logging.getLogger(__name__)


class TrainFit(pl.Callback):
    """Evaluate a fixed sample of training videos every ``every_n_epochs`` epochs and at
    the last one (``videos``: the sample's size; ``seed``: which videos)."""

    def __init__(self, every_n_epochs: int = 5, videos: int = 16, seed: int = 0) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("videos", videos)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"callbacks.train_fit.{name}: expected a positive integer, got {value!r}"
                )
        self.every_n_epochs, self.videos, self.seed = int(every_n_epochs), int(videos), int(seed)
        self.last: dict[str, float] = {}  # the last evaluation's logged values

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last or trainer.should_stop

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        if trainer.datamodule is None:
            raise ValueError(
                "callbacks.train_fit needs the run's datamodule (trainer.fit(datamodule=...))"
            )
        loader = trainer.datamodule.whole_train_dataloader(sample=self.videos, seed=self.seed)
        store = pl_module.store("train")
        store.reset()
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), evaluated_weights(trainer, pl_module):
                for batch in loader:
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    pl_module.store_batch("train", batch)
        finally:
            pl_module.train(was_training)
        result = pl_module.log_evaluation("train")
        self.last = result.logs()
        if trainer.is_global_zero:
            log.info(
                "epoch %d: train fit %.2f mAP (%%) on %d training videos, tIoU %s",
                trainer.current_epoch, 100 * result.average_map, len(result.video_ids),
                ", ".join(f"{t:g}" for t in result.tiou_thresholds),
            )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last = dict(state_dict.get("last", {}))
