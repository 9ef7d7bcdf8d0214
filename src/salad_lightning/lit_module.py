"""The SALAD *system*: wires SaladNet, the criterion, a training-step strategy and
post-processing; evaluation and prediction come from
:class:`~salad_lightning.detector.DetectorModule`.

The network, the loss and the decoding are plain PyTorch (``models/``, ``losses/``);
how a training batch becomes gradients is a strategy of ``training/``, chosen once when
the module is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from salad_lightning.data.batch import Batch
from salad_lightning.data.detections import VideoDetections
from salad_lightning.detector import DetectorModule
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.losses.frozen import FrozenAlpha
from salad_lightning.models.postprocess import postprocess_batch
from salad_lightning.models.video_fusion import VIDEO_FUSION_KEYS
from salad_lightning.training import make_training_step


class SaladLitModule(DetectorModule):
    """Training, evaluation and prediction of a :class:`~salad_lightning.models.net.SaladNet`.

    Args:
        net: the network (a plain ``nn.Module`` returning ``SaladOutput``).
        loss: the criterion (Eq. 2-4), called with ``cls_only=True`` during the
            classification-head pre-training epochs.
        optimizer: a partial taking the parameters (Hydra ``_partial_: true``).
        scheduler: optional partial taking the optimiser (stepped once per epoch).
        max_offset: ``W`` of docs/method.md §2 in feature steps: the config's, else the
            training data's (the longest training ground truth, rounded up), given when
            the module is built. Saved in the checkpoint as a buffer, so test and predict
            use the training value.
        cls_pretrain_epochs: epochs that train the classification head alone (§4.2).
        postprocess: keyword arguments of :func:`postprocess_batch` (fusion, NMS, top-k);
            its video-level fusion keys (``video_*``) are the session's, which builds
            ``video_fusion`` from them.
        frozen_alpha_path: ``.npz`` of per-video alpha written by a trained run
            (ablation ``pruning=frozen``).
        compile / cuda_graph / cuda_graph_*: the training-step strategy
            (:func:`~salad_lightning.training.make_training_step`; docs/design.md).
        **evaluation: the evaluation's keywords (tiou_thresholds, class_names,
            calibration_bins, calibration_tiou, extra_tiou_thresholds, ground_truth_only,
            video_fusion: :class:`~salad_lightning.detector.DetectorModule`).
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
        frozen_alpha_path: str | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        cuda_graph_warmup_steps: int = 3,
        cuda_graph_max_graphs: int = 64,
        cuda_graph_time_bucket: int = 256,
        **evaluation: Any,
    ) -> None:
        super().__init__(**evaluation)
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "ground_truth_only", "video_fusion"],
            logger=False,
        )
        self.net = net
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.cls_pretrain_epochs = int(cls_pretrain_epochs)
        self.postprocess_kwargs = {
            k: v for k, v in (postprocess or {}).items() if k not in VIDEO_FUSION_KEYS
        }
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

    # ------------------------------------------------------------------ set-up
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
        # the network's settings: test, predict and export rebuild it from these
        checkpoint["net_config"] = dict(getattr(self.net, "config", {}))
        # the matching settings a later `mode=export_alpha` must reuse
        checkpoint["matching"] = {"mu": self.criterion.mu}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        return self.with_scheduler(optimizer)

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
        written = self._logs_written(self.global_step)  # before a manual optimiser step
        logs = self.training_step_strategy.step(self, batch, cls_only)
        loss = logs["train/loss"]
        if written:
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

    def _logs_written(self, step: int) -> bool:
        """Whether Lightning writes the logs of the step that starts after ``step``
        optimiser steps (every ``trainer.log_every_n_steps``: at the start of a batch the
        optimiser steps taken are the batches Lightning counts for its loggers).

        ``self.log`` costs ~0.7 ms of host time per key even on steps whose values
        Lightning then drops; on an ActivityNet-sized step (~11 ms of GPU work) that
        was a third of the step, so the keys are logged only when they are written.
        """
        every = self.trainer.log_every_n_steps
        return bool(every) and ((step + 1) % every == 0 or self.trainer.should_stop)

    # -------------------------------------------------------------- evaluation
    def detect(
        self, batch: Batch, postprocess: dict[str, Any] | None = None
    ) -> list[VideoDetections]:
        """Each video's detections: proposals, score fusion, NMS (docs/method.md §5), with
        the run's post-processing or ``postprocess``."""
        out, segments = self.net.proposals(batch.features, batch.lengths_host, self.max_offset)
        return postprocess_batch(
            segments=segments,
            score_logits=out.score_logits,
            cls_logits=out.cls_logits,
            frame_mask=batch.frame_mask,
            scale=batch.scale,
            offset=batch.offset,
            duration=batch.duration,
            video_ids=[m["video_id"] for m in batch.meta],
            **(self.postprocess_kwargs if postprocess is None else postprocess),
        )

    def proposal_settings(self, top_k: int = 800) -> dict[str, Any]:
        """The post-processing of :meth:`proposals`: the run's, made class-agnostic."""
        return {
            **self.postprocess_kwargs,
            "fusion": "regression",
            "nms": "soft",
            "class_agnostic": True,
            "min_score": 0.0,
            "max_segments": int(top_k),
            "pre_nms_topk": None,
            "top_k": None,
        }

    def proposals(self, batch: Batch, top_k: int = 800) -> list[VideoDetections]:
        """Class-agnostic proposals for a second stage: every step's segment with SALAD's
        own score p_t (no fusion with the class confidence), class-agnostic soft-NMS with
        the run's NMS settings (its ``nms_method``, ``sigma``, ``iou_threshold``; soft even
        where the run's evaluation takes no NMS), no score floor, the ``top_k`` best per
        video (:meth:`proposal_settings`). Their labels are the classification head's and
        are not used."""
        return self.detect(batch, self.proposal_settings(top_k))
