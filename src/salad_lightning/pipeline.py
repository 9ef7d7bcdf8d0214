"""The importable entry points behind ``python -m salad_lightning.run``.

``train(cfg)`` fits then tests; ``test(cfg)`` and ``predict(cfg)`` load a
checkpoint. Everything is built from the composed config through
:func:`salad_lightning.utils.instantiate.build`; nothing below this module sees
a config object.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from salad_lightning import reporting
from salad_lightning.data.report import format_report
from salad_lightning.losses import frozen
from salad_lightning.metrics.diagnosis import Bins, diagnose_videos, write_diagnosis
from salad_lightning.plots import write_plots
from salad_lightning.utils.distributed import gather_videos
from salad_lightning.utils.instantiate import build, build_list
from salad_lightning.utils.io import atomic_write_json, atomic_write_text
from salad_lightning.utils.loggers import (
    closing_loggers,
    log_images,
    log_metrics,
    log_per_class_table,
)

log = logging.getLogger(__name__)

# Lightning notes that the module's own batch transfer wins over the datamodule's: that
# is intended (only tensors travel, lit_module.py); the pytree note is Lightning's own.
warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")


def _prepare(cfg: DictConfig) -> tuple[Any, Any, Path]:
    """Seed, generate data if the dataset asks for it, build the datamodule and model."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    if cfg.dataset.get("generate") is not None:
        build(cfg.dataset.generate)
    datamodule = build(cfg.dataset.datamodule)
    model = build(cfg.model)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return datamodule, model, out_dir


def _trainer(cfg: DictConfig, out_dir: Path) -> tuple[pl.Trainer, list[Any]]:
    loggers = build_list(cfg.get("logger"))
    callbacks = build_list(cfg.get("callbacks"))
    trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:  # the whole resolved config goes to every dashboard
        lg.log_hyperparams(resolved)
    return trainer, loggers


@contextmanager
def _session(cfg: DictConfig) -> Iterator[tuple[Any, Any, pl.Trainer, list[Any], Path]]:
    """Datamodule, model, trainer and loggers of one run; loggers closed however it ends."""
    datamodule, model, out_dir = _prepare(cfg)
    trainer, loggers = _trainer(cfg, out_dir)
    with closing_loggers(loggers):
        yield datamodule, model, trainer, loggers, out_dir


def _preflight(datamodule: Any, stages: list[str], out_dir: Path) -> dict[str, Any]:
    """Check every feature file the run will read, before it reads any (rank zero only:
    the other processes of a DDP run wait for it at the first collective). Writes
    ``data_report.json``; unusable files stop the run, named in the message."""
    if rank_zero_only.rank != 0:
        return {}
    report, problems = datamodule.preflight_report(stages)
    atomic_write_json(out_dir / "data_report.json", report)
    if problems:
        shown = "\n  ".join(p.message() for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(
            f"{len(problems)} feature files cannot be used (all listed in "
            f"{out_dir / 'data_report.json'}):\n  {shown}{more}"
        )
    return report


def _finish_test(
    model: Any, trainer: pl.Trainer, loggers: list[Any], out_dir: Path, cfg, dm
) -> dict:
    """Write results.json, tables, plots and the diagnosis of the test epoch; print the table."""
    evaluation = model.evaluation
    names = model.class_names or []
    summary = reporting.summarise(evaluation, names)
    if trainer.is_global_zero:
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
            log_metrics(loggers, reporting.diagnosis_scalars(diagnosis[0], evaluation.split))
        log_images(loggers, images)
        log_per_class_table(loggers, f"{evaluation.split}/per_class_ap", summary)
        print(reporting.map_table(summary))
    return summary


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
    diagnosis = diagnose_videos(videos, **options)
    if diagnosis is None:
        log.info("diagnosis: no ground truth of positive length in the split; skipped")
        return None
    return diagnosis, write_diagnosis(diagnosis, out_dir)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, then test the last checkpoint. Returns the test metrics."""
    with _session(cfg) as (datamodule, model, trainer, loggers, out_dir):
        model.check_trainer(trainer)
        testing = cfg.get("test_after_training", True) and datamodule.hparams.test_subset
        _preflight(datamodule, ["fit", "test"] if testing else ["fit"], out_dir)
        atomic_write_json(
            out_dir / "class_index.json", {"names": list(datamodule.class_index.names)}
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        summary: dict[str, Any] = {}
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if testing:
            ckpt = _last_checkpoint(trainer)
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
            summary = _finish_test(model, trainer, loggers, out_dir, cfg, datamodule)
        summary["val"] = val
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", summary)
        return summary


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
    with _session(cfg) as (datamodule, model, trainer, loggers, out_dir):
        _preflight(datamodule, ["test"], out_dir)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
        summary = _finish_test(model, trainer, loggers, out_dir, cfg, datamodule)
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", summary)
        return summary


def validate(cfg: DictConfig) -> dict[str, float]:
    """Validation metrics of a checkpoint (the holdout split), in one process or under DDP."""
    ckpt = _require_ckpt(cfg, "validate")
    with _session(cfg) as (datamodule, model, trainer, _, out_dir):
        _preflight(datamodule, ["validate"], out_dir)
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt)
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if trainer.is_global_zero:
            atomic_write_json(out_dir / "metrics.json", {"val": values})
        return {"val": values}


def predict(cfg: DictConfig) -> Path:
    """Detections for a features folder or one ``.npy`` file, as an ActivityNet results JSON."""
    ckpt = _require_ckpt(cfg, "predict")
    with _session(cfg) as (datamodule, model, trainer, _, out_dir):
        _preflight(datamodule, ["predict"], out_dir)
        batches = trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt)
        preds = gather_videos([p for batch in batches or [] for p in batch])
        path = Path(cfg.get("predict_output") or out_dir / "results.json")
        if trainer.is_global_zero:
            atomic_write_json(path, reporting.results_json(preds, model.class_names or []))
            print(f"wrote {len(preds)} videos' detections to {path}")
        return path


def export_alpha(cfg: DictConfig) -> Path:
    """Write the alpha of Algorithm 1 on every training video (for ``pruning=frozen``):
    SALAD's own pruning, with the checkpoint's scores and segments, at the µ it was
    trained with, on whole videos, on the CPU."""
    ckpt = _require_ckpt(cfg, "export_alpha")
    datamodule, model, out_dir = _prepare(cfg)
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
    print(f"wrote alpha of {len(alphas)} videos to {path}")
    return path


def check(cfg: DictConfig) -> dict[str, Any]:
    """``mode=check``: the pre-flight report of every split the config uses, no training.

    Prints it, writes ``data_report.json`` to the run folder, and fails (after writing)
    when a feature file cannot be used.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.dataset.get("generate") is not None:
        build(cfg.dataset.generate)
    datamodule = build(cfg.dataset.datamodule)
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
