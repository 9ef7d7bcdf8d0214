"""The SALAD *system*: wires SaladNet, the criterion, a training-step strategy,
post-processing and the evaluation metrics.

The network, the loss, the decoding and the metrics are plain PyTorch / torchmetrics
(``models/``, ``losses/``, ``metrics/``); how a training batch becomes gradients is a
strategy of ``training/``, chosen once when the module is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection

from salad_lightning.data.batch import Batch
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.losses.frozen import FrozenAlpha
from salad_lightning.metrics.detection_calibration import DetectionCalibrationError
from salad_lightning.metrics.evaluation import Evaluation
from salad_lightning.metrics.tad_map import TemporalActionDetectionMAP
from salad_lightning.models.postprocess import postprocess_batch
from salad_lightning.training.step import make_training_step
from salad_lightning.utils.distributed import gather_videos


def _datamodule_fact(dm: Any, name: str) -> Any:
    """``dm.<name>``, or None when the datamodule cannot know it (no annotations or no
    training split, e.g. predicting from features alone: the checkpoint then has it)."""
    try:
        return getattr(dm, name, None)
    except (ValueError, FileNotFoundError, KeyError):
        return None


class SaladLitModule(pl.LightningModule):
    """Training, evaluation and prediction of a :class:`~salad_lightning.models.net.SaladNet`.

    Args:
        net: the network (a plain ``nn.Module`` returning ``SaladOutput``).
        loss: the criterion (Eq. 2-4), called with ``cls_only=True`` during the
            classification-head pre-training epochs.
        optimizer: a partial taking the parameters (Hydra ``_partial_: true``).
        scheduler: optional partial taking the optimiser (stepped once per epoch).
        max_offset: ``W`` of docs/method.md §2 in feature steps; ``None`` takes the
            datamodule's (the longest training ground truth, rounded up). Saved in the
            checkpoint as a buffer, so test and predict use the training value.
        cls_pretrain_epochs: epochs that train the classification head alone (§4.2).
        postprocess: keyword arguments of :func:`postprocess_batch` (fusion, NMS, top-k).
        tiou_thresholds: thresholds of the validation/test mAP.
        class_names: label names in class-index order; ``None`` takes the datamodule's.
        calibration_bins: bins of the expected calibration error.
        frozen_alpha_path: ``.npz`` of per-video alpha written by a trained run
            (ablation ``pruning=frozen``).
        compile / cuda_graph / cuda_graph_*: the training-step strategy
            (:func:`~salad_lightning.training.step.make_training_step`; docs/design.md).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: SaladCriterion,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        max_offset: float | None = None,
        cls_pretrain_epochs: int = 0,
        postprocess: dict[str, Any] | None = None,
        tiou_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
        class_names: Sequence[str | None] | None = None,
        calibration_bins: int = 15,
        frozen_alpha_path: str | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        cuda_graph_warmup_steps: int = 3,
        cuda_graph_max_graphs: int = 64,
        cuda_graph_time_bucket: int = 256,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.cls_pretrain_epochs = int(cls_pretrain_epochs)
        self.postprocess_kwargs = dict(postprocess or {})
        self.tiou_thresholds = tuple(float(t) for t in tiou_thresholds)
        self.class_names = list(class_names) if class_names is not None else None
        self.calibration_bins = int(calibration_bins)
        self.training_step_strategy = make_training_step(
            net,
            loss,
            compile=compile,
            cuda_graph=cuda_graph,
            frozen=FrozenAlpha.load(frozen_alpha_path) if frozen_alpha_path else None,
            warmup_steps=cuda_graph_warmup_steps,  # these three: the graph strategy's only
            max_graphs=cuda_graph_max_graphs,
            time_bucket=cuda_graph_time_bucket,
        )
        self.automatic_optimization = self.training_step_strategy.automatic_optimization
        self.register_buffer("max_offset", torch.tensor(float(max_offset or 0.0)))
        metrics = MetricCollection(
            {
                "map": TemporalActionDetectionMAP(tiou_thresholds=self.tiou_thresholds),
                "calibration": DetectionCalibrationError(n_bins=self.calibration_bins),
            },
            compute_groups=False,
        )
        self.val_metrics, self.test_metrics = metrics.clone(), metrics.clone()
        self.test_detections: list[dict[str, Any]] = []
        self.evaluation: Evaluation | None = None  # the last epoch's, validation or test

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if dm is not None and float(self.max_offset) <= 0:
            offset = _datamodule_fact(dm, "max_offset")
            if offset is not None:
                self.max_offset.fill_(float(offset))
        if dm is not None and self.class_names is None:
            index = _datamodule_fact(dm, "class_index")
            if index is not None:
                self.class_names = list(index.names)

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Refuse, by key, the trainer settings the training strategy cannot take (before
        ``fit``: Lightning's own checks would otherwise answer first, without the key)."""
        self.training_step_strategy.check(trainer)

    def _require_max_offset(self) -> None:
        """After a checkpoint restore, W must be known (from training data or the checkpoint)."""
        if float(self.max_offset) <= 0:
            raise ValueError(
                "model.max_offset is null, the checkpoint has none and the datamodule has no "
                "training split to compute it from; pass model.max_offset=<steps>"
            )

    on_fit_start = on_validation_start = on_test_start = on_predict_start = _require_max_offset

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = self.class_names
        # the network's settings: test, predict and export rebuild it from these
        checkpoint["net_config"] = dict(getattr(self.net, "config", {}))
        # the matching settings a later `mode=export_alpha` must reuse
        checkpoint["matching"] = {"mu": self.criterion.mu}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("class_names"):
            self.class_names = list(checkpoint["class_names"])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    # ----------------------------------------------------------------- forward
    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None):
        """Inference: the raw network outputs (see ``SaladOutput``)."""
        return self.net(features, lengths)

    def transfer_batch_to_device(self, batch: Batch, device, dataloader_idx: int) -> Batch:
        # Only the tensors travel; the per-video metadata and the host lengths stay.
        # Lightning's generic transfer walks every element of `meta` (~18 ms per batch of 16).
        if device.type != "cuda":
            return batch.to(device, non_blocking=True)
        # A side stream, so that the copy overlaps the previous step's kernels instead of
        # queueing behind them (a THUMOS14 batch is 75 MB, ~3 ms).
        if getattr(self, "_copy_stream", None) is None:
            self._copy_stream = torch.cuda.Stream(device=device)
        compute = torch.cuda.current_stream(device)
        with torch.cuda.stream(self._copy_stream):
            moved = batch.to(device, non_blocking=True)
        compute.wait_stream(self._copy_stream)
        for v in moved.tensors().values():
            v.record_stream(compute)  # the allocator must not reuse them before compute is done
        return moved

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        cls_only = self.current_epoch < self.cls_pretrain_epochs
        logs = self.training_step_strategy.step(self, batch, cls_only)
        loss = logs["train/loss"]
        if self._logging_step():
            # tensors go as they are: read back only when a line is written
            logs = {k: v.detach() for k, v in logs.items()}
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch.size)
            # the progress bar shows the loss (and, from the evaluation, the last val/mAP)
            self.log("loss", logs["train/loss"], prog_bar=True, logger=False, batch_size=batch.size)
        return loss

    def on_train_start(self) -> None:
        self.training_step_strategy.on_train_start(self)

    def on_train_epoch_end(self) -> None:
        self.training_step_strategy.on_train_epoch_end(self)

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's logs (every ``log_every_n_steps``).

        ``self.log`` costs ~0.7 ms of host time per key even on steps whose values
        Lightning then drops; on an ActivityNet-sized step (~11 ms of GPU work) that
        was a third of the step, so the keys are logged only when they are written.
        """
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    # -------------------------------------------------------------- evaluation
    def _predict_batch(self, batch: Batch) -> list[dict[str, Any]]:
        out, segments = self.net.proposals(batch.features, batch.lengths_host, self.max_offset)
        preds = postprocess_batch(
            segments=segments,
            score_logits=out.score_logits,
            cls_logits=out.cls_logits,
            frame_mask=batch.frame_mask,
            scale=batch.scale,
            offset=batch.offset,
            duration=batch.duration,
            **self.postprocess_kwargs,
        )
        for p, m in zip(preds, batch.meta):
            p["video_id"] = m["video_id"]
        return preds

    @staticmethod
    def _targets(batch: Batch) -> list[dict[str, Any]]:
        """The whole videos' ground truth as published (what the evaluator reads)."""
        return [
            {
                "video_id": m["video_id"],
                "segments": np.asarray(m["gt_segments_sec"], dtype=np.float64).reshape(-1, 2),
                "labels": np.asarray(m["gt_labels"], dtype=np.int64).reshape(-1),
            }
            for m in batch.meta
        ]

    def _evaluate_batch(self, batch: Batch, metrics: MetricCollection) -> list[dict[str, Any]]:
        preds, targets = self._predict_batch(batch), self._targets(batch)
        metrics.update(preds, targets)
        return [
            {**p, "gt": t, "duration": m["duration"]} for p, t, m in zip(preds, targets, batch.meta)
        ]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate_batch(batch, self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_detections.extend(self._evaluate_batch(batch, self.test_metrics))

    def on_test_epoch_start(self) -> None:
        self.test_detections = []

    def _finish_evaluation(self, split: str, metrics: MetricCollection) -> Evaluation:
        # Videos without features still count, as in the official evaluator run on the
        # published file: their ground truth enters the metrics with no prediction.
        dm = getattr(self.trainer, "datamodule", None)
        unloaded = dm.unloaded_targets(split) if hasattr(dm, "unloaded_targets") else []
        if unloaded:
            empty = {"segments": np.zeros((0, 2)), "scores": np.zeros(0), "labels": np.zeros(0)}
            metrics.update([{"video_id": t["video_id"], **empty} for t in unloaded], unloaded)
        values = metrics.compute()
        metrics.reset()
        detections = gather_videos(self.test_detections) if split == "test" else []
        result = Evaluation.from_metrics(
            split,
            values,
            self.tiou_thresholds,
            n_bins=self.calibration_bins,
            detections=detections,
        )
        # the metrics are already reduced across processes: every rank logs the same value
        self.log_dict({k: torch.tensor(v) for k, v in result.logs().items()}, sync_dist=False)
        if split == "val":
            self.log("val_mAP", torch.tensor(result.average_map), prog_bar=True, logger=False)
        self.evaluation = result
        return result

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            return
        self._finish_evaluation("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        return self._predict_batch(batch)
