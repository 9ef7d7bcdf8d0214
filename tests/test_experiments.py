"""experiments/: the table aggregation (salad-aggregate) on hand-made run folders, and the
experiment configs.

The slow tests run ``experiment=thumos_paper`` and ``experiment=anet_paper`` for one
epoch, end to end, on tiny fixtures in the real on-disk layouts (a tiny network).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from _runcfg import REPO, compose_cfg, run_cli
from salad_lightning import aggregate, paired, sweeps
from salad_lightning.data.thumos_like import select_videos

TIOU = [0.1, 0.2, 0.3, 0.4, 0.5]


def _fake_run(
    folder: Path,
    *,
    seed: int,
    pruning: str,
    maps: list[float],
    mu: float = 0.5,
    detections: int | None = 1,
    train_fit: float | None = None,
):
    """A run folder as the app writes it: metrics.json (with the train fit's keys when
    ``train_fit`` is given), config_resolved.yaml and results.json with ``detections``
    detections over two videos (None: no results.json)."""
    folder.mkdir(parents=True)
    if detections is not None:
        det = {"label": "a", "score": 0.5, "segment": [1.0, 2.0]}
        results = {"v1": [det] * (detections // 2), "v2": [det] * (detections - detections // 2)}
        (folder / "results.json").write_text(json.dumps({"version": "x", "results": results}))
    metrics = {"split": "test", "tiou_thresholds": TIOU, "val": {"val/mAP": 0.5}}
    metrics.update({f"test/mAP@{t}": m for t, m in zip(TIOU, maps)})
    metrics["test/mAP"] = sum(maps) / len(maps)
    if train_fit is not None:
        metrics["train"] = {"train/mAP@0.5": 1.0, "train/mAP": train_fit, "train/ece": 0.1}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    cfg = {"seed": seed, "model": {"loss": {"pruning": pruning, "mu": mu, "lambda1": 1}}}
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture
def pruning_runs(tmp_path) -> Path:
    """SALAD over seeds 0-2, no pruning over seeds 0-1, and an unknown row; a multirun layout."""
    root = tmp_path / "sweep"
    salad = {0: [0.30, 0.20, 0.10, 0.05, 0.01], 1: [0.40, 0.30, 0.20, 0.15, 0.02]}
    salad[2] = [0.50, 0.25, 0.30, 0.10, 0.03]
    for i, (seed, maps) in enumerate(salad.items()):
        _fake_run(root / "main" / str(i), seed=seed, pruning="salad", maps=maps)
    _fake_run(root / "main" / "3", seed=1, pruning="none", maps=[0.2, 0.2, 0.2, 0.2, 0.2])
    _fake_run(root / "main" / "4", seed=0, pruning="none", maps=[0.1, 0.1, 0.1, 0.1, 0.1])
    _fake_run(root / "other" / "0", seed=0, pruning="zzz_new", maps=[0.0] * 5)
    (root / "alpha_export" / "0").mkdir(parents=True)  # a run without metrics is skipped
    (root / "alpha_export" / "0" / "config_resolved.yaml").write_text("seed: 0\n")
    return root


def test_aggregate_mean_and_std_by_hand(pruning_runs):
    runs = sweeps.load_runs([pruning_runs], ["model.loss.pruning"])
    tious, rows = aggregate.summarise(runs, "pruning")
    assert tious == TIOU
    # the paper's order (its rows present here), then rows it does not have, sorted
    assert [r.key for r in rows] == ["none", "salad", "zzz_new"]
    salad = rows[1]
    assert salad.seeds == (0, 1, 2) and salad.label == "SALAD (pruning)"
    assert salad.paper == (73.3, 70.7, 65.7, 57.0, 44.6)
    # mAP@0.1 in %: 30, 40, 50 -> mean 40, sample std 10
    assert salad.mean[0.1] == pytest.approx(40.0)
    assert salad.std[0.1] == pytest.approx(10.0)
    # mAP@0.3: 10, 20, 30 -> 20 ± 10; mAP@0.2: 20, 30, 25 -> 25 ± 5
    assert salad.mean[0.3] == pytest.approx(20.0) and salad.std[0.3] == pytest.approx(10.0)
    assert salad.mean[0.2] == pytest.approx(25.0) and salad.std[0.2] == pytest.approx(5.0)
    # mAP@0.5: 1, 2, 3 -> 2 ± 1
    assert salad.mean[0.5] == pytest.approx(2.0) and salad.std[0.5] == pytest.approx(1.0)
    none = rows[0]
    assert none.seeds == (0, 1)
    assert none.mean[0.4] == pytest.approx(15.0)
    assert none.std[0.4] == pytest.approx(math.sqrt(50.0))  # 10, 20: sqrt(((-5)^2 + 5^2) / 1)
    assert rows[2].paper is None and math.isnan(rows[2].std[0.1])


def test_aggregate_cli_prints_and_writes_the_same_markdown(pruning_runs, tmp_path, capsys):
    out = tmp_path / "table.md"
    args = [str(pruning_runs), "--rows", "model.loss.pruning", "--paper", "pruning"]
    rc = aggregate.main([*args, "--markdown", str(out), "--title", "T5", "--note", "command: x"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    lines = printed.splitlines()
    assert lines[:4] == ["# T5", "", "- command: x", ""]
    assert (
        "| SALAD (pruning) | 0,1,2 | – | 40.00 ± 10.00 | 25.00 ± 5.00 | 20.00 ± 10.00 "
        "| 10.00 ± 5.00 | 2.00 ± 1.00 | 19.40 | 73.3 / 70.7 / 65.7 / 57.0 / 44.6 |" in lines
    )
    assert "| zzz_new | 0 | – | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | – |" in lines
    # each run's average by seed: SALAD 13.20 / 21.40 / 23.60 (the --list values below)
    assert "| SALAD (pruning) | 13.20 | 21.40 | 23.60 |" in lines
    assert "| No pruning | 10.00 | 20.00 | – |" in lines
    # paired with SALAD on seeds 0, 1. Average: d = 10.00 - 13.20, 20.00 - 21.40 =
    # -3.2, -1.4; mean -2.3, sd 1.8 / sqrt(2), se = sd / sqrt(2) = 0.9, t(0.975, 1) =
    # 12.7062 -> -2.3 ± 11.4356 = [-13.74, +9.14]. A bootstrap of 2 values puts 1/4 of
    # its means on each value, so its 2.5% / 97.5% quantiles are the two values.
    # mAP@0.5: d = 10 - 1, 20 - 2 = 9, 18; mean 13.5, se 4.5 -> 13.5 ± 57.178.
    assert (
        "| No pruning | 0,1 | -2.30 | [-13.74, +9.14] | [-3.20, -1.40] | not resolved "
        "(bootstrap: worse) | +13.50 | [-43.68, +70.68] | [+9.00, +18.00] | not resolved "
        "(bootstrap: better) |" in lines
    )
    # one paired seed: no interval
    assert "| zzz_new | 0 | -13.20 | – | – | not resolved | -1.00 | – | – | not resolved |" in lines
    assert "- ours, by average: salad (19.40) > none (15.00) > zzz_new (0.00)" in lines
    # deterministic: the same input prints the same bytes
    assert aggregate.main(args) == 0
    assert capsys.readouterr().out == printed.split("\n\n", 2)[2]

    assert aggregate.main([*args[:3], "--list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[:2] for row in listed if row[0] == "salad"] == [
        ["salad", "0"],
        ["salad", "1"],
        ["salad", "2"],
    ]
    assert Path(listed[0][2]).parent.name in {"main", "other"}
    assert [row[3] for row in listed if row[0] == "salad"] == ["13.20", "21.40", "23.60"]
    assert {row[4] for row in listed} == {"1"}  # detections in each results.json


@pytest.mark.parametrize(
    ("df", "q", "table"),
    # printed Student t tables (two-sided 95%: q = 0.975; one-sided 95%: q = 0.95)
    [(1, 0.975, 12.706), (2, 0.975, 4.303), (3, 0.975, 3.182), (4, 0.975, 2.776)]
    + [(5, 0.975, 2.571), (9, 0.975, 2.262), (30, 0.975, 2.042), (4, 0.95, 2.132)],
)
def test_t_quantile_against_tables(df, q, table):
    assert paired.t_quantile(q, df) == pytest.approx(table, abs=5e-4)
    assert paired.t_quantile(1 - q, df) == pytest.approx(-table, abs=5e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution: F(1) = 1/2 + atan(1)/pi = 3/4
    assert paired.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-15)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)); F(2) = 1/2 + 1/sqrt(6)
    assert paired.t_cdf(2.0, 2) == pytest.approx(0.5 + 1 / math.sqrt(6), abs=1e-15)
    # df = 3: F(t) = 1/2 + (θ + sin θ cos θ) / π, θ = atan(t / sqrt(3)); t = sqrt(3): θ = π/4
    assert paired.t_cdf(math.sqrt(3), 3) == pytest.approx(0.75 + 0.5 / math.pi, abs=1e-15)
    for df in (1, 2, 5, 8):
        assert paired.t_cdf(0.0, df) == 0.5
        assert paired.t_cdf(-1.3, df) == pytest.approx(1 - paired.t_cdf(1.3, df))
    with pytest.raises(ValueError, match="df must be"):
        paired.t_cdf(1.0, 0)


def _paired_runs(root: Path) -> None:
    """SALAD (seeds 0-4) at 50% at tIoU 0.1-0.4 and 30% at 0.5 (average 46); no pruning
    with per-seed averages 44, 45, 43, 45, 43 and mAP@0.5 31, 29, 32, 28, 30 (its 0.1-0.4
    columns x = (5 * average - mAP@0.5) / 4, e.g. seed 0: (220 - 31) / 4 = 47.25)."""
    for s in range(5):
        _fake_run(root / f"s{s}", seed=s, pruning="salad", maps=[0.5] * 4 + [0.3])
    x = [0.4725, 0.49, 0.4575, 0.4925, 0.4625]
    y = [0.31, 0.29, 0.32, 0.28, 0.30]
    for s in range(5):
        _fake_run(root / f"n{s}", seed=s, pruning="none", maps=[x[s]] * 4 + [y[s]])


def test_paired_intervals_by_hand(tmp_path):
    _paired_runs(tmp_path / "runs")
    runs = sweeps.load_runs([tmp_path / "runs"], ["model.loss.pruning"])
    _, rows = aggregate.summarise(runs, "pruning")
    avg, at05 = paired.paired(rows, "salad", resamples=10000, seed=0)
    assert (avg.key, avg.measure, avg.seeds) == ("none", "average", (0, 1, 2, 3, 4))
    # d = -2, -1, -3, -1, -3: mean -2, deviations 0, 1, -1, 1, -1, sd = sqrt(4 / 4) = 1,
    # se = 1 / sqrt(5) = 0.447214; t(0.975, 4) = 2.776445 -> -2 ± 1.241663
    assert avg.diffs == pytest.approx((-2, -1, -3, -1, -3))
    assert avg.mean == pytest.approx(-2.0)
    assert avg.t == pytest.approx((-3.241663, -0.758337), abs=1e-5)
    assert avg.verdict == "worse"
    # every resampled mean lies in [-3, -1]; the bootstrap agrees
    assert -3 <= avg.bootstrap[0] < avg.bootstrap[1] <= -1
    # mAP@0.5: d = 1, -1, 2, -2, 0: mean 0, sd = sqrt(10 / 4), se = sqrt(0.5) = 0.707107
    # -> 0 ± 2.776445 * 0.707107 = 0 ± 1.963243
    assert at05.diffs == pytest.approx((1, -1, 2, -2, 0))
    assert at05.t == pytest.approx((-1.963243, 1.963243), abs=1e-5)
    assert at05.verdict == "not resolved"
    # the same seed and data give the same bootstrap; with few resamples another
    # seed gives another interval
    again = paired.paired(rows, "salad", resamples=10000, seed=0)
    assert again[1].bootstrap == at05.bootstrap
    few = [paired.paired(rows, "salad", resamples=20, seed=k)[1].bootstrap for k in (0, 1)]
    assert few[0] != few[1]
    with pytest.raises(ValueError, match="reference row 'nope'"):
        paired.paired(rows, "nope")


def test_bootstrap_matches_the_exact_resampling_distribution():
    """All 5^5 equally likely resamples of 5 differences, enumerated: the Monte Carlo
    interval's ends lie within one step (0.2 here) of the exact quantiles."""
    diffs = [1.0, 1.0, 1.0, 1.0, -0.5]
    means = sorted(sum(c) / 5 for c in itertools.product(diffs, repeat=5))
    lo_exact = means[math.ceil(0.025 * len(means)) - 1]
    hi_exact = means[math.ceil(0.975 * len(means)) - 1]
    # by hand: k draws of -0.5 give a mean of (5 - 1.5 k) / 5; P(k >= 4) = 0.00672 and
    # P(k >= 3) = 0.05792 (binomial, p = 1/5), so the 2.5% quantile is k = 3: 0.1
    assert lo_exact == pytest.approx(0.1) and hi_exact == pytest.approx(1.0)
    lo, hi = paired.bootstrap_interval(diffs, resamples=10000, seed=0)
    assert abs(lo - lo_exact) <= 0.2 + 1e-9 and hi == pytest.approx(hi_exact)
    # the t interval is wider: mean 0.7, sd sqrt(0.45), se 0.3, 0.7 ± 2.776445 * 0.3
    assert paired.t_interval(diffs) == pytest.approx((-0.132934, 1.532934), abs=1e-5)
    p = paired.Paired(
        "x",
        "x",
        (0, 1, 2, 3, 4),
        "average",
        tuple(diffs),
        0.7,
        paired.t_interval(diffs),
        (lo, hi),
    )
    assert p.verdict == "not resolved (bootstrap: better)"
    assert paired.bootstrap_interval([2.0, 2.0, 2.0], resamples=100) == (2.0, 2.0)
    assert all(math.isnan(v) for v in paired.bootstrap_interval([1.0], resamples=100))


def test_runs_without_detections_are_reported(tmp_path, capsys):
    root = tmp_path / "target"
    for s, (dets, m) in enumerate([(5, 0.2), (0, 0.0), (0, 0.0), (3, 0.1)]):
        _fake_run(root / f"h{s}", seed=s, pruning="salad", maps=[m] * 5, detections=dets)
    _fake_run(root / "old", seed=9, pruning="salad", maps=[0.1] * 5, detections=None)
    runs = sweeps.load_runs([root], ["model.loss.pruning"])
    assert [r.detections for r in runs] == [5, 0, 0, 3, None]
    _, (row,) = aggregate.summarise(runs, None)
    assert row.empty_seeds == (1, 2)
    assert aggregate.main([str(root), "--rows", "model.loss.pruning", "--reference", "none"]) == 0
    out = capsys.readouterr().out
    # the two empty runs count as 0 in the mean: (20 + 0 + 0 + 10 + 10) / 5 = 8
    assert "| salad | 0,1,2,3,9 | 1,2 (no results.json: 9) | 8.00 ± 8.37 |" in out
    assert "| salad | 20.00 | 0.00 (no detection) | 0.00 (no detection) | 10.00 | 10.00 |" in out
    assert "Paired with" not in out
    assert aggregate.main([str(root), "--rows", "model.loss.pruning", "--list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[4] for row in listed] == ["5", "0", "0", "3", "-"]


def test_aggregate_rows_of_several_keys_and_stale_runs(tmp_path, capsys):
    for i, mu in enumerate((0.5, 0.7)):
        _fake_run(tmp_path / "s" / str(i), seed=0, pruning="salad", maps=[0.1] * 5, mu=mu)
    runs = sweeps.load_runs([tmp_path / "s"], ["model.loss.lambda1", "model.loss.mu"])
    assert sorted(r.row for r in runs) == ["1.0,0.5", "1.0,0.7"]  # ints read as floats
    # two runs of one row and seed: an error naming both folders
    _fake_run(tmp_path / "s" / "2", seed=0, pruning="salad", maps=[0.2] * 5, mu=0.7)
    assert aggregate.main([str(tmp_path / "s"), "--rows", "model.loss.mu"]) == 2
    err = capsys.readouterr().err
    assert "seed 0 has two runs" in err and str(tmp_path / "s" / "2") in err
    assert aggregate.main([str(tmp_path / "s"), "--rows", "model.loss.nope"]) == 2
    assert "no key 'model.loss.nope'" in capsys.readouterr().err


def test_thumos_shaped_cpu_composes(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=thumos_shaped_cpu"], tiny=False)
    assert cfg.dataset.name == "thumos14"
    assert cfg.dataset.root == f"{tmp_path / 'cache'}/thumos_like_f0.25_d64"
    dm = cfg.dataset.datamodule
    assert dm.annotation_file.endswith("thumos_like_f0.25_d64/annotations/thumos14.json")
    assert (dm.feature_dim, dm.downsample, dm.stride, dm.window) == (64, 4, 4, 16)
    assert list(cfg.dataset.tiou_thresholds) == TIOU == list(cfg.model.tiou_thresholds)
    assert cfg.model.net.hidden_size == 64 and cfg.model.net.input_dim == 64  # model=small
    assert cfg.model.postprocess.nms == "soft"
    assert "thumos_shaped_cpu" in cfg.tags


def test_thumos_shaped_regime_composes(tmp_path):
    """The tables' benchmark: thumos_shaped_cpu with its own data, 20 epochs, cosine lr."""
    cfg = compose_cfg(tmp_path, ["experiment=thumos_shaped_regime"], tiny=False)
    cpu = compose_cfg(tmp_path, ["experiment=thumos_shaped_cpu"], tiny=False)
    assert cfg.dataset.root == f"{tmp_path / 'cache'}/thumos_like_f0.25_a4_d64"
    assert cfg.trainer.max_epochs == 20 and cpu.trainer.max_epochs == 30
    sched = cfg.model.scheduler
    assert sched._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR" and sched.T_max == 20
    assert cpu.model.scheduler is None
    assert list(cfg.tags) == ["thumos_shaped_regime"]
    # everything else as in thumos_shaped_cpu
    for key in ("model.net", "model.optimizer", "dataset.datamodule", "dataset.postprocess"):
        a, b = OmegaConf.select(cfg, key), OmegaConf.select(cpu, key)
        if key == "dataset.datamodule":
            a, b = (OmegaConf.to_container(x) for x in (a, b))
            a.pop("annotation_file"), b.pop("annotation_file")
            a.pop("feature_dir"), b.pop("feature_dir")
        assert a == b, key


def test_prepare_writes_each_experiments_dataset_root(tmp_path):
    """prepare.sh's --out of each shaped experiment is that experiment's dataset.root."""
    text = (REPO / "experiments" / "tables" / "prepare.sh").read_text()
    cases = re.findall(r"^\s*(thumos_shaped_[\w |]+)\)\s*\n\s*thumos_like --out (\S+)", text, re.M)
    outs = {e.strip(): out for names, out in cases for e in names.split("|")}
    assert set(outs) == {"thumos_shaped_regime", "thumos_shaped_converged", "thumos_shaped_cpu"}
    for experiment, out in outs.items():
        cfg = compose_cfg(tmp_path, [f"experiment={experiment}"], tiny=False)
        assert cfg.dataset.root == f"{tmp_path / 'cache'}/{out.removeprefix('data_cache/')}"


TINY_NET = [
    "model.net.hidden_size=8",
    "model.net.reg_dims=[8,8,8]",
    "model.net.sa_dims=[8,8,8]",
    "model.net.cls_dims=[8,8]",
    "model.cls_pretrain_epochs=0",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "dataset.datamodule.num_workers=0",
    "dataset.datamodule.pin_memory=false",
    "num_timeline_plots=0",
]


def _one_epoch(tmp_path: Path, overrides: list[str]) -> tuple[dict, dict]:
    out = tmp_path / "out"
    proc = run_cli([*overrides, *TINY_NET, f"paths.root_dir={out}"], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (metrics_path,) = out.rglob("metrics.json")
    cfg = yaml.safe_load((metrics_path.parent / "config_resolved.yaml").read_text())
    assert (metrics_path.parent / "checkpoints" / "last.ckpt").is_file()
    return json.loads(metrics_path.read_text()), cfg


@pytest.mark.slow
def test_thumos_paper_runs_one_epoch(tmp_path, thumos_folder):
    """ActionFormer's layout with the real THUMOS14 file (every class, 18 + 18 videos)."""
    root = tmp_path / "thumos"
    (root / "annotations").mkdir(parents=True)
    data = json.loads(Path(thumos_folder.annotation_file).read_text())
    keep = select_videos(data["database"], 0.01)
    data["database"] = {v: data["database"][v] for v in keep}
    (root / "annotations" / "thumos14.json").write_text(json.dumps(data))
    (root / "i3d_features").symlink_to(thumos_folder.feature_dir, target_is_directory=True)
    metrics, cfg = _one_epoch(
        tmp_path,
        [
            "experiment=thumos_paper",
            f"dataset.root={root}",
            f"dataset.feature_dim={thumos_folder.feature_dim}",
            "dataset.datamodule.max_seq_len=128",
        ],
    )
    assert cfg["tags"] == ["thumos_paper"] and cfg["dataset"]["name"] == "thumos14"
    assert (
        cfg["model"]["optimizer"]["lr"] == 1e-4 and cfg["dataset"]["datamodule"]["batch_size"] == 4
    )
    assert cfg["model"]["postprocess"]["nms"] == "soft"
    assert metrics["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert all(0.0 <= metrics[f"test/mAP@{t}"] <= 1.0 for t in metrics["tiou_thresholds"])


@pytest.mark.slow
def test_anet_paper_runs_one_epoch(tmp_path, anet_folder):
    """The official ActivityNet 1.3 schema, ``{root}/activity_net.v1-3.min.json`` + ``features/v_*.npy``."""
    root = Path(anet_folder.annotation_file).parent
    assert Path(anet_folder.feature_dir) == root / "features"
    metrics, cfg = _one_epoch(
        tmp_path,
        [
            "experiment=anet_paper",
            f"dataset.root={root}",
            f"dataset.feature_dim={anet_folder.feature_dim}",
            "dataset.num_classes=4",
        ],
    )
    assert cfg["tags"] == ["anet_paper"] and cfg["dataset"]["name"] == "anet13"
    assert cfg["dataset"]["datamodule"]["resize_to"] == 100
    assert (
        cfg["model"]["postprocess"]["top_k"] == 20 and cfg["model"]["postprocess"]["nms"] == "none"
    )
    assert len(metrics["tiou_thresholds"]) == 10
    assert all(0.0 <= metrics[f"test/mAP@{t}"] <= 1.0 for t in metrics["tiou_thresholds"])


@pytest.mark.slow
def test_the_data_benchmark_streams_an_epoch_of_a_few_files(tmp_path):
    # make bench runs it; it reads the DataModule's batches as the app does (a typed Batch)
    res = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "benchmarks" / "data.py"),
         "--videos", "8", "--steps", "50", "--dim", "16", "--workers", "0",
         "--parts", "preflight", "epoch", "--dir", str(tmp_path / "feats")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"epoch: [\d.]+ s = \d+ videos/s", res.stdout), res.stdout
    assert "videos 8 " in res.stdout


def test_a_table_script_trains_salad_once_however_often_it_needs_it(tmp_path):
    # pruning.sh calls need_salad before its runs and again before its table
    tables = tmp_path / "experiments" / "tables"
    tables.mkdir(parents=True)
    (tables / "_common.sh").write_text((REPO / "experiments/tables/_common.sh").read_text())
    (tables / "salad.sh").write_text("echo trained >> salad.log\n")
    (tables / "two.sh").write_text(
        'source "$(dirname "$0")/_common.sh"\nneed_salad x=1\nneed_salad x=1\n'
    )
    res = subprocess.run(
        ["bash", str(tables / "two.sh")], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHON": sys.executable, "STEP": "all"}, timeout=60,
    )  # fmt: skip
    # the second call checks the runs' args.txt (none here: the stub writes none)
    assert (tmp_path / "salad.log").read_text() == "trained\n"
    assert "was not made with" in res.stderr and res.returncode == 1


def test_run_args_tell_a_new_untracked_config_apart(tmp_path):
    # a table must not pair runs made before and after a config file was added
    tables = tmp_path / "experiments" / "tables"
    tables.mkdir(parents=True)
    (tables / "_common.sh").write_text((REPO / "experiments/tables/_common.sh").read_text())
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.yaml").write_text("a: 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)

    def args() -> str:
        cmd = f'source "{tables}/_common.sh"; run_args x=1'
        env = {**os.environ, "PYTHON": sys.executable}
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env).stdout

    clean = args()
    (tmp_path / "conf" / "b.yaml").write_text("b: 2\n")
    assert args() != clean
    (tmp_path / "conf" / "b.yaml").unlink()
    assert args() == clean


def test_begin_runs_resumes_runs_begun_the_same_way_and_empties_the_others(tmp_path):
    """A table script's folder is kept when its runs were begun with these settings (an
    interrupted all.sh resumes), emptied otherwise or with FRESH=1."""
    tables = tmp_path / "experiments" / "tables"
    tables.mkdir(parents=True)
    (tables / "_common.sh").write_text((REPO / "experiments/tables/_common.sh").read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)

    def begin(*args: str, fresh: bool = False) -> subprocess.CompletedProcess:
        cmd = f'source "{tables}/_common.sh"; begin_runs "{tmp_path}/out" {" ".join(args)}'
        env = {**os.environ, "PYTHON": sys.executable, "FRESH": "1" if fresh else "0"}
        return subprocess.run(
            ["bash", "-c", cmd], capture_output=True, text=True, env=env, cwd=tmp_path
        )

    assert begin("x=1").returncode == 0
    (tmp_path / "out" / "job0").mkdir()  # a finished job
    res = begin("x=1")
    assert "resuming the runs in" in res.stderr and (tmp_path / "out" / "job0").is_dir()
    begin("x=2")  # other overrides: not these runs
    assert not (tmp_path / "out" / "job0").exists() and (tmp_path / "out" / "started.txt").is_file()
    (tmp_path / "out" / "job0").mkdir()
    begin("x=2", fresh=True)
    assert not (tmp_path / "out" / "job0").exists()


def test_skip_finished_does_not_run_a_finished_job_again(tmp_path):
    """skip_finished=true (what the table scripts pass): a job whose folder holds its
    metrics.json returns them without running; without them it runs."""
    cfg = compose_cfg(tmp_path, ["skip_finished=true"])
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"test/mAP": 0.25}))
    from salad_lightning.pipeline import run as run_pipeline

    assert run_pipeline(cfg) == {"test/mAP": 0.25}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # nothing else written


# --- the convergence pilot's rule (experiments/convergence.py) -----------------------


def _convergence_run(root: Path, epochs: int, seed: int, fit: dict, hold: dict, test: float):
    """A finished pilot run: its CSV log (train/mAP and val/mAP by epoch, in fractions)
    and metrics.json."""
    run = root / f"E{epochs}" / f"seed{seed}"
    (run / "csv").mkdir(parents=True)
    rows = ["epoch,step,train/mAP,val/mAP"]
    for done in sorted(set(fit) | set(hold)):
        f, h = fit.get(done, ""), hold.get(done, "")
        rows.append(
            f"{done - 1},{done * 10},{f / 100 if f != '' else ''},{h / 100 if h != '' else ''}"
        )
    (run / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "metrics.json").write_text(json.dumps({"test/mAP": test / 100}))


def test_the_convergence_rule_by_hand(tmp_path):
    """Three budgets, two seeds. 40 epochs: train fit 80 (< 90): condition 1 fails. 80
    epochs: fit 90.5 then 91 (+0.5, plateaued), holdout best 60 by 64 epochs and 60.5 at
    the end (+0.5); 160 epochs add 0.5 (fit) and 0.9 (holdout): all four met, so the rule
    picks 80. 160 has no larger budget: condition 4 fails there."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location(
        "convergence", REPO / "experiments" / "convergence.py"
    )
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    for seed in (0, 1):
        _convergence_run(tmp_path, 40, seed, {32: 79.5, 40: 80.0}, {32: 50.5, 40: 51.0}, 40.0)
        _convergence_run(
            tmp_path, 80, seed, {64: 90.5, 80: 91.0}, {8: 20.0, 64: 60.0, 80: 60.5}, 50.0 + seed
        )
        _convergence_run(tmp_path, 160, seed, {128: 91.4, 160: 91.5}, {128: 61.0, 160: 61.4}, 52.0)
    found = conv.read(tmp_path)
    assert sorted(found) == [40, 80, 160]
    row = next(r for r in found[80] if r["seed"] == 1)
    assert row == pytest.approx(
        {
            "seed": 1,
            "fit_80": 90.5,
            "fit_end": 91.0,
            "hold_best_80": 60.0,
            "hold_end": 60.5,
            "test": 51.0,
        }
    )
    unmet, chosen = conv.verdicts(found)
    assert chosen == 80 and unmet[80] == []
    assert [u.split(":")[0] for u in unmet[40]] == ["1", "4"]  # 80 epochs add 11 (fit)
    assert unmet[160] == ["4: no larger budget to compare with"]
    assert "The rule chooses **80 epochs**." in conv.table(found)
    # the holdout still improving in the last 20% of 80 epochs: 80 no longer qualifies
    shutil.rmtree(tmp_path / "E80")
    for seed in (0, 1):
        _convergence_run(tmp_path, 80, seed, {64: 90.5, 80: 91.0}, {64: 58.0, 80: 60.5}, 50.0)
    unmet, chosen = conv.verdicts(conv.read(tmp_path))
    assert chosen is None and unmet[80][0].startswith("3: the holdout gains 2.50")


def test_recall_script_counts_each_ground_truth_once_by_hand(tmp_path):
    """experiments/tables/recall.py on a hand-worked case: video a has ground truths
    [0, 10] "x" and [20, 30] "y"; video b has [0, 10] "x". Detections: two on a's first
    (0.9 "x" tIoU 1, 0.8 "x" tIoU 0.8: the second finds it taken), one on a's second with
    the wrong label (tIoU 1, "x"), one on b's at tIoU 0.4 ([0, 4]). Class-aware at 0.3:
    a's first and b's = 2 of 3; at 0.5: a's first = 1 of 3. Class-agnostic at 0.3: a's
    first (0.9), a's second (the wrong-label one, the 0.8 one finding a's first taken and
    a's second not overlapping it), b's = 3 of 3; at 0.5: 2 of 3."""
    ann = {
        "database": {
            "a": {"subset": "Test", "annotations": [
                {"segment": [0, 10], "label": "x"}, {"segment": [20, 30], "label": "y"}]},
            "b": {"subset": "Test", "annotations": [{"segment": [0, 10], "label": "x"}]},
            "c": {"subset": "Validation", "annotations": [{"segment": [0, 10], "label": "x"}]},
        }
    }  # fmt: skip
    res = {
        "results": {
            "a": [
                {"segment": [0, 10], "label": "x", "score": 0.9},
                {"segment": [0, 8], "label": "x", "score": 0.8},
                {"segment": [20, 30], "label": "x", "score": 0.7},
            ],
            "b": [{"segment": [0, 4], "label": "x", "score": 0.5}],
            "c": [{"segment": [0, 10], "label": "x", "score": 0.5}],
        }
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments/tables/recall.py"), str(tmp_path / "ann.json"),
         str(tmp_path / "res.json"), "--tiou", "0.3", "0.5"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "3 ground truths in 2 Test videos" in out
    assert f"| {tmp_path / 'res.json'} | 4 | 66.7 / 33.3 | 100.0 / 66.7 |" in out


def test_aggregate_shows_the_train_fit_of_the_runs_that_measured_it(tmp_path, capsys):
    """The train fit (metrics.json's train/mAP) by seed and its mean, for the rows whose
    runs measured it: salad 0.97 and 0.95 -> 97.00, 95.00, mean 96.00; none has none."""
    root = tmp_path / "s"
    _fake_run(root / "0", seed=0, pruning="salad", maps=[0.3] * 5, train_fit=0.97)
    _fake_run(root / "1", seed=1, pruning="salad", maps=[0.4] * 5, train_fit=0.95)
    _fake_run(root / "2", seed=0, pruning="none", maps=[0.2] * 5)
    out_json = tmp_path / "t.json"
    args = [str(root), "--rows", "model.loss.pruning", "--json", str(out_json)]
    assert aggregate.main(args) == 0
    out = capsys.readouterr().out
    assert "| row | seed 0 | seed 1 | mean |" in out
    assert "| salad | 97.00 | 95.00 | 96.00 |" in out
    assert "| none |" not in out.split("Train fit")[1].split("Paired")[0]
    runs = {r["key"]: r["runs"] for r in json.loads(out_json.read_text())["rows"]}
    assert [r["train_fit"] for r in runs["salad"]] == pytest.approx([97.0, 95.0])
    assert [r["train_fit"] for r in runs["none"]] == [None]
