"""The importable entry points behind ``python -m salad_lightning.run``: one per mode.

``train(cfg)`` fits (or resumes a run in its folder) then tests; ``test``, ``validate``,
``predict`` and ``export_alpha`` load a checkpoint; ``check`` reports on the data. The
objects of a run come from :mod:`salad_lightning.session`; nothing below these modules
sees a config object.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from tqdm import tqdm

from salad_lightning.config import launch_rank
from salad_lightning.data.report import format_report
from salad_lightning.losses import frozen
from salad_lightning.pgcn.data import SPLIT_FILES
from salad_lightning.pgcn.proposals import VideoProposals, file_sha256, write_proposals
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
    """Detections for a features folder or one feature file, or for a video file or a
    folder of videos (their features extracted first, with the checkpoint's settings,
    into ``extract.out``): ``results.json`` (ActivityNet's results format), and in the run
    folder ``detections.csv``, a subtitle file and a timeline per video."""
    ckpt = _require_ckpt(cfg, "predict")
    _features_of_videos(cfg, ckpt)
    with session(cfg, ckpt=ckpt, stages=["predict"]) as run:
        run.trainer.predict(
            run.model, datamodule=run.datamodule, ckpt_path=ckpt, return_predictions=False
        )
        return run.writer.predict_path


def _features_of_videos(cfg: DictConfig, ckpt: str) -> None:
    """When ``dataset.datamodule.predict_path`` names videos, extract their features as
    the checkpoint's were made and predict on those instead (`video_predict`)."""
    node = cfg.dataset.datamodule
    target = node.get("predict_path")
    if target is None:
        return
    from salad_lightning import video_predict  # the extractor, only for videos

    if not video_predict.is_video_input(target, feature_ext=str(node.get("ext", ".npy"))):
        return
    options = cfg.get("extract") or {}
    features = video_predict.extract_for_checkpoint(
        video_predict.checkpoint_features(ckpt),
        target,
        options.get("out") or Path(cfg.paths.output_dir) / "features",
        ckpt=ckpt,
        rgb_weights=options.get("rgb_weights"),
        flow_weights=options.get("flow_weights"),
        device=options.get("device"),
        workers=int(options.get("workers", 2)),
        batch_size=int(options.get("batch_size", 8)),
        progress=bool(options.get("progress", True)),
    )
    with open_dict(cfg):
        node.predict_path = str(features)


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


def proposals(cfg: DictConfig) -> Path:
    """``mode=proposals``: a checkpoint's class-agnostic proposals for every split of its
    data (train: every training video whole; val: the holdout; test; predict when
    ``predict_path`` is set), the ``proposal_top_k`` best per video, in seconds, written
    atomically to ``<the checkpoint's run folder>/proposals/<split>.json`` (or
    ``proposal_output``) with the checkpoint and the settings that made them."""
    ckpt = _require_ckpt(cfg, "proposals")
    h = cfg.dataset.datamodule
    stages = ["fit"] + (["test"] if h.get("test_subset") is not None else [])
    stages += ["predict"] if h.get("predict_path") is not None else []
    datamodule, model, out_dir = prepare(cfg, ckpt, stages)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.on_load_checkpoint(state)
    run_dir = Path(ckpt).resolve().parent.parent
    first = run_dir if (run_dir / "config_resolved.yaml").is_file() else out_dir
    folder = Path(cfg.proposal_output) if cfg.get("proposal_output") else first / "proposals"
    top_k = int(cfg.get("proposal_top_k", 800))
    annotation = datamodule.hparams.annotation_file
    made_by = {
        "checkpoint": str(Path(ckpt).resolve()),
        "checkpoint_sha256": file_sha256(ckpt),
        "dataset": str(cfg.dataset.get("name", "")),
        "annotation_file": str(Path(annotation).resolve()) if annotation else None,
        "settings": {"proposal_top_k": top_k, **model.proposal_settings(top_k)},
    }
    device = torch.device(
        "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu"
    )
    model.to(device).eval()
    loaders = {
        "train": datamodule.whole_train_dataloader(),
        "val": datamodule.val_dataloader(),
        "test": datamodule.test_dataloader() if "test" in stages else [],
        "predict": datamodule.predict_dataloader() if "predict" in stages else [],
    }
    for split, loader in loaders.items():
        if isinstance(loader, list):  # no such split here
            continue
        found = {}
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"proposals ({split})", unit="batch"):
                for video in model.proposals(batch.to(device), top_k=top_k):
                    found[video.video_id] = VideoProposals(
                        video.video_id, video.segments, video.scores
                    )
        path = write_proposals(folder / SPLIT_FILES[split], found, {**made_by, "split": split})
        log.info("%s: proposals of %d videos in %s", split, len(found), path.resolve())
    return folder


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
    "proposals": proposals,
}


# the modes without a Trainer: one process does them; in a job launched with several
# (torchrun, srun), global rank 0, and the others leave it (each would write the same)
ONE_PROCESS = ("check", "export_alpha", "proposals")


def finished(cfg: DictConfig) -> Path | None:
    """What a finished run of this mode left in its folder (``metrics.json`` of train,
    test and validate, the alpha of export_alpha), if it is there."""
    mode = cfg.get("mode", "train")
    if mode in ("train", "test", "validate"):
        path = Path(cfg.paths.output_dir) / "metrics.json"
    elif mode == "export_alpha" and cfg.get("alpha_output"):
        path = Path(cfg.alpha_output)
    else:
        return None
    return path if path.is_file() else None


def end_process_group() -> None:
    """The processes of a distributed run (DDP, torchrun) end together: they wait for each
    other (rank 0 may still be writing the report) and close their process group. Left
    to the interpreter's shutdown, gloo's threads can abort a process that exits first
    ("terminate called without an active exception"), and Lightning then kills the
    others. Nothing to do in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run(cfg: DictConfig) -> Any:
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {sorted(MODES)}")
    rank = launch_rank()
    if mode in ONE_PROCESS and rank != 0:
        log.info("mode=%s runs in one process: global rank %d leaves it to rank 0", mode, rank)
        return None
    done = finished(cfg) if cfg.get("skip_finished") else None
    if done is not None:  # a sweep resumed: this job finished before
        log.info("skip_finished: %s is there; this job is not run again", done)
        return json.loads(done.read_text()) if done.suffix == ".json" else done
    result = MODES[mode](cfg)
    end_process_group()
    return result
