"""Where the configs are, and the resolvers they use.

- :func:`config_dir`: ``SALAD_CONFIG_DIR`` if set, else the copy of ``conf/`` inside the
  installed package (a wheel ships it as ``salad_lightning/conf``), else the
  repository's top-level ``conf/`` (a checkout, or an editable install). A user's own
  folder of configs is added with Hydra's ``--config-dir DIR`` (README).
- ``${run_stamp:}``: the run folder's name, ``<date>_<time>_<pid>``: two runs started in
  the same second get two folders. One name per job (:func:`job_stamp`): the processes
  Lightning's DDP starts itself get the first process's folder from Lightning; those that
  torchrun starts get global rank 0's name through torchrun's own store; those that
  ``srun`` starts (several tasks) are named after the job step, ``slurm-<job>.<step>``.
  Cached, so that a submitit job (``hydra/launcher=slurm``) writes into the sweep folder
  its launcher made.
- ``${run_dir:${resume},${paths.log_dir}}``: the folder to resume when ``resume`` is set
  (it must hold ``checkpoints/last.ckpt``), else ``<log_dir>/runs/<run_stamp>``.
- ``${on_rank_zero:VALUE}`` (VALUE on global rank 0, else null) and ``${rank_suffix:}``
  (``""`` on rank 0, else ``_rank<N>``): the processes of a job share one folder, and
  only rank 0 writes Hydra's ``.hydra/`` and ``run.log`` there (``conf/config.yaml``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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
# how long the other processes of a torchrun job wait for rank 0 to name the run folder
# (torchrun starts every node's processes only once all nodes have joined)
SHARE_TIMEOUT = timedelta(minutes=5)


def launcher() -> str | None:
    """``"torchrun"`` or ``"srun"`` when that launcher started this process as one of
    several of a job (torchrun's ``WORLD_SIZE``, srun's ``SLURM_STEP_NUM_TASKS``, above
    1), else None: one process, or a process that Lightning's DDP started itself (it hands
    its children the first process's folder)."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        return "torchrun"
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    if "SLURM_STEP_ID" in env and int(tasks) > 1:
        return "srun"
    return None


def launch_rank() -> int:
    """This process's global rank as its launcher set it before anything runs (torchrun's
    ``RANK``, srun's ``SLURM_PROCID``); 0 for a process that no launcher started."""
    kind = launcher()
    if kind == "torchrun":
        return int(os.environ["RANK"])
    if kind == "srun":
        return int(os.environ["SLURM_PROCID"])
    return 0


def _stamp_of(pid: int) -> str:
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{pid}"


def job_stamp() -> str | None:
    """The one run-folder name of every process of a launched job, or None (no launcher:
    :func:`_run_stamp` names the folder after this process).

    srun: ``slurm-<SLURM_JOB_ID>.<SLURM_STEP_ID>``, the same string on every task (the job
    step is unique on its cluster). A job SLURM requeues keeps its id, so its folder:
    there Lightning finds the ``hpc_ckpt_<n>.ckpt`` its auto-requeue wrote and goes on.
    torchrun: rank 0's ``<date>_<time>_<pid>``, set in the store torchrun's agents already
    share (``MASTER_ADDR:MASTER_PORT``) and read there by the other ranks before Hydra
    makes a folder; torchrun's ``TORCHELASTIC_RUN_ID`` is ``none`` unless ``--rdzv-id`` is
    given, so it cannot name the job on its own. Each attempt of an elastic restart
    starts anew (Lightning does not resume it), in a folder of its own.
    """
    kind, env = launcher(), os.environ
    if kind == "srun":
        return f"slurm-{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"
    if kind != "torchrun":
        return None
    run_id, attempt = env["TORCHELASTIC_RUN_ID"], env.get("TORCHELASTIC_RESTART_COUNT", "0")
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        # the store is rank 0's own, made later by init_process_group: only the run id
        if run_id == "none":
            raise RuntimeError(
                "torchrun without its agents' store (TORCHELASTIC_USE_AGENT_STORE is "
                f"{env.get('TORCHELASTIC_USE_AGENT_STORE')!r}) and without --rdzv-id: the "
                "processes cannot agree on one run folder. Pass --rdzv-id=<a name unique "
                "to this job>"
            )
        return f"torchrun-{run_id}" + (f"-restart{attempt}" if attempt != "0" else "")
    from torch.distributed import TCPStore  # only here: this module must import fast

    addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    store = TCPStore(addr, port, is_master=False, timeout=SHARE_TIMEOUT)
    key = f"salad_lightning/run_stamp/{run_id}/{attempt}"
    if launch_rank() == 0:
        stamp = _stamp_of(os.getpid())
        store.set(key, stamp)
        return stamp
    try:
        return store.get(key).decode()
    except RuntimeError as err:  # torch's DistStoreError: rank 0 never named it
        raise RuntimeError(
            f"rank {launch_rank()} waited {SHARE_TIMEOUT} at {addr}:{port} (torchrun's store, "
            f"key {key}) for global rank 0 to name the run folder; rank 0 did not start or "
            "failed before (see its log)"
        ) from err


def _run_stamp() -> str:
    pid = os.getpid()  # a forked process gets its own stamp
    if pid not in _STAMP:
        _STAMP[pid] = job_stamp() or _stamp_of(pid)
    return _STAMP[pid]


def _on_rank_zero(value: Any) -> Any:
    return value if launch_rank() == 0 else None


def _rank_suffix() -> str:
    rank = launch_rank()
    return f"_rank{rank}" if rank else ""


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
    # run_stamp is cached: Hydra copies a config's cache into the configs it recomposes
    # in a submitit job, which then names the sweep folder its launcher made
    resolvers = {
        "run_stamp": (_run_stamp, True),
        "run_dir": (_run_dir, False),
        "on_rank_zero": (_on_rank_zero, False),
        "rank_suffix": (_rank_suffix, False),
    }
    for name, (resolver, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=cached)


register_resolvers()
