"""`ReportWriter`: the Lightning callback that writes a run's report after its test and
predict epochs, from the evaluation store's typed result (`salad_lightning.reporting`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from salad_lightning.reporting import results_json, summarise, write_predictions, write_report
from salad_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)


class ReportWriter(pl.Callback):
    """After a test epoch: `write_report` of the module's test result on rank zero (the
    run folder's report), and its summary on every rank (:attr:`summary`, what the
    pipeline writes to ``metrics.json``). After a predict epoch: ``results.json`` at
    ``predict_path`` (default: the run folder's), and in the run folder
    ``detections.csv``, ``subtitles/<video>.srt`` and ``plots/timeline_<video>.png``
    (`write_predictions`).

    The module offers ``evaluation(split)`` (its store's result, matched once) and
    ``class_names`` (`salad_lightning.detector.DetectorModule`). ``diagnosis``,
    ``num_timelines``, ``min_score`` and ``video_fusion``: `write_report`'s.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        diagnosis: Mapping[str, Any] | None = None,
        num_timelines: int = 4,
        predict_path: str | Path | None = None,
        min_score: float | None = None,
        video_fusion: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.options = {
            "diagnosis": dict(diagnosis) if diagnosis is not None else None,
            "num_timelines": int(num_timelines),
            "min_score": min_score,
            "video_fusion": dict(video_fusion) if video_fusion is not None else None,
        }
        self.predict_path = Path(predict_path) if predict_path else self.out_dir / "results.json"
        self.summary: dict[str, Any] | None = None  # the last test epoch's

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluation = pl_module.evaluation("test")
        names = list(pl_module.class_names or [])
        if not trainer.is_global_zero:
            self.summary = summarise(evaluation, names)
            return
        self.summary = write_report(
            evaluation,
            names,
            self.out_dir,
            loggers=trainer.loggers,
            step=trainer.global_step,
            **self.options,
        )

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluation = pl_module.evaluation("predict")
        if trainer.is_global_zero:
            names = list(pl_module.class_names or [])
            videos = evaluation.videos()
            atomic_write_json(self.predict_path, results_json(videos, names))
            durations = dict(zip(evaluation.video_ids, evaluation.durations.tolist()))
            write_predictions(videos, names, self.out_dir, durations=durations)
            log.info(
                "wrote %d videos' detections to %s, and detections.csv, subtitles/ and "
                "plots/ to %s",
                len(evaluation.video_ids),
                self.predict_path.resolve(),
                self.out_dir.resolve(),
            )
