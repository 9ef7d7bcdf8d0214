"""`PGCNLitModule`: P-GCN as a second stage, beside SALAD: its own network, targets and
loss, and the framework's evaluation (stores, report, run folder) through
`~salad_lightning.detector.DetectorModule`.

Training batches are `pgcn/data.py::PGCNTrainBatch` (8 sampled centres per video with
their 21-node neighbourhoods); evaluation batches are whole videos
(`PGCNEvalBatch`), every proposal a centre: the network runs over them in chunks of
``chunk`` neighbourhoods, then `pgcn/inference.py` scores each (proposal, class), keeps
the best pairs, runs the per-class NMS and refines the kept proposals, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from salad_lightning.data.detections import VideoDetections
from salad_lightning.detector import DetectorModule
from salad_lightning.pgcn.data import PGCNEvalBatch, PGCNTrainBatch
from salad_lightning.pgcn.inference import detections, score_proposals
from salad_lightning.pgcn.loss import pgcn_loss
from salad_lightning.pgcn.net import PGCNNet
from salad_lightning.pgcn.targets import RegressionStats, samples_per_kind

LOSS_KEYS = ("train/loss", "train/loss_activity", "train/loss_completeness", "train/loss_reg")


class PGCNLitModule(DetectorModule):
    """Training, evaluation and prediction of a :class:`~salad_lightning.pgcn.net.PGCNNet`.

    Args:
        net: the network.
        optimizer: a partial taking ``params`` (P-GCN: SGD, lr 0.01, momentum 0.9, weight
            decay 5e-4); the biases get twice its learning rate and no weight decay
            (:meth:`PGCNNet.param_groups`).
        scheduler: optional partial taking the optimiser, stepped per epoch (P-GCN: the
            learning rate / 10 at epochs 15, 30, 45).
        regression_stats: the training set's regression mean and std (``{"mean": [2],
            "std": [2]}``), given when the run fits (the datamodule computes them); kept
            in the checkpoint for test and predict.
        per_video / ratios: the samples per training video and their kinds' ratio (the
            completeness loss reads the slots: 1 positive, 6 negatives).
        postprocess: `pgcn.inference.detections`' settings (the per-class NMS) and
            ``top_k`` (the (proposal, class) pairs kept before it).
        chunk: neighbourhoods per forward at evaluation.
        **evaluation: the evaluation's keywords (tiou_thresholds, class_names,
            calibration_*, extra_tiou_thresholds, ground_truth_only, video_fusion:
            `DetectorModule`).
    """

    def __init__(
        self,
        net: PGCNNet,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        regression_stats: Mapping[str, Sequence[float]] | None = None,
        per_video: int = 8,
        ratios: Sequence[int] = (1, 6, 1),
        completeness_weight: float = 0.5,
        regression_weight: float = 0.5,
        postprocess: dict[str, Any] | None = None,
        chunk: int = 256,
        **evaluation: Any,
    ) -> None:
        super().__init__(**evaluation)
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "ground_truth_only", "video_fusion"],
            logger=False,
        )
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        positives, negatives, _ = samples_per_kind(int(per_video), tuple(ratios))
        self.slots = {"num_positive": positives, "num_negative": negatives}
        self.weights = {
            "completeness_weight": float(completeness_weight),
            "regression_weight": float(regression_weight),
        }
        self.postprocess_kwargs = dict(postprocess or {})
        self.chunk = int(chunk)
        stats = regression_stats or {"mean": [0.0, 0.0], "std": [0.0, 0.0]}
        self.register_buffer("reg_mean", torch.tensor(stats["mean"], dtype=torch.float64))
        self.register_buffer("reg_std", torch.tensor(stats["std"], dtype=torch.float64))

    def _stats(self) -> RegressionStats:
        if not bool((self.reg_std > 0).all()):
            raise ValueError(
                "P-GCN's regression statistics are unknown: the checkpoint has none and the "
                "run does not fit (test and predict take them from the training checkpoint)"
            )
        return RegressionStats.from_dict(
            {"mean": self.reg_mean.tolist(), "std": self.reg_std.tolist()}
        )

    def on_fit_start(self) -> None:
        self._stats()  # fails early, naming what is missing

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        # the partial's learning rate and weight decay set P-GCN's two groups
        base = getattr(self.optimizer_factory, "keywords", {})
        groups = self.net.param_groups(
            lr=float(base.get("lr", 0.01)), weight_decay=float(base.get("weight_decay", 0.0))
        )
        optimizer = self.optimizer_factory(params=groups)
        return self.with_scheduler(optimizer)

    def training_step(self, batch: PGCNTrainBatch, batch_idx: int) -> torch.Tensor:
        b, s = batch.labels.shape
        out = self.net(batch.activity.flatten(0, 1), batch.completeness.flatten(0, 1))
        loss = pgcn_loss(
            out.activity_logits.view(b, s, -1),
            out.completeness_logits.view(b, s, -1),
            out.regression.view(b, s, -1, 2),
            batch.labels,
            batch.kinds,
            batch.reg_targets,
            **self.slots,
            **self.weights,
        )
        logs = dict(zip(LOSS_KEYS, (loss.total, loss.activity, loss.completeness, loss.regression)))
        self.log_dict({k: v.detach() for k, v in logs.items()}, batch_size=b)
        self.log("loss", loss.total.detach(), prog_bar=True, logger=False, batch_size=b)
        return loss.total

    # ------------------------------------------------------------------ evaluation
    def detect(self, batch: PGCNEvalBatch) -> list[VideoDetections]:
        """Each video's detections: every proposal scored on its neighbourhood, the best
        (proposal, class) pairs, per-class NMS, refined boundaries (seconds)."""
        stats, out = self._stats(), []
        options = dict(self.postprocess_kwargs)
        top_k = options.pop("top_k", 2000)
        for video, meta in zip(batch.videos, batch.meta):
            vid, duration = meta["video_id"], float(meta["duration"])
            if len(video.segments) == 0:
                out.append(VideoDetections(vid, [], [], [], best_score=float("nan")))
                continue
            parts = []
            for lo in range(0, len(video.nodes), self.chunk):
                nodes = video.nodes[lo : lo + self.chunk]
                parts.append(self.net(video.activity[nodes], video.completeness[nodes]))
            act = torch.cat([p.activity_logits for p in parts]).float().cpu().numpy()
            comp = torch.cat([p.completeness_logits for p in parts]).float().cpu().numpy()
            reg = torch.cat([p.regression for p in parts]).float().cpu().numpy()
            scored = score_proposals(
                video.segments, act, comp, reg, stats, top_k=top_k, clip=(0.0, duration)
            )
            segs, scores, labels = detections(scored, **options)
            best = float(scored.scores.max()) if scored.scores.size else float("nan")
            out.append(VideoDetections(vid, segs, scores, labels, best_score=best))
        return out

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch.to(device, non_blocking=True)
