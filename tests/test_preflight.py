"""The pre-flight check of feature files: each problem named, found wherever it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salad_lightning.data.features import FeatureSource
from salad_lightning.data.preflight import check_split, check_video


def _save(folder, name, x):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", x)
    return folder / f"{name}.npy"


def test_each_problem_is_named_with_file_video_and_split(tmp_path):
    feats = tmp_path / "f"
    rng = np.random.default_rng(0)
    for i in range(6):
        _save(feats, f"v{i}", rng.standard_normal((50, 4), dtype=np.float32))
    truncated = feats / "v1.npy"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    (feats / "v2.npy").write_bytes(b"not an npy file at all")
    x = rng.standard_normal((50, 4), dtype=np.float32)
    x[47, 2] = np.inf
    _save(feats, "v3", x)
    _save(feats, "v4", np.zeros((50, 5), np.float32))  # wrong dimension
    _save(feats, "v5", np.zeros((50, 4), np.int32))  # not floating point
    src = FeatureSource(feature_dir=str(feats), feature_dim=4)
    problems = check_split(src, [f"v{i}" for i in range(6)], split="test", workers=3)
    found = {p.video_id: p.problem for p in problems}
    assert sorted(found) == ["v1", "v2", "v3", "v4", "v5"]
    assert found["v1"].startswith("truncated: the header promises (50, 4) float32 (800 bytes")
    assert "but the file holds 760" in found["v1"]
    assert found["v2"].startswith("not a readable .npy file")
    assert found["v3"] == (
        "features must be finite, found 0 NaN and 1 Inf values, the first at step 47 (channel 2)"
    )
    assert found["v4"] == "expected feature_dim 4, found 5 channels (shape (50, 5))"
    assert found["v5"] == "expected floating-point features, found dtype int32"
    assert problems[0].message() == f"{truncated} (video v1, test): {found['v1']}"
    # threads or not, the same problems in video order
    assert check_split(src, [f"v{i}" for i in range(6)], split="test", workers=1) == problems


def test_headers_only_skips_the_value_scan(tmp_path):
    x = np.zeros((10, 3), np.float32)
    x[4, 0] = np.nan
    _save(tmp_path, "a", x)
    src = FeatureSource(feature_dir=str(tmp_path), feature_dim=3)
    assert check_video(src, "a", split="train", values=False) == []
    assert "1 NaN" in check_video(src, "a", split="train")[0].problem


@pytest.mark.parametrize("ext", [".csv", ".pt"])
def test_formats_loaded_whole_are_checked_too(tmp_path, ext):
    from conftest import write_features

    write_features(tmp_path, {"a": 20, "b": 20}, 3, ext=ext)
    if ext == ".csv":
        lines = (tmp_path / "b.csv").read_text().splitlines()
        lines[6] = ",".join(["nan"] * 3)  # row 5 of the data (row 0 is the header)
        (tmp_path / "b.csv").write_text("\n".join(lines))
    else:
        import torch

        x = torch.zeros(20, 3)
        x[5, 1] = float("nan")
        torch.save(x, tmp_path / "b.pt")
    src = FeatureSource(feature_dir=str(tmp_path), ext=ext, feature_dim=3)
    problems = check_split(src, ["a", "b"], split="train")
    assert [p.video_id for p in problems] == ["b"]
    assert "the first at step 5" in problems[0].problem


def test_the_pre_flight_names_every_unusable_file_of_a_split_at_once(make_folder):
    """A missing file, an unreadable header and a wrong dimension stop the split's
    construction one at a time; the pre-flight lists all three, then a plain setup
    still refuses the split."""
    from salad_lightning.data.datamodule import SaladDataModule

    videos = {
        f"v{i}": {
            "subset": "test",
            "duration": 10.0,
            "annotations": [{"segment": [1.0, 3.0], "label": "jump"}],
        }
        for i in range(5)
    }
    folder = make_folder(videos, dim=4, skip=["v1"])
    feats = folder.feature_dir
    tmp = Path(feats)
    (tmp / "v2.npy").write_bytes(b"not an npy file at all")
    np.save(tmp / "v3.npy", np.zeros((72, 5), np.float32))
    dm = SaladDataModule(
        annotation_file=folder.annotation_file,
        feature_dir=feats,
        feature_dim=4,
        train_subset=None,
        test_subset="test",
        default_fps=30.0,
        preflight="full",
    )
    report, problems = dm.preflight_report(["test"], log_summary=False)
    found = {p.video_id: p.problem for p in problems}
    assert sorted(found) == ["v1", "v2", "v3"]
    assert found["v1"].startswith("no feature file (to run without it: set")
    assert found["v2"].startswith("not a readable .npy file")
    assert found["v3"] == "expected feature_dim 4, found 5 channels (shape (72, 5))"
    assert all(p.split == "test" for p in problems)
    assert len(report["problems"]) == 3  # data_report.json lists them too
    with pytest.raises(FileNotFoundError, match="1 of 5 videos have no feature file"):
        dm.setup("test")
