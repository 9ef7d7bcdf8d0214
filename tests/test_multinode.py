"""A job of several nodes: the one run folder its processes agree on, written by rank 0
alone, with the metrics one process gets from the same checkpoint.

The launched tests start two single-process "nodes" with torchrun on localhost (gloo),
as a user starts one on each machine; the others check the folder name each launcher's
processes compute (src/salad_lightning/config.py) from the environment the launcher sets.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _runcfg import TINY, compose_cfg
from salad_lightning import config
from salad_lightning.pipeline import run as run_pipeline

# validating and testing on the training videos (and a higher learning rate) give a tiny
# model a non-zero mAP in three epochs; one video per evaluation batch, so that each
# video's forward is the same in one process and in two (a batch's composition changes
# the float rounding); no train fit (an evaluation per run that nothing here reads)
DATA = [
    "dataset.generate.num_train_videos=14",
    "dataset.datamodule.val_subset=Validation",
    "dataset.datamodule.test_subset=Validation",
    "dataset.datamodule.eval_batch_size=1",
    "model.optimizer.lr=1e-2",
    "callbacks.train_fit=null",
]
# what Hydra adds to a run folder (an in-process run has no Hydra)
HYDRA_FILES = [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "run.log"]
LAUNCHER_VARS = (
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_RESTART_COUNT",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args: list[str], root: Path, *, timeout: float = 240) -> None:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank K`` for K = 0, 1 on localhost,
    each running ``python -m salad_lightning.run ARGS`` under ``trainer=ddp_cpu`` on one
    device of two nodes; each node's output goes to ``<root>_node<K>.out``. A hang fails
    the test after ``timeout`` seconds (both process groups are killed)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(WANDB_MODE="offline", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    common = [
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        f"paths.root_dir={root}",
        f"paths.cache_dir={root.parent / 'cache'}",
        *TINY,
        *args,
    ]
    procs, logs = [], []
    for rank in (0, 1):
        torchrun = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc-per-node", "1", "--node-rank", str(rank),
            "--master-addr", "127.0.0.1", "--master-port", str(port),
        ]  # fmt: skip
        logs.append(root.parent / f"{root.name}_node{rank}.out")
        with open(logs[-1], "w") as out:
            procs.append(
                subprocess.Popen(
                    [*torchrun, "-m", "salad_lightning.run", *common],
                    cwd=root.parent,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        pytest.fail(f"the two nodes did not finish in {timeout} s:\n{logs[0].read_text()[-3000:]}")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {rank}:\n{log.read_text()[-3000:]}"


def _files(folder: Path) -> list[str]:
    """The files under ``folder``, relative, sorted; the best checkpoint's epoch and the
    timelines' videos left out (chosen by the detections, which two processes' training
    need not share with one process's)."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(
        re.sub(r"best-epoch\d+", "best-epoch*", re.sub(r"timeline_.+\.png", "timeline_*", n))
        for n in names
    )


def _test_as_one_process(ckpt: Path, root: Path) -> tuple[dict, Path]:
    """``mode=test`` of ``ckpt`` in this one process: its metrics and its run folder."""
    cfg = compose_cfg(root, ["mode=test", f"ckpt_path={ckpt}", *DATA])
    return run_pipeline(cfg), Path(cfg.paths.output_dir)


def _assert_tests_alike(job: Path, one: dict, one_dir: Path) -> None:
    """The job's test of its last checkpoint is one process's test of it: the metrics,
    the detections, the per-class table and the diagnosis, identical."""
    metrics = json.loads((job / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if k not in ("val", "train")} == one
    assert metrics["test/mAP"] == one["test/mAP"] > 0.0
    for name in ("results.json", "diagnosis/diagnosis.json", "per_class_ap.md"):
        assert (job / name).read_text() == (one_dir / name).read_text(), name


def _assert_rank_zero_wrote_the_log(job: Path) -> None:
    """run.log holds rank 0's lines alone; rank 1's are in run_rank1.log."""
    log, rank1 = (job / "run.log").read_text(), (job / "run_rank1.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1" not in log
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1 and "GLOBAL_RANK: 0" not in rank1
    assert f"run folder: {job}" in rank1  # rank 1 worked in the same folder


@pytest.fixture(scope="module")
def two_node_job(tmp_path_factory):
    """One two-node job, stopped after 1 epoch and resumed (``resume=RUN`` on both
    nodes) to 3: its root, its folder and the folder's files after the first launch.
    Shared by the tests below (module scope: two launches instead of three)."""
    root = tmp_path_factory.mktemp("multinode") / "two"
    _two_nodes([*DATA, "trainer.max_epochs=1"], root)
    [job] = list((root / "logs" / "runs").iterdir())  # one job, one folder
    first = _files(job)
    _two_nodes([*DATA, "trainer.max_epochs=3", f"resume={job}"], root)
    return root, job, first


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_write_one_folder(two_node_job, tmp_path):
    root, job, first = two_node_job
    assert list((root / "logs" / "runs").iterdir()) == [job]
    assert [p.name for p in root.iterdir()] == ["logs"]
    assert [p.name for p in (root / "logs").iterdir()] == ["runs"]

    # every file one process's run writes, Hydra's, and rank 1's log: nothing else
    cfg = compose_cfg(tmp_path / "one", [*DATA, "trainer.max_epochs=1"])
    run_pipeline(cfg)
    single = _files(Path(cfg.paths.output_dir))
    assert {"config_resolved.yaml", "class_index.json", "checkpoints/last.ckpt"} <= set(single)
    assert first == sorted([*single, *HYDRA_FILES, "run_rank1.log"])
    _assert_rank_zero_wrote_the_log(job)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_resume_in_the_one_folder_and_test_as_one_process(two_node_job, tmp_path):
    """The resumed job goes on in its folder: no second folder, each step once in the
    CSV log, and the test of the last checkpoint is one process's."""
    root, job, first = two_node_job
    assert list((root / "logs" / "runs").iterdir()) == [job]
    assert _files(job) == first  # the second test's timelines replace the first's

    last = job / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 2
    with open(job / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    steps = [int(float(r["step"])) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps)) and max(steps) < state["global_step"]
    epochs = {int(float(r["epoch"])) for r in rows if r.get("val/mAP")}
    assert epochs == set(range(3))
    _assert_rank_zero_wrote_the_log(job)
    assert (job / "run.log").read_text().count(f"run folder: {job}") == 4  # two runs, appended

    one, one_dir = _test_as_one_process(last, tmp_path / "single")
    _assert_tests_alike(job, one, one_dir)


# --- the folder name each launcher's processes agree on --------------------------------


@pytest.fixture
def no_launcher(monkeypatch):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_one_process_names_its_folder_after_itself(no_launcher):
    assert config.launcher() is None and config.job_stamp() is None
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_{os.getpid()}", config._run_stamp())
    assert config._on_rank_zero(".hydra") == ".hydra" and config._rank_suffix() == ""
    # a process Lightning's DDP started itself: Lightning hands it rank 0's folder
    no_launcher.setenv("LOCAL_RANK", "1")
    no_launcher.setenv("WORLD_SIZE", "2")
    assert config.launcher() is None and config.launch_rank() == 0


def test_srun_tasks_share_the_job_steps_name(no_launcher):
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8"}
    for key, value in env.items():
        no_launcher.setenv(key, value)
    names = []
    for rank in ("0", "5"):
        no_launcher.setenv("SLURM_PROCID", rank)
        names.append(config.job_stamp())
    assert names == ["slurm-4242.0", "slurm-4242.0"]
    assert config.launch_rank() == 5
    assert config._on_rank_zero(".hydra") is None and config._rank_suffix() == "_rank5"
    no_launcher.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job: its folder, its hpc_ckpt
    assert config.job_stamp() == "slurm-4242.0"
    no_launcher.setenv("SLURM_STEP_NUM_TASKS", "1")  # one task: a single process
    assert config.launcher() is None and config.job_stamp() is None


def test_torchrun_ranks_take_rank_zeros_name_from_torchruns_store(no_launcher):
    from torch.distributed import TCPStore

    agent = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # the agent's
    env = {
        "TORCHELASTIC_RUN_ID": "none",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_RESTART_COUNT": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(agent.port),
    }
    for key, value in env.items():
        no_launcher.setenv(key, value)
    no_launcher.setenv("RANK", "0")
    zero = config.job_stamp()
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_{os.getpid()}", zero)
    no_launcher.setenv("RANK", "1")
    assert config.job_stamp() == zero
    # after a restart the others wait for rank 0's new name, not the old one
    no_launcher.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    no_launcher.setattr(config, "SHARE_TIMEOUT", config.timedelta(seconds=1))
    with pytest.raises(RuntimeError, match=r"rank 1 waited .* for global rank 0 to name"):
        config.job_stamp()


def test_torchrun_inside_srun_goes_by_torchruns_ranks(no_launcher):
    """srun with one task per node, each running torchrun: SLURM's task id is the node's,
    torchrun's RANK the process's (Lightning, too, looks for torchrun first)."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_PROCID": "1", "TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "8", "RANK": "5"}  # fmt: skip
    for key, value in env.items():
        no_launcher.setenv(key, value)
    assert config.launcher() == "torchrun" and config.launch_rank() == 5


def test_torchrun_without_its_store_needs_a_rendezvous_id(no_launcher):
    for key, value in {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "RANK": "1"}.items():
        no_launcher.setenv(key, value)
    no_launcher.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    with pytest.raises(RuntimeError, match="--rdzv-id"):
        config.job_stamp()
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "job7")
    assert config.job_stamp() == "torchrun-job7"
    no_launcher.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # an elastic restart starts anew
    assert config.job_stamp() == "torchrun-job7-restart2"


@pytest.mark.slow
def test_a_submitit_sweep_writes_into_its_launchers_folder(tmp_path):
    """Hydra recomposes each job's config in the job's own process; the cached run stamp
    names the sweep folder the launcher made, not a second one (submitit's local
    executor: the SLURM one's job process, without a cluster)."""
    from _runcfg import run_cli

    res = run_cli(
        ["-m", "hydra/launcher=submitit_local", f"paths.root_dir={tmp_path}",
         f"paths.cache_dir={tmp_path / 'cache'}", *TINY, "seed=0,1"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    [sweep] = list((tmp_path / "logs" / "multiruns").iterdir())
    assert (sweep / ".submitit").is_dir() and (sweep / "multirun.yaml").is_file()
    assert all((sweep / job / "metrics.json").is_file() for job in ("0", "1"))


@pytest.mark.parametrize("mode", ["check", "export_alpha", "proposals"])
def test_the_modes_without_a_trainer_run_on_global_rank_zero_alone(no_launcher, tmp_path, mode):
    """Launched as rank 1 of a torchrun job, a mode that one process does returns at once
    and writes nothing (rank 0 does it); `mode=check` as rank 0 writes its report."""
    for key, value in {"TORCHELASTIC_RUN_ID": "job7", "WORLD_SIZE": "2", "RANK": "1"}.items():
        no_launcher.setenv(key, value)
    cfg = compose_cfg(tmp_path / "one", [f"mode={mode}", "ckpt_path=/nowhere/last.ckpt"])
    assert run_pipeline(cfg) is None
    assert not (tmp_path / "one").exists()  # not even the data
    no_launcher.setenv("RANK", "0")
    cfg = compose_cfg(tmp_path / "zero", ["mode=check"])
    assert (
        run_pipeline(cfg)["splits"] and (tmp_path / "zero" / "run" / "data_report.json").is_file()
    )


def test_a_run_ends_its_process_group(tmp_path):
    """`end_process_group`, which every run calls when its mode returns: the group is
    closed (one gloo process here; the DDP and two-node tests run it with two), and
    without a group it does nothing."""
    import torch.distributed as dist

    from salad_lightning.pipeline import end_process_group

    end_process_group()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        assert dist.is_initialized()
        end_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
