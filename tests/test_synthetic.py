"""The synthetic dataset: format, determinism, caching, statistics, need for context."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from salad_lightning.data import statistics, synthetic
from salad_lightning.data.statistics import dataset_statistics
from salad_lightning.data.synthetic import (
    FeatureModel,
    SyntheticConfig,
    class_patterns,
    ensure_synthetic_dataset,
    num_clips,
    synthesize_features,
)

SMALL = dict(num_train_videos=6, num_test_videos=3, feature_dim=16, max_duration=120.0)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("syn") / "default")


def test_layout_matches_the_real_format(tmp_path):
    root = ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    doc = json.loads((root / "annotations.json").read_text())
    db = doc["database"]
    assert len(db) == 9
    assert sorted({v["subset"] for v in db.values()}) == ["Test", "Validation"]
    for vid, video in db.items():
        feats = np.load(root / "features" / f"{vid}.npy")
        assert feats.dtype == np.float32 and feats.shape[1] == 16
        frames = int(video["duration"] * video["fps"] + 1e-6)
        assert feats.shape[0] == frames // 16  # window == stride == 16 by default
        for a in video["annotations"]:
            s, e = a["segment"]
            assert 0 <= s < e <= video["duration"]
            assert a["label"] == f"class_{a['label_id']:02d}"
    assert (root / "params.json").exists() and (root / ".complete").exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = tree_digest(ensure_synthetic_dataset(tmp_path / "a", seed=3, **SMALL))
    b = tree_digest(ensure_synthetic_dataset(tmp_path / "b", seed=3, **SMALL))
    c = tree_digest(ensure_synthetic_dataset(tmp_path / "c", seed=4, **SMALL))
    assert len(a) == 9 + 3  # features, annotations, params, marker
    assert a == b
    assert a["annotations.json"] != c["annotations.json"]


def test_hydra_style_values_give_the_same_bytes(tmp_path):
    """Hydra passes 120 for 120.0 and lists for tuples: same dataset, no regeneration."""
    a = tree_digest(ensure_synthetic_dataset(tmp_path / "a", **SMALL))
    hydra_like = {**SMALL, "max_duration": 120, "colabel_pair": [4, 7], "fps": 30}
    b = tree_digest(ensure_synthetic_dataset(tmp_path / "b", **hydra_like))
    assert a == b


def test_unchanged_parameters_do_not_regenerate(tmp_path, monkeypatch):
    root = ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    marker = (root / ".complete").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the parameters did not change")

    monkeypatch.setattr(synthetic, "_write_dataset", fail)
    assert ensure_synthetic_dataset(tmp_path / "ds", **SMALL) == root
    assert (root / ".complete").stat().st_mtime_ns == marker


def test_changed_parameter_regenerates(tmp_path):
    root = ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    before = tree_digest(root)
    ensure_synthetic_dataset(tmp_path / "ds", **{**SMALL, "feature_dim": 8})
    after = tree_digest(root)
    assert json.loads((root / "params.json").read_text())["feature_dim"] == 8
    vid = next(iter(json.loads((root / "annotations.json").read_text())["database"]))
    assert np.load(root / "features" / f"{vid}.npy").shape[1] == 8
    assert before["params.json"] != after["params.json"]
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # no temp folders left


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.synthesize_features

    def crash_after_three(**kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(**kwargs)

    monkeypatch.setattr(synthetic, "synthesize_features", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temp folder
    monkeypatch.setattr(synthetic, "synthesize_features", real)
    root = ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    assert len(list((root / "features").glob("*.npy"))) == 9


def test_a_killed_generation_leaves_no_folder_behind(tmp_path):
    """SIGKILL skips every cleanup: the next generation removes the dead build's folder."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from salad_lightning.data import synthetic\n"
        "real = synthetic.synthesize_features\n"
        "def die(**kw):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "synthetic.synthesize_features = die\n"
        f"synthetic.ensure_synthetic_dataset({str(tmp_path / 'ds')!r}, num_train_videos=2)\n"
    )
    # the same build on another node of a shared file system: its process is not this
    # host's to find, so its folder is left alone
    other = tmp_path / "other"
    other.mkdir()
    on_node = "import socket\nsocket.gethostname = lambda: 'node-a.example'\n"
    on_node += code.replace(repr(str(tmp_path / "ds")), repr(str(other / "ds")))
    for script in (code, on_node):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
        assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir() if p != other]
    assert len(left) == 1 and left[0].startswith(".ds.tmp-")  # what a kill leaves
    root = ensure_synthetic_dataset(tmp_path / "ds", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "other"]
    ensure_synthetic_dataset(other / "ds", **SMALL)
    [foreign] = [p.name for p in other.iterdir() if p.name != "ds"]
    assert foreign.startswith(".ds.tmp-node-a.example-")
    # the folder has the permissions a plain mkdir gives under this umask
    umask = os.umask(0)
    os.umask(umask)
    assert (root.stat().st_mode & 0o777) == 0o777 & ~umask


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a generated dataset"):
        ensure_synthetic_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(TypeError, match="num_videos"):
        ensure_synthetic_dataset(tmp_path / "ds", num_videos=3)
    with pytest.raises(ValueError, match="num_train_videos must be an integer"):
        ensure_synthetic_dataset(tmp_path / "ds", num_train_videos=2.5)


def test_signal_sits_where_the_annotations_say():
    """Noise-free features: zero outside actions, the class's pattern inside.

    Clip i covers frames [16 i, 16 i + 16) at 30 fps, centre (16 i + 8) / 30 s.
    """
    patterns = class_patterns(20, 64, seed=0)
    model = FeatureModel(noise=0.0, drift=0.0, decoy_rate=0.0, amplitude_jitter=0.0)
    segments = np.array([[10.0, 16.0], [30.0, 31.5]])
    x = synthesize_features(
        segments=segments,
        labels=[(3,), (4, 7)],
        duration=60.0,
        fps=30.0,
        stride=16,
        window=16,
        patterns=patterns,
        model=model,
        rng=np.random.default_rng(0),
    )
    assert x.shape == (num_clips(60.0, 30.0, 16, 16), 64) == (112, 64)
    centre = (np.arange(112) * 16 + 8) / 30.0
    inside = np.zeros(112, dtype=bool)
    for s, e in segments:
        inside |= (centre > s) & (centre < e)
    assert np.all(x[~inside] == 0.0)
    assert np.all(np.linalg.norm(x[inside], axis=1) > 0.0)
    # middle of the first action (13 s): phase pi/2, the pattern is v_3 at full strength
    mid = int(np.argmin(np.abs(centre - 13.0)))
    assert centre[mid] == pytest.approx(13.0667, abs=1e-3)
    np.testing.assert_allclose(x[mid] @ patterns[3, 1], 1.0, atol=0.05)
    assert abs(x[mid] @ patterns[3, 0]) < 0.1
    # ramps: the first step inside is weaker than the middle
    first = int(np.argmax(inside))
    assert np.linalg.norm(x[first]) < 0.5 * np.linalg.norm(x[mid])
    # co-labelled segment: one blended pattern, equal on both classes' directions
    mid2 = int(np.argmin(np.abs(centre - 30.75)))
    np.testing.assert_allclose(x[mid2] @ patterns[4, 1], x[mid2] @ patterns[7, 1], rtol=1e-5)


def test_statistics_follow_thumos14(default_root):
    """Ranges around THUMOS14's values (tests/data: 15.4 instances per video, median 8;
    instances mean 4.3 s, median 3.0 s; coverage 0.29; 17% overlapping another label)."""
    s = dataset_statistics(default_root / "annotations.json")
    assert s["videos"] == 90 and s["subsets"] == {"Validation": 60, "Test": 30}
    assert s["classes"] == 20
    assert 10 <= s["instances_per_video"]["mean"] <= 20
    assert 4 <= s["instances_per_video"]["median"] <= 12
    assert s["instances_per_video"]["max"] >= 40  # heavy tail
    assert 1.5 <= s["instance_seconds"]["median"] <= 5.0
    assert 3.0 <= s["instance_seconds"]["mean"] <= 6.0
    assert s["instance_seconds"]["max"] >= 15.0  # long tail
    assert 0.2 <= s["coverage_mean"] <= 0.4
    assert 0.03 <= s["overlap_share"] <= 0.4
    assert s["colabel_share"] > 0.01


def test_statistics_of_the_real_thumos14_file(thumos_json):
    s = dataset_statistics(thumos_json)
    assert s["videos"] == 412 and s["subsets"] == {"Test": 212, "Validation": 200}
    assert s["instances"] == 6365 and s["classes"] == 20
    assert s["instances_per_video"]["median"] == 8.0 and s["instances_per_video"]["max"] == 218
    assert s["instance_seconds"]["median"] == pytest.approx(3.0)
    assert s["coverage_mean"] == pytest.approx(0.292, abs=0.001)
    assert dataset_statistics(thumos_json, subset="test")["videos"] == 212


def _step_data(root: Path, subset: str, k: int):
    """Features averaged over +-k steps (edge-padded), and each step's class (0 = none)."""
    db = json.loads((root / "annotations.json").read_text())["database"]
    xs, ys = [], []
    for vid, video in db.items():
        if video["subset"] != subset:
            continue
        f = np.load(root / "features" / f"{vid}.npy").astype(np.float64)
        centre = (np.arange(len(f)) * 16 + 8) / video["fps"]
        y = np.zeros(len(f), dtype=int)
        for a in video["annotations"]:
            s, e = a["segment"]
            y[(centre >= s) & (centre < e) & (y == 0)] = a["label_id"] + 1
        c = np.cumsum(np.pad(f, ((k + 1, k), (0, 0)), mode="edge"), axis=0)
        xs.append((c[2 * k + 1 :] - c[: -2 * k - 1]) / (2 * k + 1))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _class_accuracy(root: Path, k: int) -> float:
    """Least squares on one-hot classes, trained and tested on action steps only."""
    x, y = _step_data(root, "Validation", k)
    xt, yt = _step_data(root, "Test", k)
    a, at = y > 0, yt > 0
    w = np.linalg.lstsq(np.c_[x[a], np.ones(a.sum())], np.eye(21)[y[a]], rcond=None)[0]
    pred = (np.c_[xt[at], np.ones(at.sum())] @ w).argmax(1)
    return float((pred == yt[at]).mean())


def test_the_task_needs_temporal_context(default_root):
    """A linear classifier on single steps is much worse than on +-2-step averages.

    Measured on the default dataset (seed 0): 0.165 on single steps, 0.438 with +-2
    (chance 0.05). Seeds 1-3 gave 0.201 / 0.185 / 0.189 and 0.368 / 0.414 / 0.430.
    """
    single, window = _class_accuracy(default_root, 0), _class_accuracy(default_root, 2)
    assert 0.08 <= single <= 0.25
    assert window >= 0.32
    assert window >= single + 0.15


def test_cli_prints_statistics(tmp_path, capsys, thumos_json):
    synthetic.main(["--root", str(tmp_path / "ds"), "--stats", "--seed", "1"])
    out = capsys.readouterr().out
    assert "instances_per_video" in out and "coverage_mean" in out
    assert json.loads((tmp_path / "ds" / "params.json").read_text())["seed"] == 1
    statistics.main([str(thumos_json)])
    assert "videos               412" in capsys.readouterr().out


def test_config_defaults_are_the_documented_sizes():
    cfg = SyntheticConfig()
    assert (cfg.num_train_videos, cfg.num_test_videos, cfg.feature_dim) == (60, 30, 64)
    assert (cfg.fps, cfg.stride, cfg.window, cfg.num_classes) == (30.0, 16, 16, 20)
