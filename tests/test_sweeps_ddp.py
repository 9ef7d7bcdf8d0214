"""The Optuna search and DDP on 2 CPU processes, through the real CLI (a multirun grid:
tests/test_aggregate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from _runcfg import TINY, compose_cfg, run_cli
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow


def _base(tmp_path: Path, cache: Path | None = None) -> list[str]:
    cache = cache or tmp_path / "cache"
    return [f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache}", *TINY]


def test_optuna_search_runs_and_returns_the_objective(tmp_path):
    res = run_cli(
        ["-m", "hparams_search=salad_optuna", "hydra.sweeper.n_trials=2", *_base(tmp_path)],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = list((tmp_path / "logs" / "multiruns").glob("*/optimization_results.yaml"))
    assert len(results) == 1
    best = yaml.safe_load(results[0].read_text())
    assert set(best["best_params"]) == {"model.loss.lambda1", "model.loss.lambda2", "model.loss.mu"}
    # the objective Optuna saw is the val/mAP that one of the trials wrote
    trial_values = [
        json.loads(p.read_text())["val"]["val/mAP"]
        for p in (tmp_path / "logs" / "multiruns").glob("*/[0-9]*/metrics.json")
    ]
    assert len(trial_values) == 2
    assert best["best_value"] == pytest.approx(max(trial_values), abs=1e-9)


# validating and testing on the training videos gives a tiny model a non-zero mAP to
# compare within a few epochs
DDP_DATA = [
    "dataset.generate.num_train_videos=14",
    "dataset.datamodule.val_subset=Validation",
    "dataset.datamodule.test_subset=Validation",
]
DDP_TRAIN = [
    "trainer=ddp_cpu",
    "trainer.max_epochs=6",
    "model.cls_pretrain_epochs=1",  # the heads that sit out must not stall DDP
    "test_after_training=false",
    *DDP_DATA,
]


def _ddp_train(root: Path, cache: Path, extra: list[str] = ()) -> Path:
    """Two gloo processes train (`DDP_TRAIN`); the run's folder."""
    res = run_cli([*DDP_TRAIN, *_base(root, cache=cache), *extra], cwd=root.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    [run] = list((root / "logs" / "runs").iterdir())
    return run


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    """One two-process training run, shared by the tests below: its folder and the
    data's cache."""
    root = tmp_path_factory.mktemp("ddp") / "auto"
    return _ddp_train(root, root.parent / "cache"), root.parent / "cache"


@pytest.mark.ddp
def test_ddp_cpu_trains_and_evaluates_as_one_process(ddp_run, tmp_path):
    """Two gloo processes train, then test the checkpoint: the validation mAP, the test
    metrics, results.json and the diagnosis equal one process's on the same checkpoint.
    (Uneven splits and repeated videos: tests/test_metric_ddp.py, on the store itself.)"""
    run, cache = ddp_run
    ddp_val = json.loads((run / "metrics.json").read_text())["val"]["val/mAP"]
    ckpt = run / "checkpoints" / "last.ckpt"
    data = [*DDP_DATA, f"paths.cache_dir={cache}"]
    cfg = compose_cfg(tmp_path / "single", ["mode=validate", f"ckpt_path={ckpt}", *data])
    single = run_pipeline(cfg)["val"]["val/mAP"]
    assert ddp_val > 0.0
    assert single == pytest.approx(ddp_val, abs=1e-9)

    # The test of that checkpoint, two processes then one, video by video: a batch's
    # composition changes the network's float rounding (~1e-8), not what the evaluation
    # does with its outputs, which is what must come out identical.
    data.append("dataset.datamodule.eval_batch_size=1")
    ddp_root = tmp_path / "ddp_test"
    res = run_cli(
        ["trainer=ddp_cpu", *_base(ddp_root, cache=cache), "mode=test", f"ckpt_path={ckpt}",
         *data],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    folders = list((ddp_root / "logs" / "runs").glob("*"))
    assert len(folders) == 1
    cfg = compose_cfg(tmp_path / "single_test", ["mode=test", f"ckpt_path={ckpt}", *data])
    one = run_pipeline(cfg)
    one_dir, two_dir = Path(cfg.paths.output_dir), folders[0]
    two = json.loads((two_dir / "metrics.json").read_text())
    assert two == json.loads((one_dir / "metrics.json").read_text())
    assert two["test/mAP"] == one["test/mAP"] > 0.0
    for name in ("results.json", "diagnosis/diagnosis.json", "per_class_ap.md"):
        a, b = (d / name for d in (one_dir, two_dir))
        assert a.read_text() == b.read_text(), name
    results = json.loads((two_dir / "results.json").read_text())["results"]
    assert len(results) == 14 and sum(map(len, results.values())) > 0


@pytest.mark.ddp
def test_ddp_cpu_manual_optimisation_equals_automatic(ddp_run, tmp_path):
    """`model.cuda_graph=true` switches to manual optimisation (its steps run eagerly on the
    CPU): under DDP it ends with the automatic loop's weights and optimiser state, bit for
    bit, through a classification pre-training epoch."""
    auto_run, cache = ddp_run
    manual_run = _ddp_train(tmp_path / "manual", cache, ["model.cuda_graph=true"])
    auto, manual = (
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        for run in (auto_run, manual_run)
    )
    assert manual["global_step"] == auto["global_step"] > 0
    assert auto["state_dict"].keys() == manual["state_dict"].keys()
    for k, v in auto["state_dict"].items():
        assert torch.equal(v, manual["state_dict"][k]), k
    exp_avg = [s["exp_avg"] for s in auto["optimizer_states"][0]["state"].values()]
    exp_avg_m = [s["exp_avg"] for s in manual["optimizer_states"][0]["state"].values()]
    assert len(exp_avg) == len(exp_avg_m) > 0
    assert all(torch.equal(a, b) for a, b in zip(exp_avg, exp_avg_m))


@pytest.mark.ddp
def test_ddp_cpu_predict_writes_every_video(tmp_path):
    base = _base(tmp_path)
    trained = compose_cfg(tmp_path / "train", [*base, "test_after_training=false"])
    run_pipeline(trained)  # one epoch, in this process
    ckpt = Path(trained.paths.output_dir) / "checkpoints" / "last.ckpt"
    features = tmp_path / "cache" / "synthetic_tiny_seed0" / "features"
    dest = tmp_path / "pred.json"
    res = run_cli(
        [
            *base,
            "trainer=ddp_cpu",
            "mode=predict",
            f"ckpt_path={ckpt}",
            f"+dataset.datamodule.predict_path={features}",
            f"predict_output={dest}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    videos = json.loads(dest.read_text())["results"]
    assert set(videos) == {p.stem for p in features.glob("*.npy")}
    assert sum(map(len, videos.values())) > 0
