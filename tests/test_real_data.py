"""Real annotation files as published: the ActivityNet 1.3 quirks, subsets of THUMOS14,
broken feature files found before training, ``mode=check``, and the run's mAP equal to
the command's and to the loop transcription of the official protocol on the raw file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _reference_eval import reference_evaluate
from _runcfg import compose_cfg
from conftest import _ANET_TAXONOMY, clip_length, write_features
from salad_lightning.evaluate import evaluate_files
from salad_lightning.metrics.functional import video_key
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow

TINY_NET = [
    "model.net.hidden_size=8",
    "model.net.reg_dims=[8,8,8]",
    "model.net.sa_dims=[8,8,8]",
    "model.net.cls_dims=[8,8]",
    "model.cls_pretrain_epochs=0",
    "model.optimizer.lr=3e-3",
    "dataset.datamodule.num_workers=0",
    "dataset.datamodule.pin_memory=false",
    "dataset.datamodule.batch_size=4",
    "dataset.datamodule.eval_batch_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "num_timeline_plots=1",
]

# An extra leaf with no annotation at all: a class of the index absent from every subset.
TAXONOMY = [
    *_ANET_TAXONOMY,
    {
        "nodeId": 14,
        "nodeName": "Mowing the lawn",
        "parentId": 3,
        "parentName": "Household Activities",
    },
]
LEAVES = ["Ironing clothes", "Long jump", "Playing squash", "Vacuuming floor"]


def _anet_quirks(root: Path) -> dict:
    """The official schema with each quirk of the published file, features for most videos.

    Returns what the data report must count.
    """
    rng = np.random.default_rng(5)
    db, lengths = {}, {}
    for i in range(30):
        vid = f"q{i:02d}_{rng.integers(1e6):06d}"
        subset = ("training", "validation", "testing")[0 if i < 16 else 1 if i < 26 else 2]
        duration = float(np.round(rng.uniform(20, 120), 3))
        anns = []
        if subset != "testing":
            for _ in range(int(rng.integers(1, 4))):
                s = float(np.round(rng.uniform(0, 0.7 * duration), 3))
                e = float(np.round(min(duration, s + rng.uniform(2, 0.4 * duration)), 3))
                # validation: two classes only (and one more below)
                names = LEAVES[:2] if subset == "validation" else LEAVES
                anns.append({"segment": [s, e], "label": str(rng.choice(names))})
        db[vid] = {
            "duration": duration,
            "subset": subset,
            "resolution": "640x360",
            "url": f"https://www.youtube.com/watch?v={vid}",
            "annotations": anns,
        }
        lengths[vid] = int(rng.integers(40, 260))
    ids = list(db)
    train, val = ids[:16], ids[16:26]

    def add(vid, seg, label="Long jump"):
        db[vid]["annotations"].append({"segment": seg, "label": label})

    add(train[0], [0, 0])  # zero length, as published
    add(train[1], [4.10395084399376, 4.10395084399376])
    add(train[2], [db[train[2]]["duration"] - 3.0, db[train[2]]["duration"] + 2.5])  # clipped
    add(train[3], [db[train[3]]["duration"] + 1.0, db[train[3]]["duration"] + 4.0])  # outside
    add(val[0], [7.5, 7.5])  # zero length in the evaluated subset
    add(val[1], [db[val[1]]["duration"] - 5.0, db[val[1]]["duration"] + 10.0])
    no_features = [train[5], val[2]]  # listed in the file, features never released
    # the only Vacuuming floor of `validation` is in a video without features: the
    # official evaluator still counts it (a class with AP 0 in the mean)
    add(val[2], [1.0, 9.0], "Vacuuming floor")
    doc = {"version": "VERSION 1.3", "taxonomy": TAXONOMY, "database": db}
    (root / "activity_net.v1-3.min.json").write_text(json.dumps(doc))
    write_features(
        root / "features",
        {v: t for v, t in lengths.items() if v not in no_features},
        16,
        prefix="v_",
    )
    return {"no_features": no_features, "train": train, "val": val}


def _anet_overrides(root: Path) -> list[str]:
    return [
        "dataset=anet",
        f"dataset.root={root}",
        "dataset.feature_dim=16",
        "dataset.num_classes=5",
        "dataset.datamodule.val_holdout=0.2",
        *TINY_NET,
    ]


def _raw_rows(gt_file: Path, results_file: Path, subset: str):
    """Flat rows of the raw file's subset and of the results, videos indexed by key order."""
    database = json.loads(gt_file.read_text())["database"]
    results = json.loads(results_file.read_text())["results"]
    videos = sorted((v for v, r in database.items() if r["subset"] == subset), key=video_key)
    index = {v: i for i, v in enumerate(videos)}
    names = sorted({a["label"] for v in videos for a in database[v]["annotations"]})
    label = {n: i for i, n in enumerate(names)}
    gt = [
        (index[v], a["segment"], label[a["label"]])
        for v in videos
        for a in database[v]["annotations"]
    ]
    pred = [
        (index[v], r["segment"], r["score"], label.get(r["label"], len(names)))
        for v, items in results.items()
        for r in items
    ]
    gv, gs, gl = (np.array([g[k] for g in gt]) for k in range(3))
    pv, ps, psc, pl = (np.array([p[k] for p in pred]) for k in range(4))
    return pv, ps.reshape(-1, 2), psc, pl, gv, gs.reshape(-1, 2), gl


def test_official_activitynet_schema_with_its_quirks_trains_tests_and_agrees(tmp_path):
    root = tmp_path / "anet"
    root.mkdir()
    made = _anet_quirks(root)
    cfg = compose_cfg(tmp_path, _anet_overrides(root), tiny=False)
    summary = run_pipeline(cfg)
    out = Path(cfg.paths.output_dir)

    report = json.loads((out / "data_report.json").read_text())
    assert report["class_index"] == {"source": "taxonomy", "classes": 5, "named": 5}
    reasons = [(r["split"], r["action"], r["reason"]) for r in report["repaired_segments"]]
    # the holdout takes 20% of training; count over train + val + test wherever it fell
    assert sorted(r for _, _, r in reasons) == sorted(
        [
            "zero length",
            "zero length",
            "ends after the video's end",
            "outside the video",
            "zero length",
            "ends after the video's end",
        ]
    )
    assert {s["video_id"] for s in report["skipped_videos"]} == set(made["no_features"])
    test = report["splits"]["test"]
    assert (test["videos"], test["with_features"], test["without_features"]) == (10, 9, 1)
    assert test["segments"]["dropped"] == {"zero length": 1}
    assert test["segments"]["clipped"] == 1
    assert (
        "Playing squash" in test["classes_absent"] and "Mowing the lawn" in test["classes_absent"]
    )
    assert report["problems"] == []

    # the run's mAP, the command on its results.json, the loop transcription on the raw file
    thresholds = cfg.dataset.tiou_thresholds
    gt_file = root / "activity_net.v1-3.min.json"
    results = out / "results.json"
    command, _ = evaluate_files(str(gt_file), str(results), "validation", thresholds)
    _, _, ref_map, ref_avg = reference_evaluate(
        *_raw_rows(gt_file, results, "validation"), thresholds
    )
    run_maps = [summary[f"test/mAP@{t:g}"] for t in thresholds]
    np.testing.assert_allclose(run_maps, command["mAP"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(run_maps, ref_map, rtol=0, atol=1e-9)
    assert summary["test/mAP"] == pytest.approx(ref_avg, abs=1e-9)
    assert summary["test/mAP"] > 0  # random features, but some detections land
    # classes with no ground truth in `validation`: no AP, marked in per_class_ap.md
    assert set(summary["per_class_ap"]) == {"Ironing clothes", "Long jump", "Vacuuming floor"}
    table = (out / "per_class_ap.md").read_text()
    assert "| Playing squash | – |" in table and "no ground truth in the test split" in table


def test_mode_check_reports_without_training(tmp_path, capsys):
    root = tmp_path / "anet"
    root.mkdir()
    made = _anet_quirks(root)
    cfg = compose_cfg(tmp_path, ["mode=check", *_anet_overrides(root)], tiny=False)
    report = run_pipeline(cfg)
    out = Path(cfg.paths.output_dir)
    assert not (out / "checkpoints").exists()
    assert json.loads((out / "data_report.json").read_text()) == report
    printed = capsys.readouterr().out
    assert "classes: 5 (5 named, from the taxonomy)" in printed
    train = report["splits"]["train"]
    assert train["without_features"] + report["splits"]["val"]["without_features"] == 1
    assert len(made["no_features"]) == 2
    assert "feature files (values checked): 0 unusable" in printed


def test_mode_check_on_the_synthetic_default(tmp_path, capsys):
    cfg = compose_cfg(tmp_path, ["mode=check"])
    report = run_pipeline(cfg)
    db = json.loads((tmp_path / "cache" / "synthetic_tiny_seed0" / "annotations.json").read_text())
    n_test = sum(v["subset"] == "Test" for v in db["database"].values())
    n_train = sum(v["subset"] == "Validation" for v in db["database"].values())
    splits = report["splits"]
    assert splits["test"]["videos"] == splits["test"]["with_features"] == n_test
    assert splits["train"]["videos"] + splits["val"]["videos"] == n_train
    assert splits["test"]["segments"]["as_published"] == sum(
        len(v["annotations"]) for v in db["database"].values() if v["subset"] == "Test"
    )
    # clip features at the synthetic stride: lengths as duration * fps / stride implies
    assert 0.9 < splits["train"]["feature_length"]["median_ratio"] < 1.1
    assert "warning" not in splits["train"]["feature_length"]
    assert "test (Test): " in capsys.readouterr().out


def _thumos_subset(tmp_path: Path, thumos_json: Path, n: int = 12) -> tuple[Path, dict]:
    """ActionFormer's layout holding n videos of the real file (6 per subset), label_ids kept."""
    db = json.loads(thumos_json.read_text())["database"]
    keep = sorted(v for v in db if db[v]["subset"] == "Validation")[: n // 2]
    keep += sorted(v for v in db if db[v]["subset"] == "Test")[: n // 2]
    sub = {v: db[v] for v in keep}
    root = tmp_path / "thumos"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "thumos14.json").write_text(json.dumps({"database": sub}))
    lengths = {v: clip_length(r["duration"], r["fps"]) for v, r in sub.items()}
    write_features(root / "i3d_features", lengths, 8)
    return root, sub


def _thumos_overrides(root: Path) -> list[str]:
    return [
        "dataset=thumos",
        f"dataset.root={root}",
        "dataset.feature_dim=8",
        "dataset.datamodule.max_seq_len=256",
        "dataset.datamodule.val_holdout=0.2",
        *TINY_NET,
    ]


def test_a_12_video_subset_of_real_thumos14_trains_and_tests(tmp_path, thumos_json):
    root, sub = _thumos_subset(tmp_path, thumos_json)
    ids = {a["label_id"] for v in sub.values() for a in v["annotations"]}
    assert len(ids) < 20  # the point: label_ids with gaps
    cfg = compose_cfg(tmp_path, _thumos_overrides(root), tiny=False)
    summary = run_pipeline(cfg)
    out = Path(cfg.paths.output_dir)
    report = json.loads((out / "data_report.json").read_text())
    assert report["class_index"] == {"source": "label_id", "classes": 20, "named": len(ids)}
    names = json.loads((out / "class_index.json").read_text())["names"]
    assert sum(n is not None for n in names) == len(ids) and len(names) == 20
    test_labels = {
        a["label"] for v in sub.values() if v["subset"] == "Test" for a in v["annotations"]
    }
    assert set(summary["per_class_ap"]) == test_labels
    # every detection in results.json carries a name of the file
    results = json.loads((out / "results.json").read_text())["results"]
    assert {r["label"] for items in results.values() for r in items} <= set(filter(None, names))
    command, _ = evaluate_files(
        str(root / "annotations" / "thumos14.json"), str(out / "results.json"), "Test",
        cfg.dataset.tiou_thresholds,
    )  # fmt: skip
    assert command["average_mAP"] == pytest.approx(summary["test/mAP"], abs=1e-9)


def test_a_truncated_test_file_stops_the_run_before_training(tmp_path, thumos_json):
    root, sub = _thumos_subset(tmp_path, thumos_json)
    victim = sorted(v for v in sub if sub[v]["subset"] == "Test")[2]
    path = root / "i3d_features" / f"{victim}.npy"
    path.write_bytes(path.read_bytes()[:-1000])  # an interrupted download
    cfg = compose_cfg(tmp_path, _thumos_overrides(root), tiny=False)
    with pytest.raises(ValueError, match="1 feature files cannot be used") as err:
        run_pipeline(cfg)
    msg = str(err.value)
    assert f"{path} (video {victim}, test): truncated" in msg
    out = Path(cfg.paths.output_dir)
    assert not (out / "checkpoints").exists()  # no training step ran
    problems = json.loads((out / "data_report.json").read_text())["problems"]
    assert [(p["video_id"], p["split"]) for p in problems] == [(victim, "test")]


def test_a_nan_late_in_a_training_video_is_found_before_training(tmp_path, thumos_json):
    root, sub = _thumos_subset(tmp_path, thumos_json)
    train = sorted(v for v in sub if sub[v]["subset"] == "Validation")
    longest = max(train, key=lambda v: clip_length(sub[v]["duration"], sub[v]["fps"]))
    path = root / "i3d_features" / f"{longest}.npy"
    x = np.load(path)
    assert len(x) > 900  # far beyond the first 256-step crop
    x[len(x) - 7, 3] = np.nan
    np.save(path, x)
    cfg = compose_cfg(tmp_path, _thumos_overrides(root), tiny=False)
    with pytest.raises(ValueError) as err:
        run_pipeline(cfg)
    step = len(x) - 7
    assert f"{path} (video {longest}, " in str(
        err.value
    ) and f"1 NaN and 0 Inf values, the first at step {step} (channel 3)" in str(err.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_bmn_csv_release_trains_with_its_dataset_config(tmp_path):
    root = tmp_path / "anet"
    root.mkdir()
    made = _anet_quirks(root)
    (root / "features").rename(root / "npy")  # BMN's layout: csv only
    db = json.loads((root / "activity_net.v1-3.min.json").read_text())["database"]
    have = [v for v in db if v not in made["no_features"]]
    write_features(root / "csv_mean_100", dict.fromkeys(have, 100), 12, prefix="v_", ext=".csv")
    overrides = ["dataset=anet_bmn_csv", *_anet_overrides(root)[1:]]
    overrides[overrides.index("dataset.feature_dim=16")] = "dataset.feature_dim=12"
    cfg = compose_cfg(tmp_path, overrides, tiny=False)
    summary = run_pipeline(cfg)
    report = json.loads((Path(cfg.paths.output_dir) / "data_report.json").read_text())
    assert report["splits"]["test"]["with_features"] == 9
    assert 0.0 <= summary["test/mAP"] <= 1.0


def test_actionformer_activitynet_release_trains_with_its_dataset_config(tmp_path):
    root = tmp_path / "anet_1.3"
    (root / "annotations").mkdir(parents=True)
    _anet_quirks(root)
    (root / "activity_net.v1-3.min.json").rename(root / "annotations" / "anet1.3_tsp_filtered.json")
    (root / "features").rename(root / "tsp_features")
    overrides = ["dataset=anet_actionformer", *_anet_overrides(root)[1:]]
    cfg = compose_cfg(tmp_path, overrides, tiny=False)
    summary = run_pipeline(cfg)
    assert cfg.dataset.datamodule.feature_dir.endswith("anet_1.3/tsp_features")
    assert 0.0 <= summary["test/mAP"] <= 1.0
