"""The THUMOS14-shaped benchmark: real timing, synthetic features, ActionFormer's layout."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from salad_lightning.data import thumos_like
from salad_lightning.data.synthetic import FeatureModel, class_patterns
from salad_lightning.data.thumos_like import make_thumos_like, select_videos


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory, thumos_json) -> Path:
    """5% of each subset, 16-d features."""
    out = tmp_path_factory.mktemp("tl") / "thumos_like"
    return make_thumos_like(thumos_json, out, fraction=0.05, seed=0, feature_dim=16)


def test_layout_shapes_and_annotations(small, thumos_json):
    real = json.loads(thumos_json.read_text())
    doc = json.loads((small / "annotations" / "thumos14.json").read_text())
    db = doc["database"]
    assert doc["version"] == real["version"] == "Thumos14-30fps"
    # ceil(5% of 200) = 10 Validation and ceil(5% of 212) = 11 Test, plus the videos
    # that bring the classes those miss
    subsets = [v["subset"] for v in db.values()]
    assert subsets.count("Validation") == 22 and subsets.count("Test") == 20
    files = sorted(p.stem for p in (small / "i3d_features").glob("*.npy"))
    assert files == sorted(db)
    for vid, video in db.items():
        assert video == real["database"][vid]  # kept entries are copied unchanged
        x = np.load(small / "i3d_features" / f"{vid}.npy")
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 16
        frames = int(video["duration"] * video["fps"] + 1e-6)
        assert x.shape[0] == (frames - 16) // 4 + 1  # ActionFormer's clip count
        assert abs(x.shape[0] - video["duration"] * video["fps"] / 4) <= 4


def test_deterministic_and_seed_dependent(small, thumos_json, tmp_path):
    again = make_thumos_like(thumos_json, tmp_path / "a", fraction=0.05, seed=0, feature_dim=16)
    assert digest(again) == digest(small)
    other = make_thumos_like(thumos_json, tmp_path / "b", fraction=0.05, seed=1, feature_dim=16)
    d_small, d_other = digest(small), digest(other)
    assert d_other["annotations/thumos14.json"] == d_small["annotations/thumos14.json"]
    vid = next(k for k in d_small if k.startswith("i3d_features/"))
    assert d_other[vid] != d_small[vid]


def test_fraction_is_per_subset_deterministic_nested_and_keeps_every_class(thumos_json):
    db = json.loads(thumos_json.read_text())["database"]
    tenth = select_videos(db, 0.1)
    assert tenth == select_videos(db, 0.1)
    for subset, n in (("Validation", 200), ("Test", 212)):
        ranked = sorted(
            (v for v in db if db[v]["subset"] == subset),
            key=lambda v: hashlib.sha1(v.encode()).hexdigest(),
        )
        kept = [v for v in tenth if db[v]["subset"] == subset]
        assert set(ranked[: math.ceil(0.1 * n)]) <= set(kept)  # 20 and 22
        assert len(kept) == 28  # measured: 8 and 6 more bring the missing classes
        labels = {a["label"] for v in kept for a in db[v]["annotations"]}
        assert len(labels) == 20
    assert set(select_videos(db, 0.05)) < set(tenth) < set(select_videos(db, 0.25))
    assert select_videos(db, 1.0) == list(db)
    tiny = select_videos(db, 1e-6)  # one video per subset plus the class coverage
    assert {a["label"] for v in tiny for a in db[v]["annotations"]} == {
        a["label"] for v in db.values() for a in v["annotations"]
    }
    with pytest.raises(ValueError, match="fraction must be in"):
        select_videos(db, 0.0)


def test_features_follow_the_real_segments(thumos_json, tmp_path):
    """Noise-free model: zero away from every action, the class pattern in the middle;
    a CliffDiving segment (always also labelled Diving) carries both directions."""
    model = FeatureModel(noise=0.0, drift=0.0, decoy_rate=0.0, amplitude_jitter=0.0)
    real = json.loads(thumos_json.read_text())
    keep = ["video_test_0000131", "video_test_0000004"] + list(real["database"])[-3:]
    ann = tmp_path / "thumos14_part.json"
    ann.write_text(json.dumps({**real, "database": {v: real["database"][v] for v in keep}}))
    out = make_thumos_like(ann, tmp_path / "clean", seed=0, feature_dim=64, model=model)
    db = json.loads((out / "annotations" / "thumos14.json").read_text())["database"]
    patterns = class_patterns(20, 64, seed=0)
    checked_colabel = 0
    for vid, video in db.items():
        x = np.load(out / "i3d_features" / f"{vid}.npy")
        centre = (np.arange(len(x)) * 4 + 8) / video["fps"]
        near = np.zeros(len(x), dtype=bool)
        for a in video["annotations"]:
            s, e = a["segment"]
            near |= (centre > s - 0.6) & (centre < e + 0.6)  # a clip spans 16 frames
        assert np.all(x[~near] == 0.0), vid
        labels_by_segment: dict[tuple, set] = {}
        for a in video["annotations"]:
            labels_by_segment.setdefault(tuple(a["segment"]), set()).add(a["label_id"])
        for (s, e), labels in labels_by_segment.items():
            i = int(np.argmin(np.abs(centre - (s + e) / 2)))
            if e - s < 2.0 or any(
                b["segment"] != [s, e] and b["segment"][0] < e and b["segment"][1] > s
                for b in video["annotations"]
            ):
                continue  # short or overlapped by another segment: skip
            proj = patterns[sorted(labels), 1] @ x[i]
            assert np.all(proj > 0.3), (vid, s, e, proj)
            if len(labels) == 2:
                np.testing.assert_allclose(proj[0], proj[1], rtol=1e-4)
                checked_colabel += 1
    assert checked_colabel > 0


def test_float16_and_cli(thumos_json, tmp_path, capsys):
    thumos_like.main(
        [
            "--annotations",
            str(thumos_json),
            "--out",
            str(tmp_path / "cli"),
            "--fraction",
            "0.01",
            "--feature-dim",
            "8",
            "--dtype",
            "float16",
        ]
    )
    out = capsys.readouterr().out
    assert "36 videos" in out  # 18 per subset cover the 20 classes
    files = list((tmp_path / "cli" / "i3d_features").glob("*.npy"))
    assert len(files) == 36
    assert all(np.load(f).dtype == np.float16 for f in files)
    with pytest.raises(ValueError, match="dtype"):
        make_thumos_like(thumos_json, tmp_path / "x", fraction=0.01, dtype="int8")


def test_test_fraction_keeps_its_own_share_of_test(thumos_json, tmp_path):
    db = json.loads(thumos_json.read_text())["database"]
    quarter = select_videos(db, 0.25)
    both = select_videos(db, 0.25, subset_fractions={"Test": 1.0})
    # Validation as with the fraction alone; every one of the 212 Test videos
    assert [v for v in both if db[v]["subset"] == "Validation"] == [
        v for v in quarter if db[v]["subset"] == "Validation"
    ]
    assert sum(db[v]["subset"] == "Test" for v in both) == 212
    half = select_videos(db, 0.25, subset_fractions={"Test": 0.5})
    assert sum(db[v]["subset"] == "Test" for v in half) == 106  # ceil(0.5 * 212), all classes
    with pytest.raises(ValueError, match="fraction of subset 'Test' must be in"):
        select_videos(db, 0.25, subset_fractions={"Test": 1.5})
    # through the generator: the share is a parameter of the folder
    out = make_thumos_like(
        thumos_json, tmp_path / "t", fraction=0.01, test_fraction=0.05, feature_dim=8
    )
    kept = json.loads((out / "annotations" / "thumos14.json").read_text())["database"]
    assert sum(v["subset"] == "Validation" for v in kept.values()) == 18
    assert sum(v["subset"] == "Test" for v in kept.values()) == 20  # as in the 5% fixture
    assert json.loads((out / "params.json").read_text())["test_fraction"] == 0.05
