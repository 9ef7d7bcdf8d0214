"""`DetectorModule`: what every detector of the framework shares as a LightningModule.

A detector turns a batch into one `VideoDetections` per video (:meth:`detect`); the
rest is here, once: one evaluation store per split (``val``, ``test``, ``predict``:
`~salad_lightning.metrics.store.DetectionStore`, matched once per epoch), the
validation / test / predict steps that fill them, the epoch ends that log their
scalars, :meth:`evaluation` for the report writer
(`~salad_lightning.reporting.ReportWriter`), and the class names a checkpoint keeps.
SALAD (`~salad_lightning.lit_module.SaladLitModule`) and any second stage are
subclasses that add their network, loss and optimisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from salad_lightning.data.batch import Batch
from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.data.extracted import record_mismatches
from salad_lightning.metrics.evaluation import Evaluation
from salad_lightning.metrics.store import DetectionStore
from salad_lightning.models.video_fusion import VideoFusion

SPLITS = ("train", "val", "test", "predict")  # train: the train fit (train_fit.TrainFit)


class DetectorModule(pl.LightningModule):
    """Evaluation, prediction and class names of a detector (subclasses: :meth:`detect`).

    Args:
        tiou_thresholds: the mAP's thresholds (the dataset's).
        class_names: label names in class-index order, from the data; ``None`` when the
            data does not name them (predicting on features alone): the checkpoint's then.
        calibration_bins / calibration_tiou: the ECE's bins and the tIoU of a correct
            detection.
        extra_tiou_thresholds: further thresholds the stores match at, for the report's
            readers (the diagnosis').
        ground_truth_only: per split, the videos evaluated with no detection (the
            split's videos without features: the official evaluator counts them).
        video_fusion: an external classifier's video-level class scores fused into every
            video's detections before they are stored (``postprocess.video_scores``;
            `~salad_lightning.models.video_fusion`); None: the detector's own labels.
    """

    def __init__(
        self,
        *,
        tiou_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
        class_names: Sequence[str] | None = None,
        calibration_bins: int = 15,
        calibration_tiou: float = 0.5,
        extra_tiou_thresholds: Sequence[float] = (),
        ground_truth_only: Mapping[str, Sequence[VideoGroundTruth]] | None = None,
        video_fusion: VideoFusion | None = None,
    ) -> None:
        super().__init__()
        self.video_fusion = video_fusion
        self.tiou_thresholds = tuple(float(t) for t in tiou_thresholds)
        self.class_names = list(class_names) if class_names is not None else None
        unknown = sorted(set(ground_truth_only or {}) - set(SPLITS))
        if unknown:
            raise ValueError(f"ground_truth_only: unknown split(s) {unknown}; known: {SPLITS}")
        self.stores = nn.ModuleDict(
            {
                f"{split}_store": DetectionStore(
                    self.tiou_thresholds,
                    split=split,
                    calibration_tiou=calibration_tiou,
                    calibration_bins=calibration_bins,
                    extra_tiou_thresholds=extra_tiou_thresholds,
                    ground_truth_only=(ground_truth_only or {}).get(split, ()),
                )
                for split in SPLITS
            }
        )

    def detect(self, batch: Batch) -> list[VideoDetections]:
        """One `VideoDetections` per video of ``batch`` (segments in seconds)."""
        raise NotImplementedError

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Refuse, by key, trainer settings the detector cannot take (before ``fit``);
        none by default."""

    # -------------------------------------------------------------- evaluation
    def store(self, split: str) -> DetectionStore:
        """``split``'s evaluation store (``self.stores`` keys them ``<split>_store``: a
        module's ``train`` attribute is taken)."""
        return self.stores[f"{split}_store"]

    def evaluation(self, split: str) -> Evaluation:
        """The typed result of ``split``'s last epoch (its store's, matched once)."""
        return self.store(split).evaluate()

    def store_batch(self, split: str, batch: Batch) -> list[VideoDetections]:
        """Detect the batch's videos (fused with the video-level class scores, when the run
        has them) and add them, with their ground truth, to ``split``'s store; returns the
        detections."""
        truths = [
            m.get("ground_truth") or VideoGroundTruth.empty(m["video_id"]) for m in batch.meta
        ]
        detections = self.detect(batch)
        if self.video_fusion is not None:
            detections = [self.video_fusion(d) for d in detections]
        self.store(split).update(detections, truths)
        return detections

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.store_batch("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.store_batch("test", batch)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[VideoDetections]:
        """This process's detections of the batch (``trainer.predict`` returns them); the
        report writer reads every process's from the predict store."""
        return self.store_batch("predict", batch)

    def on_validation_epoch_start(self) -> None:
        self.store("val").reset()

    def on_test_epoch_start(self) -> None:
        self.store("test").reset()

    def on_predict_epoch_start(self) -> None:
        self.store("predict").reset()

    def log_evaluation(self, split: str) -> Evaluation:
        """Log ``split``'s result (its store's) under ``split/``; returns it."""
        result = self.evaluation(split)
        # the store is already reduced across processes: every rank logs the same value
        self.log_dict(
            {k: torch.tensor(v, dtype=torch.float64) for k, v in result.logs().items()},
            sync_dist=False,
        )
        return result

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        result = self.log_evaluation("val")
        self.log("val_mAP", torch.tensor(result.average_map), prog_bar=True, logger=False)

    def on_test_epoch_end(self) -> None:
        self.log_evaluation("test")

    def on_predict_epoch_end(self) -> None:
        self.evaluation("predict")  # every process takes part in the gather

    # ------------------------------------------------------- the features record
    features: dict[str, Any] | None = None

    def with_scheduler(self, optimizer: Any) -> Any:
        """``configure_optimizers``' answer for ``optimizer``: alone, or with the
        subclass's ``scheduler_factory`` (a partial taking the optimiser; None: no
        scheduler) stepped once per epoch."""
        factory = getattr(self, "scheduler_factory", None)
        if factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": factory(optimizer=optimizer), "interval": "epoch"},
        }

    def record_features(self, record: Mapping[str, Any] | None) -> None:
        """The features this module's data are (`SaladDataModule.features_record`: a
        features.json's settings, or the config's geometry). Kept with the hyperparameters,
        so that a checkpoint says which features it was trained on; a checkpoint whose
        record differs is refused when loaded (:meth:`on_load_checkpoint`)."""
        self.features = dict(record) if record is not None else None
        if self.features is not None:
            self.hparams["features"] = self.features

    def check_features(
        self, saved: Mapping[str, Any] | None, where: str = "the checkpoint"
    ) -> None:
        """Refuse data made otherwise than the features ``saved`` (a checkpoint's record),
        naming both and every setting that differs."""
        wrong = record_mismatches(saved or {}, self.features or {})
        if wrong:
            raise ValueError(
                f"{where} was trained on other features than this data's: trained on "
                f"{saved['source']}, given {self.features['source']}:\n  "
                + "\n  ".join(wrong)
                + "\nMake the features with the checkpoint's settings (for video files, "
                "mode=predict extracts them so), or use a checkpoint trained on these"
            )

    # -------------------------------------------------------------- class names
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's features record, which this data's must match (where both
        have one), and its class names (saved with the hyperparameters; older checkpoints
        kept them under ``class_names``), which must be this data's when it has any."""
        trainer = self._trainer
        where = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        self.check_features(
            checkpoint.get("hyper_parameters", {}).get("features"),
            f"the checkpoint {where}" if where else "the checkpoint",
        )
        saved = checkpoint.get("hyper_parameters", {}).get("class_names")
        saved = saved or checkpoint.get("class_names")
        if not saved:
            return
        if self.class_names is not None and list(saved) != list(self.class_names):
            raise ValueError(
                f"the checkpoint's classes ({len(saved)}: {list(saved)[:5]}...) differ from "
                f"this data's ({len(self.class_names)}: {self.class_names[:5]}...); test and "
                "predict with the annotation file (or dataset.datamodule.class_index_file) "
                "the model was trained with"
            )
        self.class_names = list(saved)
