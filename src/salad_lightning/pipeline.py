"""The importable entry points behind ``python -m salad_lightning.run``: one per mode.

``train(cfg)`` fits (or resumes a run in its folder) then tests; ``test``, ``validate``,
``predict`` and ``export_alpha`` load a checkpoint; ``check`` reports on the data. The
objects of a run come from :mod:`salad_lightning.session`; nothing below these modules
sees a config object.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from salad_lightning import reporting
from salad_lightning.data.report import format_report
from salad_lightning.losses import frozen
from salad_lightning.metrics.diagnosis import Bins, diagnose_videos, write_diagnosis
from salad_lightning.plots import write_plots
from salad_lightning.session import (
    build_data,
    keep_csv_rows_before,
    preflight,
    prepare,
    resume_checkpoint,
    session,
)
from salad_lightning.utils.distributed import gather_videos
from salad_lightning.utils.io import atomic_write_json, atomic_write_text
from salad_lightning.utils.loggers import log_images, log_metrics, log_per_class_table

log = logging.getLogger(__name__)

# Lightning notes that the module's own batch transfer wins over the datamodule's: that
# is intended (only tensors travel, lit_module.py); the pytree note is Lightning's own;
# the evaluation metrics are reduced across processes by torchmetrics, so logging them
# without sync_dist is intended too. Test, validate and predict build no checkpoint
# callbacks (session.make_trainer), so Lightning's request for them is moot there.
warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
warnings.filterwarnings("ignore", message=".*It is recommended to use `self.log\\(.*sync_dist=True")
warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be")


class _DropLightningTips(logging.Filter):
    """Lightning's advertisement for another logging service on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())


def _finish_test(
    model: Any, trainer: pl.Trainer, loggers: list[Any], out_dir: Path, cfg, dm
) -> dict:
    """Write results.json, tables, plots and the diagnosis of the test epoch; print the table."""
    evaluation = model.evaluation
    names = model.class_names or []
    summary = reporting.summarise(evaluation, names)
    if trainer.is_global_zero:
        _say_if_nothing_was_detected(evaluation, cfg)
        atomic_write_json(
            out_dir / "results.json", reporting.results_json(evaluation.detections, names)
        )
        atomic_write_text(out_dir / "per_class_ap.md", reporting.per_class_markdown(summary))
        images = write_plots(
            evaluation.detections,
            names,
            evaluation.confidences,
            evaluation.correct,
            out_dir / "plots",
            num_timelines=int(cfg.get("num_timeline_plots", 4)),
            n_bins=evaluation.n_bins,
        )
        diagnosis = _diagnose(cfg.get("diagnosis"), evaluation, dm, out_dir / "diagnosis")
        if diagnosis is not None:
            images.update(
                {f"diagnosis/{k}": p for k, p in diagnosis[1].items() if k != "diagnosis"}
            )
            scalars = reporting.diagnosis_scalars(diagnosis[0], evaluation.split)
            log_metrics(loggers, scalars, step=trainer.global_step)
        log_images(loggers, images)
        log_per_class_table(loggers, f"{evaluation.split}/per_class_ap", summary)
        # on the console and in the run's run.log
        log.info("%s\nrun folder: %s", reporting.map_table(summary), out_dir.resolve())
    return summary


def _say_if_nothing_was_detected(evaluation: Any, cfg: DictConfig) -> None:
    """A run with no detection at all gets an mAP of 0 and says why: every proposal of
    every video scored under ``postprocess.min_score`` (a self-assessment head that
    collapsed to 0, as the ``score_gt_half`` target can), or NMS kept nothing."""
    videos = evaluation.detections
    if not videos or any(len(v["scores"]) for v in videos):
        return
    best = max(v.get("best_score", float("-inf")) for v in videos)
    floor = cfg.get("postprocess", {}).get("min_score")
    log.warning(
        "no detection on the %s split (%d videos): the highest score of any proposal, "
        "before NMS, was %.3g; postprocess.min_score is %s. The self-assessment head "
        "scores every step near 0 (experiments/README.md, runs with no detection)",
        evaluation.split, len(videos), best, floor,
    )  # fmt: skip


def _diagnose(node, evaluation, dm, out_dir: Path):
    """DETAD's diagnosis of the test detections (the videos without features included,
    as in the mAP), with the dataset's diagnosis settings; None when turned off or when
    the split has no ground truth to diagnose."""
    if node is None or not node.get("enabled", True):
        return None
    options = {
        "tiou_thresholds": tuple(float(t) for t in node.tiou_thresholds),
        **{k: Bins(**node[k]) for k in ("length_bins", "coverage_bins", "instance_bins")},
    }
    unloaded = dm.unloaded_targets(evaluation.split) if hasattr(dm, "unloaded_targets") else []
    videos = evaluation.detections + [
        {"video_id": t["video_id"], "duration": t["duration"], "gt": t} for t in unloaded
    ]
    try:  # secondary to the mAP: a video it cannot take (no duration) warns, not fails
        diagnosis = diagnose_videos(videos, **options)
    except ValueError as err:
        log.warning("diagnosis skipped: %s", err)
        return None
    if diagnosis is None:
        log.info(
            "diagnosis: no ground truth of positive length within its video in the split; skipped"
        )
        return None
    return diagnosis, write_diagnosis(diagnosis, out_dir)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split (``resume=RUN``: continue RUN in its folder), then test
    the last checkpoint. Returns the test metrics."""
    ckpt = resume_checkpoint(cfg)
    with session(cfg, ckpt=ckpt, fitting=True) as (datamodule, model, trainer, loggers, out_dir):
        model.check_trainer(trainer)
        _warn_if_only_classification(cfg)
        testing = cfg.get("test_after_training", True) and datamodule.hparams.test_subset
        preflight(datamodule, ["fit", "test"] if testing else ["fit"], out_dir)
        atomic_write_json(
            out_dir / "class_index.json", {"names": list(datamodule.class_index.names)}
        )
        if cfg.get("resume") and trainer.is_global_zero:
            step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
            keep_csv_rows_before(out_dir / "csv", int(step.get("global_step", 0)))
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
        summary: dict[str, Any] = {}
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if testing:
            last = _last_checkpoint(trainer)
            trainer.test(model, datamodule=datamodule, ckpt_path=last, verbose=False)
            summary = _finish_test(model, trainer, loggers, out_dir, cfg, datamodule)
        summary["val"] = val
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", summary)
        return summary


def _warn_if_only_classification(cfg: DictConfig) -> None:
    """Every epoch inside ``model.cls_pretrain_epochs`` trains the classification head
    alone: a run that never leaves them trains neither the regression nor the
    self-assessment (a sweep over λ1 or µ would give identical jobs)."""
    pretrain, epochs = int(cfg.model.get("cls_pretrain_epochs", 0)), int(cfg.trainer.max_epochs)
    if pretrain and epochs <= pretrain:
        warnings.warn(
            f"trainer.max_epochs={epochs} <= model.cls_pretrain_epochs={pretrain}: every epoch "
            "trains the classification head alone (the paper's pre-training, §4.2); the "
            "regression and self-assessment heads, λ1 and µ do nothing in this run. Raise "
            f"trainer.max_epochs above {pretrain} or set model.cls_pretrain_epochs=0",
            stacklevel=2,
        )


def _last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint of the last epoch (the ModelCheckpoint that monitors nothing)."""
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", "") is None and cb.best_model_path:
            return cb.best_model_path
    return None


def _require_ckpt(cfg: DictConfig, mode: str) -> str:
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        raise ValueError(f"mode={mode} needs ckpt_path=<file.ckpt>")
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"ckpt_path {ckpt} does not exist")
    return str(ckpt)


def test(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split."""
    ckpt = _require_ckpt(cfg, "test")
    with session(cfg, ckpt=ckpt) as (datamodule, model, trainer, loggers, out_dir):
        preflight(datamodule, ["test"], out_dir)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        summary = _finish_test(model, trainer, loggers, out_dir, cfg, datamodule)
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", summary)
        return summary


def validate(cfg: DictConfig) -> dict[str, float]:
    """Validation metrics of a checkpoint (the holdout split), in one process or under DDP."""
    ckpt = _require_ckpt(cfg, "validate")
    with session(cfg, ckpt=ckpt) as (datamodule, model, trainer, _, out_dir):
        preflight(datamodule, ["validate"], out_dir)
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt)
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", {"val": values})
        return {"val": values}


def predict(cfg: DictConfig) -> Path:
    """Detections for a features folder or one ``.npy`` file, as an ActivityNet results JSON."""
    ckpt = _require_ckpt(cfg, "predict")
    with session(cfg, ckpt=ckpt) as (datamodule, model, trainer, _, out_dir):
        preflight(datamodule, ["predict"], out_dir)
        batches = trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt)
        preds = gather_videos([p for batch in batches or [] for p in batch])
        path = Path(cfg.get("predict_output") or out_dir / "results.json")
        if trainer.is_global_zero:
            atomic_write_json(path, reporting.results_json(preds, model.class_names or []))
            log.info("wrote %d videos' detections to %s", len(preds), path.resolve())
        return path


def export_alpha(cfg: DictConfig) -> Path:
    """Write the alpha of Algorithm 1 on every training video (for ``pruning=frozen``):
    SALAD's own pruning, with the checkpoint's scores and segments, at the µ it was
    trained with, on whole videos, on the CPU."""
    ckpt = _require_ckpt(cfg, "export_alpha")
    datamodule, model, out_dir = prepare(cfg, ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    mu = float(state.get("matching", {}).get("mu", model.criterion.mu))  # older: the config's
    model.eval()
    datamodule.setup("fit")
    alphas = frozen.export_alpha(
        model.net, datamodule.full_train_dataloader(), max_offset=model.max_offset, mu=mu
    )
    path = Path(cfg.get("alpha_output") or out_dir / "frozen_alpha.npz")
    frozen.save_frozen_alpha(path, alphas)
    log.info("wrote alpha of %d videos to %s", len(alphas), path.resolve())
    return path


def check(cfg: DictConfig) -> dict[str, Any]:
    """``mode=check``: the pre-flight report of every split the config uses, no training.

    Prints it, writes ``data_report.json`` to the run folder, and fails (after writing)
    when a feature file cannot be used.
    """
    datamodule, out_dir = build_data(cfg)
    stages = ["fit"] + (["test"] if datamodule.hparams.test_subset is not None else [])
    report, problems = datamodule.preflight_report(stages, log_summary=False)
    atomic_write_json(out_dir / "data_report.json", report)
    print(format_report(report))
    print(f"data report: {out_dir / 'data_report.json'}")
    if problems:
        raise ValueError(f"{len(problems)} feature files cannot be used (listed above)")
    return report


MODES = {
    "check": check,
    "train": train,
    "test": test,
    "validate": validate,
    "predict": predict,
    "export_alpha": export_alpha,
}


def run(cfg: DictConfig) -> Any:
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {sorted(MODES)}")
    return MODES[mode](cfg)
