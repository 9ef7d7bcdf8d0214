"""Where the configs are, and the resolvers they use.

- :func:`config_dir`: ``SALAD_CONFIG_DIR`` if set, else the copy of ``conf/`` inside the
  installed package (a wheel ships it as ``salad_lightning/conf``), else the
  repository's top-level ``conf/`` (a checkout, or an editable install). A user's own
  folder of configs is added with Hydra's ``--config-dir DIR`` (README).
- ``${run_stamp:}``: the run folder's name, ``<date>_<time>_<pid>``: two runs started in
  the same second get two folders. One stamp per process (the processes of a DDP run
  get the first process's folder from Lightning).
- ``${run_dir:${resume},${paths.log_dir}}``: the folder to resume when ``resume`` is set
  (it must hold ``checkpoints/last.ckpt``), else ``<log_dir>/runs/<run_stamp>``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def config_dir() -> str:
    env = os.environ.get("SALAD_CONFIG_DIR")
    if env:
        return env
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no conf/config.yaml in {here / 'conf'} or {here.parents[1] / 'conf'}: reinstall the "
        "package, or set SALAD_CONFIG_DIR to a folder of configs"
    )


_STAMP: dict[int, str] = {}


def _run_stamp() -> str:
    pid = os.getpid()  # a forked process gets its own stamp
    if pid not in _STAMP:
        _STAMP[pid] = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{pid}"
    return _STAMP[pid]


def last_checkpoint(resume: str | os.PathLike) -> Path:
    """``resume=RUN``'s checkpoint to continue from: ``RUN/checkpoints/last.ckpt``, which
    must exist."""
    last = Path(str(resume)) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"resume={resume}: {last} does not exist (nothing to resume)")
    return last


def _run_dir(resume: str | None, log_dir: str) -> str:
    if not resume:
        return f"{log_dir}/runs/{_run_stamp()}"
    # checked here, before Hydra makes the folder: a mistyped RUN leaves nothing behind
    last_checkpoint(resume)
    return str(resume)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", _run_stamp)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir)


register_resolvers()
