"""Logger helpers: W&B offline by default, images to every logger that takes them, and
loggers always closed (a W&B run is finished even when the job fails)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


def wandb_mode(mode: str | None = None) -> str:
    """``online`` when asked for or when an API key is set, otherwise ``offline``."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def make_csv_logger(*, save_dir: str, name: str = "csv", version: str = ""):
    """Lightning's ``CSVLogger``, except that it appends to a ``metrics.csv`` already in its
    folder instead of deleting it: a resumed run (``resume=RUN``) keeps its history."""
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter
    from pytorch_lightning.loggers.logger import rank_zero_experiment

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if path.is_file():  # the header is the keys logged so far
                with open(path, newline="") as fh:
                    self.metrics_keys = next(iter(csv.reader(fh)), [])

    class AppendingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment  # as Lightning's: the other ranks of a job share the folder
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                Path(self.root_dir).mkdir(parents=True, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=save_dir, name=name, version=version)


def make_wandb_logger(
    *,
    project: str = "salad-lightning",
    save_dir: str = ".",
    mode: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    job_type: str = "train",
    seed: int | None = None,
    **kwargs: Any,
):
    """A ``WandbLogger`` that needs no API key: offline unless told otherwise.

    Name, group and tags default to what the run is (:func:`run_identity`): the experiment
    (or dataset), the ablation and the seed, so that a dashboard can group and compare
    ablations without hand work.
    """
    from pytorch_lightning.loggers import WandbLogger

    mode = wandb_mode(mode)
    auto_name, auto_group, auto_tags = run_identity(seed)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # a folder that already holds a W&B run (resume=RUN): continue that run
    latest = Path(save_dir) / "wandb" / "latest-run"
    if latest.exists() and "id" not in kwargs:
        kwargs.update(id=latest.resolve().name.rsplit("-", 1)[-1], resume="allow")
    import wandb

    # quiet: no 120-line summary at the end; close_loggers says where the run is
    kwargs.setdefault("settings", wandb.Settings(quiet=True))
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name or auto_name,
        group=group or auto_group,
        tags=sorted({*(tags or []), *auto_tags}),
        job_type=job_type,
        mode=mode,
        offline=mode == "offline",
        **kwargs,
    )
    # Lightning always passes `anonymous` (None by default), which W&B now only warns about
    logger._wandb_init.pop("anonymous", None)
    return logger


def override_key(override: str) -> str:
    """The config key of a Hydra override (``+a.b=1``, ``~a.b`` and ``a.b=1`` give ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def run_identity(seed: int | None = None) -> tuple[str | None, str | None, list[str]]:
    """(name, group, tags) of this run from Hydra's choices.

    Name ``<experiment or dataset>-<ablation>-seed<seed>``, plus the sweep's other
    overrides in a multirun; group: the sweep folder in a multirun, else the experiment
    or dataset; tags ``dataset:...``, ``experiment:...``, ``ablation:...``.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None, []
    choices = dict(hc.runtime.choices)
    dataset = choices.get("dataset") or "data"
    experiment = choices.get("experiment")
    ablation = choices.get("ablation") or "salad"
    base = experiment or dataset
    name = f"{base}-{ablation}" + (f"-seed{seed}" if seed is not None else "")
    tags = [f"dataset:{dataset}", f"ablation:{ablation}"]
    tags += [f"experiment:{experiment}"] if experiment else []
    if hc.mode == RunMode.MULTIRUN:
        others = [o for o in hc.overrides.task if override_key(o) not in ("seed", "ablation")]
        name += f"-{','.join(others)}" if others else ""
        return name, Path(hc.sweep.dir).name, tags
    return name, base, tags


def log_images(loggers: list[Any], images: dict[str, Path]) -> None:
    """Send PNG plots to the loggers that take images (W&B, TensorBoard)."""
    if not images:
        return
    for lg in loggers:
        kind = type(lg).__name__
        if kind == "WandbLogger":
            for key, path in images.items():
                lg.log_image(key=key, images=[str(path)])
        elif kind == "TensorBoardLogger":
            import numpy as np
            from matplotlib.image import imread

            for key, path in images.items():
                img = (imread(str(path))[..., :3] * 255).astype(np.uint8)
                lg.experiment.add_image(key, img, dataformats="HWC")


def log_metrics(loggers: list[Any], metrics: dict[str, float], step: int) -> None:
    """Scalars outside a Lightning loop (the diagnosis' numbers) to every logger, at the
    trainer's ``step`` (the CSV row and the W&B point sit with the test metrics)."""
    if metrics:
        for lg in loggers:
            lg.log_metrics(metrics, step=step)


def log_per_class_table(loggers: list[Any], key: str, summary: dict[str, Any]) -> None:
    """The per-class AP of an evaluation summary as a W&B table (class, AP at each tIoU,
    mean); the other loggers have it in per_class_ap.md."""
    columns = ["class", *[f"AP@{t:g}" for t in summary["tiou_thresholds"]], "mean"]
    rows = [
        [name, *aps, sum(aps) / len(aps)] for name, aps in sorted(summary["per_class_ap"].items())
    ]
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger" and rows:
            lg.log_table(key=key, columns=columns, data=rows)


def close_loggers(loggers: list[Any], *, failed: bool = False) -> None:
    """Finish every logger; a W&B run is marked finished (or failed) even on errors."""
    for lg in loggers:
        try:
            lg.finalize("failed" if failed else "success")
        except Exception as err:  # noqa: BLE001 - closing must not hide the original error
            _log.warning("%s could not be finalized: %s", type(lg).__name__, err)
        if type(lg).__name__ == "WandbLogger":
            import wandb

            run = wandb.run
            if run is not None:
                offline, folder = run.offline, Path(run.dir).parent
                wandb.finish(exit_code=1 if failed else 0)
                if offline:
                    _log.info("W&B offline run: %s (upload it: wandb sync %s)", folder, folder)
            # W&B writes its files from a service process; shutting it down waits until
            # the run's offline log is complete on disk (else a job can end before it is)
            wandb.teardown()


@contextmanager
def closing_loggers(loggers: list[Any]) -> Iterator[list[Any]]:
    """``with closing_loggers(loggers):`` closes them whether the body succeeds or fails."""
    try:
        yield loggers
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
