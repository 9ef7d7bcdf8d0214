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

from salad_lightning.data.report import format_report
from salad_lightning.losses import frozen
from salad_lightning.session import (
    build_data,
    keep_csv_rows_before,
    prepare,
    resume_checkpoint,
    session,
)
from salad_lightning.train_fit import TrainFit
from salad_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split (``resume=RUN``: continue RUN in its folder), then test
    the last checkpoint. Returns the test metrics."""
    ckpt = resume_checkpoint(cfg)
    testing = bool(cfg.get("test_after_training", True)) and (
        cfg.dataset.datamodule.get("test_subset") is not None
    )
    stages = ["fit", "test"] if testing else ["fit"]
    with session(cfg, ckpt=ckpt, stages=stages, fitting=True) as run:
        trainer = run.trainer
        run.model.check_trainer(trainer)
        _warn_if_only_classification(cfg)
        if trainer.is_global_zero:
            names = list(run.datamodule.class_index.names)
            atomic_write_json(run.out_dir / "class_index.json", {"names": names})
        if cfg.get("resume") and trainer.is_global_zero:
            step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
            keep_csv_rows_before(run.out_dir / "csv", int(step.get("global_step", 0)))
        trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt)
        summary: dict[str, Any] = {}
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if testing:
            last = _last_checkpoint(trainer)
            trainer.test(run.model, datamodule=run.datamodule, ckpt_path=last, verbose=False)
            summary = dict(run.writer.summary or {})
        summary["val"] = val
        fit = [cb.last for cb in trainer.callbacks if isinstance(cb, TrainFit) and cb.last]
        if fit:  # the train fit of the last epoch's weights, the checkpoint tested
            summary["train"] = fit[0]
        if trainer.is_global_zero:
            atomic_write_json(run.out_dir / "metrics.json", summary)
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
    with session(cfg, ckpt=ckpt, stages=["test"]) as run:
        run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=ckpt, verbose=False)
        summary = dict(run.writer.summary or {})
        if run.trainer.is_global_zero:
            atomic_write_json(run.out_dir / "metrics.json", summary)
        return summary


def validate(cfg: DictConfig) -> dict[str, float]:
    """Validation metrics of a checkpoint (the holdout split), in one process or under DDP."""
    ckpt = _require_ckpt(cfg, "validate")
    with session(cfg, ckpt=ckpt, stages=["validate"]) as run:
        run.trainer.validate(run.model, datamodule=run.datamodule, ckpt_path=ckpt)
        metrics = run.trainer.callback_metrics
        values = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
        if run.trainer.is_global_zero:
            atomic_write_json(run.out_dir / "metrics.json", {"val": values})
        return {"val": values}


def predict(cfg: DictConfig) -> Path:
    """Detections for a features folder or one ``.npy`` file, as an ActivityNet results JSON."""
    ckpt = _require_ckpt(cfg, "predict")
    with session(cfg, ckpt=ckpt, stages=["predict"]) as run:
        run.trainer.predict(
            run.model, datamodule=run.datamodule, ckpt_path=ckpt, return_predictions=False
        )
        return run.writer.predict_path


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
        model.net, datamodule.whole_train_dataloader(), max_offset=model.max_offset, mu=mu
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
