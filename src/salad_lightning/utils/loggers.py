"""Logger helpers: W&B offline by default, images to every logger that takes them, and
loggers always closed (a W&B run is finished even when the job fails)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def wandb_mode(mode: str | None = None) -> str:
    """``online`` when asked for or when an API key is set, otherwise ``offline``."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def make_wandb_logger(
    *,
    project: str = "salad-lightning",
    save_dir: str = ".",
    mode: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    job_type: str = "train",
    **kwargs: Any,
):
    """A ``WandbLogger`` that needs no API key: offline unless told otherwise."""
    from pytorch_lightning.loggers import WandbLogger

    mode = wandb_mode(mode)
    auto_name, auto_group = _hydra_run_names()
    name = name or auto_name
    group = group or auto_group
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group or None,
        tags=list(tags or []),
        job_type=job_type,
        mode=mode,
        offline=mode == "offline",
        **kwargs,
    )


def _hydra_run_names() -> tuple[str | None, str | None]:
    """(run name, sweep group) from Hydra's runtime: one run per job, grouped by sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    overrides = hc.job.override_dirname or "default"
    if hc.mode == RunMode.MULTIRUN:
        return f"job{hc.job.num}-{overrides}", Path(hc.sweep.dir).name
    return overrides, None


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


def close_loggers(loggers: list[Any], *, failed: bool = False) -> None:
    """Finish every logger; a W&B run is marked finished (or failed) even on errors."""
    for lg in loggers:
        try:
            lg.finalize("failed" if failed else "success")
        except Exception:  # noqa: BLE001 - closing must not hide the original error
            pass
        if type(lg).__name__ == "WandbLogger":
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)


@contextmanager
def closing_loggers(loggers: list[Any]) -> Iterator[list[Any]]:
    """``with closing_loggers(loggers):`` closes them whether the body succeeds or fails."""
    try:
        yield loggers
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
