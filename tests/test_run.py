"""The experiment framework end to end: train/test/predict, run folder, resume, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _runcfg import compose_cfg, run_cli
from salad_lightning import evaluate
from salad_lightning.losses.frozen import FrozenAlpha
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow


def _train(tmp_path: Path, overrides: list[str] = ()) -> tuple[dict, Path]:
    cfg = compose_cfg(tmp_path, list(overrides))
    summary = run_pipeline(cfg)
    return summary, Path(cfg.paths.output_dir)


def test_train_writes_the_run_folder(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="salad_lightning")
    summary, out = _train(tmp_path, ["trainer.max_epochs=2"])
    for name in (
        "config_resolved.yaml",
        "class_index.json",
        "metrics.json",
        "results.json",
        "per_class_ap.md",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "plots" / "reliability.png").is_file()
    assert len(list((out / "plots").glob("timeline_*.png"))) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tiou_thresholds"]) == {0.3, 0.4, 0.5, 0.6, 0.7}
    for t in ("0.3", "0.5", "0.7"):
        assert 0.0 <= metrics[f"test/mAP@{t}"] <= 1.0
    assert "val/mAP" in metrics["val"]
    assert len(json.loads((out / "class_index.json").read_text())["names"]) == 20
    # the table goes to the log (the console and run.log), with the run folder
    [table] = [r.getMessage() for r in caplog.records if "test mAP (%)" in r.getMessage()]
    assert f"{100 * metrics['test/mAP']:.2f}" in table and f"run folder: {out.resolve()}" in table

    # results.json is the official submission format: the evaluator reproduces the run's mAP
    gt = tmp_path / "cache" / "synthetic_tiny_seed0" / "annotations.json"
    rc = evaluate.main(
        [
            "--ground-truth",
            str(gt),
            "--predictions",
            str(out / "results.json"),
            "--subset",
            "test",
            "--json",
        ]
    )
    assert rc in (0, None)
    ours = json.loads(capsys.readouterr().out)
    assert ours["average_mAP"] == pytest.approx(metrics["test/mAP"], abs=1e-9)
    assert ours["mAP"][2] == pytest.approx(metrics["test/mAP@0.5"], abs=1e-9)

    # DETAD's diagnosis of the test split, as the command computes it on results.json
    diag = json.loads((out / "diagnosis" / "diagnosis.json").read_text())
    assert set(diag) == {
        "tiou_thresholds",
        "average_mAP_N",
        "false_positive_profile",
        "removed_error_gain",
        "sensitivity",
        "false_negative_rate",
    }
    assert diag["tiou_thresholds"] == [0.5]  # THUMOS14's preset (conf/diagnosis/thumos14.yaml)
    for name in ("false_positive_analysis", "sensitivity_analysis", "false_negative_analysis"):
        assert (out / "diagnosis" / f"{name}.png").stat().st_size > 10_000
    again = tmp_path / "diag_cli"
    evaluate.main(
        ["--ground-truth", str(gt), "--predictions", str(out / "results.json"),
         "--subset", "test", "--json", "--diagnose", str(again)]
    )  # fmt: skip
    capsys.readouterr()
    assert json.loads((again / "diagnosis.json").read_text()) == diag


def test_predict_one_npy_writes_results_json(tmp_path):
    _, out = _train(tmp_path)
    feats = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    npy = tmp_path / "new_video.npy"
    np.save(npy, feats)
    dest = tmp_path / "pred.json"
    cfg = compose_cfg(
        tmp_path,
        [
            "mode=predict",
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            f"+dataset.datamodule.predict_path={npy}",
            f"predict_output={dest}",
        ],
    )
    run_pipeline(cfg)
    data = json.loads(dest.read_text())
    assert set(data) == {"version", "results", "external_data"}
    dets = data["results"]["new_video"]
    assert dets, "no detections"
    duration = 40 * 16 / 30  # T * stride / fps
    names = json.loads((out / "class_index.json").read_text())["names"]
    for d in dets:
        assert d["label"] in names
        assert 0.0 <= d["segment"][0] <= d["segment"][1] <= duration + 1e-6
        assert 0.0 <= d["score"] <= 1.0


def test_mode_test_reproduces_the_training_runs_test_metrics(tmp_path):
    summary, out = _train(tmp_path)
    cfg = compose_cfg(
        tmp_path / "again", ["mode=test", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"]
    )
    again = run_pipeline(cfg)
    assert again["test/mAP"] == pytest.approx(summary["test/mAP"], abs=1e-9)


STEP_LR = "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}"


@pytest.mark.parametrize(
    "extra",
    [[], ["model.cuda_graph=true", STEP_LR]],
    ids=["automatic", "manual_with_scheduler"],
)
def test_resume_matches_an_uninterrupted_run(tmp_path, extra):
    """Also under the manual optimisation that `model.cuda_graph` switches to (eager here),
    where the module steps the per-epoch scheduler itself."""
    full, _ = _train(tmp_path / "full", ["trainer.max_epochs=3", *extra])
    _, first = _train(tmp_path / "part", ["trainer.max_epochs=2", *extra])
    resumed, _ = _train(
        tmp_path / "resumed",
        ["trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", *extra],
    )
    assert resumed["test/mAP"] == pytest.approx(full["test/mAP"], abs=1e-7)
    assert resumed["val"]["val/mAP"] == pytest.approx(full["val"]["val/mAP"], abs=1e-7)


@pytest.mark.parametrize(
    "override", ["trainer.gradient_clip_val=1.0", "+trainer.accumulate_grad_batches=2"]
)
def test_cuda_graph_rejects_what_manual_optimisation_cannot_do(tmp_path, override):
    cfg = compose_cfg(tmp_path, ["model.cuda_graph=true", override])
    key, value = override.lstrip("+").split("=")
    with pytest.raises(ValueError, match=f"does not support {key} \\(found {value}\\)"):
        run_pipeline(cfg)


def test_wandb_offline_files_hold_metrics_and_images(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, out = _train(tmp_path, ["logger=wandb"])
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # the offline transaction log (protobuf records) names every logged key
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (
        "train/loss",
        "train/loss_sa",
        "train/pruned_share",
        "val/mAP",
        "val/mAP@0.5",
        "val/ece",
        "test/mAP",
    ):
        assert key.encode() in log, key
    assert b"lambda1" in log  # the config went along
    # named and tagged by what the run is, so a dashboard groups ablations by itself
    assert b"synthetic_tiny-salad-seed0" in log
    assert b"ablation:salad" in log and b"dataset:synthetic_tiny" in log
    pngs = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert any("reliability" in str(p) for p in pngs), pngs
    assert any("timeline" in str(p) for p in pngs), pngs
    for name in ("false_positive_analysis", "sensitivity_analysis", "false_negative_analysis"):
        assert any(name in str(p) for p in pngs), (name, pngs)
    assert b"test/diagnosis/average_mAP_N" in log and b"test/diagnosis/fp_1G/true_positive" in log
    # the per-class AP as a W&B table: one row per class with ground truth in the test split
    tables = list((runs[0] / "files" / "media" / "table").rglob("per_class_ap*.table.json"))
    assert len(tables) == 1, tables
    table = json.loads(tables[0].read_text())
    summary = json.loads((out / "metrics.json").read_text())
    assert table["columns"] == ["class", "AP@0.3", "AP@0.4", "AP@0.5", "AP@0.6", "AP@0.7", "mean"]
    assert [row[0] for row in table["data"]] == sorted(summary["per_class_ap"])
    first = sorted(summary["per_class_ap"])[0]
    assert table["data"][0][1:6] == pytest.approx(summary["per_class_ap"][first])


def test_a_mistyped_key_fails_with_hydras_message(tmp_path):
    res = run_cli(
        [f"paths.root_dir={tmp_path}", "model.loss.lamda1=0.5"], cwd=tmp_path, timeout=120
    )
    assert res.returncode != 0
    assert "lamda1" in res.stderr and "not in struct" in res.stderr


def test_thumos_layout_runs_one_epoch(tmp_path, thumos_folder, caplog):
    # ActionFormer's layout built from the real annotation file and random features
    root = tmp_path / "thumos"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(thumos_folder.annotation_file, root / "annotations" / "thumos14.json")
    (root / "i3d_features").symlink_to(thumos_folder.feature_dir, target_is_directory=True)
    cfg = compose_cfg(
        tmp_path,
        [
            "dataset=thumos",
            f"dataset.root={root}",
            f"dataset.feature_dim={thumos_folder.feature_dim}",
            "model.net.hidden_size=8",
            "model.net.reg_dims=[8,8,8]",
            "model.net.sa_dims=[8,8,8]",
            "model.net.cls_dims=[8,8]",
            "dataset.datamodule.num_workers=0",
            "dataset.datamodule.pin_memory=false",
            "dataset.datamodule.max_seq_len=256",
            "dataset.datamodule.eval_batch_size=4",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
        ],
        tiny=False,
    )
    caplog.set_level("INFO", logger="salad_lightning")
    summary = run_pipeline(cfg)
    assert any("test mAP (%)" in r.getMessage() for r in caplog.records)
    metrics = list((tmp_path / "run").glob("metrics.json"))
    assert len(metrics) == 1
    assert json.loads(metrics[0].read_text())["test/mAP@0.5"] == summary["test/mAP@0.5"]


@pytest.mark.parametrize(
    "averaging", [[], ["callbacks=ema", "callbacks.ema.decay=0.9"]], ids=["raw", "ema"]
)
def test_the_train_fit_is_logged_every_n_epochs_and_equals_a_test_on_those_videos(
    tmp_path, averaging
):
    """callbacks.train_fit: train/mAP every N epochs and at the last one, in the CSV log
    and metrics.json; its last value is the last checkpoint's mAP on those videos, as
    `mode=test` on them gives it (here the sample holds every training video). With a
    weight average (callbacks=ema), the average's, which the checkpoint holds."""
    import csv

    data = ["dataset.datamodule.val_subset=Validation", "test_after_training=false"]
    summary, out = _train(
        tmp_path,
        [*data, "trainer.max_epochs=5", "callbacks.train_fit.every_n_epochs=2",
         "callbacks.train_fit.videos=100", "model.optimizer.lr=0.01", *averaging],
    )  # fmt: skip
    if averaging:  # the average is not the raw weights: the two evaluations could differ
        ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        raw, average = ckpt["current_model_state"], ckpt["state_dict"]
        assert any(not torch.equal(raw[k], average[k]) for k in raw)
    with open(out / "csv" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/mAP")]
    assert [int(r["epoch"]) for r in rows] == [1, 3, 4]  # every 2 epochs, and the last
    fit = json.loads((out / "metrics.json").read_text())["train"]
    assert fit == summary["train"] and fit["train/mAP"] == float(rows[-1]["train/mAP"])
    assert set(fit) == {f"train/mAP@{t:g}" for t in (0.3, 0.4, 0.5, 0.6, 0.7)} | {
        "train/mAP",
        "train/ece",
    }
    assert fit["train/mAP"] > 0
    cfg = compose_cfg(
        tmp_path / "test",
        ["mode=test", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
         "dataset.datamodule.test_subset=Validation"],
    )  # fmt: skip
    tested = run_pipeline(cfg)
    for t in ("@0.3", "@0.5", "@0.7", ""):
        assert tested[f"test/mAP{t}"] == pytest.approx(fit[f"train/mAP{t}"], abs=1e-12)


def test_checkpoint_holds_max_offset_and_class_names(tmp_path):
    """The module is built with its data's facts (the longest training ground truth in
    steps, the class names), saved once in the checkpoint; testing it on data that names
    other classes is refused, naming both."""
    import math

    from salad_lightning.data.annotations import load_annotations
    from salad_lightning.data.datamodule import holdout_split
    from salad_lightning.data.dataset import video_mapping

    _, out = _train(tmp_path)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    root = tmp_path / "cache" / "synthetic_tiny_seed0"
    ann = load_annotations(root / "annotations.json")
    train, _ = holdout_split(ann.select("Validation"), 0.25, 0)  # synthetic_tiny's holdout
    steps = [
        (v.segments[:, 1] - v.segments[:, 0]).max() / video_mapping(v, stride=16, window=16).scale
        for v in train
        if v.num_segments
    ]
    assert float(ckpt["state_dict"]["max_offset"]) == math.ceil(max(steps) - 1e-9)
    names = json.loads((out / "class_index.json").read_text())["names"]
    assert ckpt["hyper_parameters"]["class_names"] == names and len(names) == 20
    assert "class_names" not in ckpt  # saved once, with the hyperparameters

    renamed = tmp_path / "renamed.json"
    doc = json.loads((root / "annotations.json").read_text())
    for video in doc["database"].values():
        for a in video["annotations"]:
            a["label"] = "x_" + a["label"]
    renamed.write_text(json.dumps(doc))
    cfg = compose_cfg(
        tmp_path / "other",
        ["mode=test", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
         f"dataset.datamodule.annotation_file={renamed}"],
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"checkpoint's classes \(20: \['class_00'.* differ from this data's \(20: \['x_class_00'",
    ):
        run_pipeline(cfg)


def test_a_failing_job_still_finishes_its_wandb_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # a job that fails once its loggers exist (a setting refused before fit)
    cfg = compose_cfg(
        tmp_path, ["logger=wandb", "model.cuda_graph=true", "trainer.gradient_clip_val=1.0"]
    )
    with pytest.raises(ValueError, match="gradient_clip_val"):
        run_pipeline(cfg)
    assert wandb.run is None  # finished, not left open for the next job
    logs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*/logs/debug.log"))
    assert len(logs) == 1
    assert "got exitcode: 1" in logs[0].read_text()  # marked failed


def test_export_alpha_then_train_with_frozen_pruning(tmp_path):
    _, out = _train(tmp_path)
    alpha = tmp_path / "alpha.npz"
    cfg = compose_cfg(
        tmp_path / "export",
        [
            "mode=export_alpha",
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            f"alpha_output={alpha}",
        ],
    )
    run_pipeline(cfg)
    alphas = FrozenAlpha.load(alpha).alphas
    ann = json.loads((tmp_path / "cache" / "synthetic_tiny_seed0" / "annotations.json").read_text())
    train_ids = {v for v, rec in ann["database"].items() if rec["subset"] == "Validation"}
    assert set(alphas) <= train_ids and len(alphas) >= len(train_ids) - 3  # minus the holdout
    assert all(a.dtype == bool and a.ndim == 2 for a in alphas.values())
    assert any(a.any() for a in alphas.values())
    summary, _ = _train(
        tmp_path / "frozen", ["ablation=pruning_frozen", f"model.frozen_alpha_path={alpha}"]
    )
    assert 0.0 <= summary["test/mAP"] <= 1.0


def test_results_are_readable_by_others(tmp_path):
    import os
    import stat

    _, out = _train(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    for path in (out / "metrics.json", out / "results.json", out / "checkpoints" / "last.ckpt"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
