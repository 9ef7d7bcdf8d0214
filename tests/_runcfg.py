"""Compose the real Hydra config for tests (tiny model, tiny synthetic data, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A tiny synthetic dataset and model (conf/dataset/synthetic_tiny.yaml, conf/debug/tiny.yaml,
# which users have too): one epoch takes a second or two on a CPU.
TINY = ["dataset=synthetic_tiny", "debug=tiny"]


def compose_cfg(tmp_path: Path, overrides: list[str] = (), *, tiny: bool = True):
    """The composed config with Hydra's runtime set, outputs under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        ov = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
        ov += (TINY if tiny else []) + list(overrides)
        cfg = compose("config", overrides=ov, return_hydra_config=True)
    out = tmp_path / "run"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    return cfg


def run_cli(args: list[str], cwd: Path, *, timeout: int = 600, env: dict | None = None):
    """``python -m salad_lightning.run ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "salad_lightning.run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
