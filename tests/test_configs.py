"""Every config file composes, and every dataset x ablation x experiment instantiates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from omegaconf import OmegaConf

from _runcfg import CONF, compose_cfg
from salad_lightning.losses.frozen import save_frozen_alpha
from salad_lightning.training.graphs import GraphStep
from salad_lightning.utils.instantiate import build

DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
ABLATIONS = [None] + sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))
EXPERIMENTS = [None] + sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# experiments of a second stage (P-GCN on a SALAD run's proposals): SALAD's ablations
# do not apply to them (test_second_stage_experiments_compose_with_every_dataset)
SECOND_STAGE = [e for e in EXPERIMENTS if e and "pgcn" in e]
SMALL_NET = [
    "model.net.hidden_size=8",
    "model.net.reg_dims=[8,8,8]",
    "model.net.sa_dims=[8,8,8]",
    "model.net.cls_dims=[8,8]",
]


def _overrides(tmp_path, dataset, ablation, experiment) -> list[str]:
    ov = [f"dataset={dataset}"]
    if dataset == "custom_template":  # the template leaves these to the user
        ov += ["dataset.num_classes=5", "dataset.feature_dim=32"]
    if dataset == "extracted":  # the class count is the user's; the width, features.json's
        ov += ["dataset.num_classes=5", "dataset.feature_dim=32"]
    if ablation:
        ov.append(f"ablation={ablation}")
    if ablation == "pruning_frozen":
        path = tmp_path / "alpha.npz"
        save_frozen_alpha(path, {"v": np.zeros((3, 1), bool)})
        ov.append(f"model.frozen_alpha_path={path}")
    if experiment:
        ov.append(f"experiment={experiment}")
    return ov


FIRST_STAGE = [e for e in EXPERIMENTS if e not in SECOND_STAGE]
# `make test-fast` composes a covering set (each dataset, ablation and experiment at least
# once); `make test` composes every combination
COVERING = {
    (DATASETS[i % len(DATASETS)], ABLATIONS[i % len(ABLATIONS)], FIRST_STAGE[i % len(FIRST_STAGE)])
    for i in range(max(len(DATASETS), len(ABLATIONS), len(FIRST_STAGE)))
}


@pytest.mark.parametrize(
    "dataset,ablation,experiment",
    [
        pytest.param(*c, marks=() if c in COVERING else pytest.mark.slow)
        for c in itertools.product(DATASETS, ABLATIONS, FIRST_STAGE)
    ],
)
def test_every_combination_composes_and_instantiates(tmp_path, dataset, ablation, experiment):
    ov = _overrides(tmp_path, dataset, ablation, experiment) + SMALL_NET
    cfg = compose_cfg(tmp_path, ov, tiny=False)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    model = build(cfg.model)
    dm = build(cfg.dataset.datamodule)
    assert model.net.num_classes == cfg.dataset.num_classes
    assert model.criterion.lambda1 == cfg.model.loss.lambda1
    assert dm.hparams.batch_size == cfg.dataset.datamodule.batch_size
    if ablation and ablation.startswith(("pruning_", "target_")):
        kind, value = ablation.split("_", 1)
        assert getattr(model.criterion, kind) == value
    if ablation and ablation.startswith("fusion_"):
        assert model.postprocess_kwargs["fusion"] == ablation.split("_", 1)[1]


@pytest.mark.parametrize("dataset,experiment", list(itertools.product(DATASETS, SECOND_STAGE)))
def test_second_stage_experiments_compose_with_every_dataset(tmp_path, dataset, experiment):
    """P-GCN's experiments: the model and the datamodule that wraps the dataset's build
    (nothing is read before setup; the first stage's folder is checked when a run starts)."""
    from salad_lightning.pgcn.data import PGCNDataModule
    from salad_lightning.pgcn.module import PGCNLitModule

    ov = _overrides(tmp_path, dataset, None, experiment) + [
        f"proposals={tmp_path / 'first'}",
        "model.net.hidden=8",
    ]
    cfg = compose_cfg(tmp_path, ov, tiny=False)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    model, dm = build(cfg.model), build(cfg.datamodule)
    assert isinstance(model, PGCNLitModule) and isinstance(dm, PGCNDataModule)
    assert model.net.num_classes == cfg.dataset.num_classes
    assert model.net.completeness_fc.in_features == 2 * 3 * cfg.dataset.feature_dim
    assert dm.base.hparams.batch_size == cfg.dataset.datamodule.batch_size
    assert dm.proposals_dir == tmp_path / "first" / "proposals"
    assert dm.options["epoch_multiplier"] == {"pgcn": 4, "thumos_paper_pgcn": 20}[experiment]


@pytest.mark.parametrize("experiment", ["thumos_paper", "anet_paper"])
def test_paper_experiments_use_the_table1_network(tmp_path, experiment):
    cfg = compose_cfg(tmp_path, [f"experiment={experiment}"], tiny=False)
    model = build(cfg.model)
    assert model.net.hidden_size == 1024
    assert (
        cfg.model.loss.lambda1 == 1.0 and cfg.model.loss.lambda2 == 0.1 and cfg.model.loss.mu == 0.5
    )
    assert cfg.model.optimizer.lr == 1e-4 and cfg.trainer.max_epochs == 100
    assert cfg.dataset.datamodule.batch_size == {"thumos_paper": 4, "anet_paper": 16}[experiment]
    assert isinstance(model.training_step_strategy, GraphStep)  # CUDA graphs on GPUs
    assert not model.automatic_optimization


def test_default_is_the_synthetic_quick_start(tmp_path):
    cfg = compose_cfg(tmp_path, [], tiny=False)
    assert cfg.dataset.name == "synthetic" and cfg.mode == "train"
    assert cfg.dataset.generate._target_.endswith("ensure_synthetic_dataset")


def test_the_slurm_launcher_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_logger_configs_instantiate(tmp_path, logger):
    from salad_lightning.utils.instantiate import build_list

    cfg = compose_cfg(tmp_path, [f"logger={logger}"], tiny=False)
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    loggers = build_list(cfg.logger)
    assert len(loggers) == 1
    assert isinstance(loggers[0], {"csv": CSVLogger, "tensorboard": TensorBoardLogger}[logger])


@pytest.mark.parametrize("name", ["thumos14", "activitynet"])
def test_diagnosis_configs_are_detads_presets(tmp_path, name):
    """conf/diagnosis/*.yaml (the run's keys) and PRESETS (the command's) say the same."""
    from salad_lightning.metrics.diagnosis import PRESETS, Bins

    cfg = compose_cfg(tmp_path, [f"diagnosis={name}"], tiny=False)
    preset = PRESETS[name]
    assert tuple(cfg.diagnosis.tiou_thresholds) == pytest.approx(preset["tiou_thresholds"])
    for key in ("length_bins", "coverage_bins", "instance_bins"):
        assert Bins(**cfg.diagnosis[key]) == preset[key], key
    dataset = {"thumos14": "thumos", "activitynet": "anet"}[name]
    assert compose_cfg(tmp_path, [f"dataset={dataset}"], tiny=False).diagnosis == cfg.diagnosis
