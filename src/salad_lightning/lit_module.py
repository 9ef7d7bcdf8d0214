"""The SALAD *system*: wires SaladNet, the criterion, post-processing and the metrics.

The network, the loss and the decoding are plain PyTorch modules/functions
(``models/``, ``losses/``); this class only connects them to Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.metrics import TemporalActionDetectionMAP
from salad_lightning.metrics.calibration import expected_calibration_error, true_positive_flags
from salad_lightning.models.postprocess import offsets_to_segments, postprocess_batch
from salad_lightning.utils.distributed import gather_videos
from salad_lightning.utils.frozen import FrozenAlpha
from salad_lightning.utils.step_graph import StepGraphs

STAT_KEYS = ("pruned_share", "gt_matched_share", "positives_per_video")


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
        scheduler: optional partial taking the optimiser.
        max_offset: ``W`` of SPEC §2 in feature steps; ``None`` takes the
            datamodule's (the longest training ground truth, rounded up). Saved in
            the checkpoint as a buffer, so test and predict use the training value.
        cls_pretrain_epochs: epochs that train the classification head alone.
        postprocess: keyword arguments of :func:`postprocess_batch` (fusion, NMS, top-k).
        tiou_thresholds: thresholds of the validation/test mAP.
        class_names: label names in class-index order; ``None`` takes the datamodule's.
        calibration_bins: bins of the expected calibration error.
        frozen_alpha_path: ``.npz`` of per-video alpha written by a trained run
            (ablation ``pruning=frozen``).
        compile: ``torch.compile`` the training step's heads, matching and loss as one
            graph (the GRU stays cuDNN's). Helps where the host, not the GRU, bounds
            the step (short sequences); measured on an H100 and on the CPU in
            experiments/benchmarks/README.md.
        cuda_graph: run the training step's forward and backward as CUDA graphs
            (:mod:`salad_lightning.utils.step_graph`) on one CUDA device in 32-bit
            precision; elsewhere, and with ``pruning=frozen``, every step runs eagerly.
            Training then uses Lightning's manual optimisation (same optimiser, same
            per-epoch scheduler steps).
        cuda_graph_warmup_steps: eager steps before the first capture.
        cuda_graph_max_graphs: graphs kept (one per batch shape, ground-truth slots,
            padding and classification pre-training flag); further shapes run eagerly.
        cuda_graph_time_bucket: padded batches are padded further to a multiple of
            this many steps, so that few shapes (and graphs) occur.
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
        class_names: Sequence[str] | None = None,
        calibration_bins: int = 15,
        frozen_alpha_path: str | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        cuda_graph_warmup_steps: int = 3,
        cuda_graph_max_graphs: int = 64,
        cuda_graph_time_bucket: int = 256,
    ) -> None:
        super().__init__()
        if compile and cuda_graph:
            raise ValueError(
                "model.compile=true and model.cuda_graph=true are alternatives (a graph "
                "already removes the launch overhead compile targets); set one to false"
            )
        for name, value in (
            ("cuda_graph_warmup_steps", cuda_graph_warmup_steps),
            ("cuda_graph_max_graphs", cuda_graph_max_graphs),
            ("cuda_graph_time_bucket", cuda_graph_time_bucket),
        ):
            if int(value) < 1:
                raise ValueError(f"model.{name} must be >= 1, found {value}")
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
        self.frozen = FrozenAlpha.load(frozen_alpha_path) if frozen_alpha_path else None
        self.compile = bool(compile)
        self.cuda_graph = bool(cuda_graph)
        # manual optimisation: the graph runs forward + backward, the optimiser steps after it
        self.automatic_optimization = not self.cuda_graph
        self.step_graphs: StepGraphs | None = None
        self.register_buffer("max_offset", torch.tensor(float(max_offset or 0.0)))
        self.val_map = TemporalActionDetectionMAP(tiou_thresholds=self.tiou_thresholds)
        self.test_map = TemporalActionDetectionMAP(tiou_thresholds=self.tiou_thresholds)
        self._calib: list[tuple[np.ndarray, np.ndarray]] = []
        self.test_outputs: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] = {}

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
        if self.compile and stage == "fit" and self._compiled_loss is None:
            # a compiled function beside the registered net: checkpoints keep `net.*` keys
            self.__dict__["_compiled_loss"] = torch.compile(self._head_loss, dynamic=True)

    _compiled_loss = None

    def _require_max_offset(self) -> None:
        """After a checkpoint restore, W must be known (from training data or the checkpoint)."""
        if float(self.max_offset) <= 0:
            raise ValueError(
                "model.max_offset is null, the checkpoint has none and the datamodule has no "
                "training split to compute it from; pass model.max_offset=<steps>"
            )

    def on_fit_start(self) -> None:
        self._require_max_offset()

    def on_validation_start(self) -> None:
        self._require_max_offset()

    def on_test_start(self) -> None:
        self._require_max_offset()

    def on_predict_start(self) -> None:
        self._require_max_offset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = self.class_names
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

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Only the tensors travel; the per-video metadata stays on the host. Lightning's
        # generic transfer walks every element of `meta` and cost ~18 ms per batch of 16.
        # Packing needs the lengths on the host: keep that copy, so the training step
        # never waits for the device to hand them back.
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if device.type == "cuda":
            moved = self._copy_on_side_stream(tensors, device)
        else:
            moved = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
        out = {**batch, **moved}
        out["lengths_cpu"] = batch["lengths"]
        return out

    def _copy_on_side_stream(self, tensors: dict[str, torch.Tensor], device) -> dict:
        """Host-to-device copy on its own stream, so it overlaps the previous step's
        kernels instead of queueing behind them (a THUMOS batch is 75 MB, ~3 ms)."""
        if getattr(self, "_copy_stream", None) is None:
            self._copy_stream = torch.cuda.Stream(device=device)
        compute = torch.cuda.current_stream(device)
        with torch.cuda.stream(self._copy_stream):
            moved = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
        compute.wait_stream(self._copy_stream)
        for v in moved.values():
            v.record_stream(compute)  # the allocator must not reuse them before compute is done
        return moved

    def _segments(self, batch) -> tuple[Any, torch.Tensor]:
        out = self.net(batch["features"], self._lengths(batch))
        return out, offsets_to_segments(out.offsets, self.max_offset)

    @staticmethod
    def _lengths(batch) -> torch.Tensor:
        return batch["lengths_cpu"] if "lengths_cpu" in batch else batch["lengths"].cpu()

    # ---------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        cls_only = self.current_epoch < self.cls_pretrain_epochs
        if self.automatic_optimization:
            result = self._step_logs(batch, cls_only)
            loss = result["train/loss"]
        else:
            result = self._manual_step(batch, cls_only)
            # a copy: a graph's output is overwritten by its next replay, and callbacks
            # may keep the step's outputs
            loss = result["train/loss"].detach().clone()
        if self._logging_step():
            self._log_train(result, batch["features"].shape[0])
        return loss

    def _step_logs(self, batch, cls_only: bool) -> dict[str, torch.Tensor]:
        """Forward and loss of a training batch (eager, or with the compiled loss)."""
        state = self.net.encode(batch["features"], self._lengths(batch))
        frozen_alpha = self.frozen.batch_alpha(batch, state.device) if self.frozen else None
        head_loss = self._compiled_loss if self._compiled_loss is not None else self._head_loss
        return self._batch_head_loss(head_loss, state, batch, frozen_alpha, cls_only)

    def _batch_head_loss(
        self,
        head_loss: Callable[..., dict[str, torch.Tensor]],
        state: torch.Tensor,
        batch: dict[str, torch.Tensor],
        frozen_alpha: torch.Tensor | None,
        cls_only: bool,
    ) -> dict[str, torch.Tensor]:
        """``head_loss`` (:meth:`_head_loss` or its compiled form) on a batch's targets."""
        return head_loss(
            state,
            self.max_offset,
            batch["gt_segments"],
            batch["gt_labels"],
            batch["gt_mask"],
            batch["frame_mask"],
            frozen_alpha,
            cls_only=cls_only,
        )

    def _manual_step(self, batch, cls_only: bool) -> dict[str, torch.Tensor]:
        """``cuda_graph``: forward + backward from a graph where the batch fits one,
        eagerly otherwise; then the optimiser step."""
        opt = self.optimizers()
        key = None
        if self.step_graphs is not None and self.frozen is None:
            key = self.step_graphs.key(batch, cls_only)
        if key is not None:
            result = self.step_graphs.step(batch, key)
        else:
            opt.zero_grad()
            result = self._step_logs(batch, cls_only)
            self.manual_backward(result["train/loss"])
        opt.step()
        return result

    def _graph_forward(
        self, inputs: dict[str, torch.Tensor], cls_only: bool
    ) -> dict[str, torch.Tensor]:
        """What a CUDA graph captures (with its backward): the step on fixed-shape inputs."""
        if "lengths" in inputs:  # padded in time: the GRU without packing
            state = self.net.encode_padded(inputs["features"], inputs["lengths"])
        else:
            state = self.net.encode(inputs["features"], None)
        return self._batch_head_loss(self._head_loss, state, inputs, None, cls_only)

    def on_train_start(self) -> None:
        self.step_graphs = None
        if not self.cuda_graph:
            return
        why = None
        if self.device.type != "cuda":
            why = f"the module is on {self.device.type}, not CUDA"
        elif self.trainer.world_size > 1:
            why = f"{self.trainer.world_size} processes (graphs are single-device here)"
        elif str(self.trainer.precision) not in ("32-true", "32"):
            why = f"trainer.precision={self.trainer.precision} (graphs need 32-true)"
        if why is not None:
            rank_zero_warn(f"model.cuda_graph=true: every training step runs eagerly: {why}")
            return
        self.step_graphs = StepGraphs(
            list(self.parameters()),
            self._graph_forward,
            warmup_steps=self.hparams.cuda_graph_warmup_steps,
            max_graphs=self.hparams.cuda_graph_max_graphs,
            time_bucket=self.hparams.cuda_graph_time_bucket,
        )

    def on_train_epoch_end(self) -> None:
        if self.automatic_optimization:
            return
        # manual optimisation: Lightning leaves the per-epoch scheduler step to the module
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()

    def _head_loss(
        self,
        state: torch.Tensor,
        max_offset: torch.Tensor,
        gt_segments: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
        frame_mask: torch.Tensor,
        frozen_alpha: torch.Tensor | None,
        *,
        cls_only: bool,
    ) -> dict[str, torch.Tensor]:
        """Heads, decoding, matching and loss from the encoder's state: the part of the
        step that ``compile`` turns into one graph. Returns the logged values by key."""
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
        logs = {
            "train/loss": total,
            "train/loss_sa": result.loss_sa,
            "train/loss_reg": result.loss_reg,
            "train/loss_cls": result.loss_cls,
        }
        logs.update({f"train/{k}": result.stats[k] for k in STAT_KEYS})
        return logs

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's logs (every ``log_every_n_steps``).

        ``self.log`` costs ~0.7 ms of host time per key even on steps whose values
        Lightning then drops; on an ActivityNet-sized step (~11 ms of GPU work) that
        was a third of the step, so the keys are logged only when they are written.
        """
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def _log_train(self, logs: dict[str, torch.Tensor], batch_size: int) -> None:
        # Tensors go to the logger as they are: read back only when a line is written.
        # Copies, since a CUDA graph's outputs are overwritten by its next replay.
        logs = {k: v.detach().clone() for k, v in logs.items()}
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)

    # -------------------------------------------------------------- evaluation
    def _predict_batch(self, batch) -> list[dict[str, torch.Tensor]]:
        out, segments = self._segments(batch)
        return postprocess_batch(
            segments=segments,
            score_logits=out.score_logits,
            cls_logits=out.cls_logits,
            frame_mask=batch["frame_mask"],
            scale=batch["scale"],
            offset=batch["offset"],
            duration=batch["duration"],
            **self.postprocess_kwargs,
        )

    @staticmethod
    def _targets(batch) -> list[dict[str, Any]]:
        return [
            {
                "video_id": m["video_id"],
                "segments": torch.as_tensor(
                    np.asarray(m["gt_segments_sec"]), dtype=torch.float64
                ).reshape(-1, 2),
                "labels": torch.as_tensor(np.asarray(m["gt_labels"]), dtype=torch.long).reshape(-1),
            }
            for m in batch["meta"]
        ]

    def _eval_step(self, batch, metric: TemporalActionDetectionMAP) -> list[dict[str, Any]]:
        preds = self._predict_batch(batch)
        targets = self._targets(batch)
        for p, t in zip(preds, targets):
            p["video_id"] = t["video_id"]
        metric.update(preds, targets)
        for p, t in zip(preds, targets):
            tp = true_positive_flags(
                p["segments"].numpy(),
                p["scores"].numpy(),
                p["labels"].numpy(),
                t["segments"].numpy(),
                t["labels"].numpy(),
                tiou=0.5,
            )
            self._calib.append((p["scores"].numpy(), tp))
        return [{**p, "gt": t} for p, t in zip(preds, targets)]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_map)

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_outputs.extend(self._eval_step(batch, self.test_map))

    def on_validation_epoch_start(self) -> None:
        self._calib = []

    def on_test_epoch_start(self) -> None:
        self._calib = []
        self.test_outputs = []

    def _add_unloaded(self, split: str, metric: TemporalActionDetectionMAP) -> None:
        """Videos of the split without features still count, as the official evaluator
        counts them: their ground truth enters the metric with no prediction."""
        dm = getattr(self.trainer, "datamodule", None)
        targets = dm.unloaded_targets(split) if hasattr(dm, "unloaded_targets") else []
        if targets:
            empty = np.zeros((0, 2))
            preds = [
                {"video_id": t["video_id"], "segments": empty, "scores": [], "labels": []}
                for t in targets
            ]
            metric.update(preds, targets)

    def _finish_eval(self, split: str, metric: TemporalActionDetectionMAP) -> None:
        self._add_unloaded(split, metric)
        values = metric.compute()
        metric.reset()
        logs = {f"{split}/{k}": v for k, v in values.items() if k.startswith("mAP")}
        conf, correct = self._gather_calibration()
        ece = expected_calibration_error(conf, correct, n_bins=self.calibration_bins)
        logs[f"{split}/ece"] = torch.tensor(float(ece))
        # The metric already reduced across processes: every rank logs the same value.
        self.log_dict(logs, sync_dist=False)
        self.last_eval = {
            "split": split,
            "values": values,
            "confidences": conf,
            "correct": correct,
            "n_bins": self.calibration_bins,
        }

    def _gather_calibration(self) -> tuple[np.ndarray, np.ndarray]:
        conf = np.concatenate([c for c, _ in self._calib]) if self._calib else np.zeros(0)
        correct = np.concatenate([k for _, k in self._calib]) if self._calib else np.zeros(0, bool)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (conf, correct))
            conf = np.concatenate([g[0] for g in gathered])
            correct = np.concatenate([g[1] for g in gathered])
        return conf, correct.astype(bool)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_map.reset()
            return
        self._finish_eval("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test", self.test_map)
        self.test_outputs = gather_videos(self.test_outputs)

    def predict_step(self, batch, batch_idx: int) -> list[dict[str, Any]]:
        preds = self._predict_batch(batch)
        for p, m in zip(preds, batch["meta"]):
            p["video_id"] = m["video_id"]
        return preds
