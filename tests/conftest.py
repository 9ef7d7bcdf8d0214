"""Shared data fixtures: real-format annotation files with random features on disk."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "thumos14"


@dataclass
class FeatureFolder:
    """An annotation file and its feature folder, as a datamodule reads them."""

    annotation_file: str
    feature_dir: str
    feature_dim: int
    lengths: dict[str, int]  # video id -> number of feature steps written
    prefix: str = ""
    ext: str = ".npy"


def write_features(
    folder: Path,
    lengths: dict[str, int],
    dim: int,
    *,
    prefix: str = "",
    ext: str = ".npy",
    seed: int = 0,
) -> None:
    """One random (T, dim) float32 file per video, in the layout the data layer reads."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for vid, t in lengths.items():
        x = rng.standard_normal((t, dim), dtype=np.float32)
        path = folder / f"{prefix}{vid}{ext}"
        if ext == ".npy":
            np.save(path, x)
        elif ext == ".csv":  # BMN: a header row of column names, then one row per step
            header = ",".join(f"f{i}" for i in range(dim))
            np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.6f")
        elif ext == ".pt":
            import torch

            torch.save(torch.from_numpy(x), path)
        else:
            raise ValueError(ext)


def clip_length(duration: float, fps: float, stride: int = 4, window: int = 16) -> int:
    """Clips of ``window`` frames every ``stride`` frames in a video (ActionFormer's I3D)."""
    return max(1, (int(duration * fps) - window) // stride + 1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test that uses a module-scoped fixture (a trained run, a built wheel, generated
    videos) joins its module's ``xdist_group``: under ``make test`` (``-n 2 --dist
    loadgroup``) the fixture is made once, on one worker, instead of once per worker.
    First among the hooks: pytest-xdist reads the groups in its own, into the test ids."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d.scope == "module" for ds in defs for d in ds):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def thumos_json(tmp_path_factory) -> Path:
    """The real THUMOS14 annotation file (ActionFormer's), uncompressed."""
    path = tmp_path_factory.mktemp("thumos_ann") / "thumos14.json"
    path.write_bytes(gzip.decompress((DATA / "thumos14.json.gz").read_bytes()))
    return path


@pytest.fixture(scope="session")
def thumos_folder(tmp_path_factory, thumos_json) -> FeatureFolder:
    """All 412 THUMOS14 videos with random 8-d clip features of the real lengths."""
    db = json.loads(thumos_json.read_text())["database"]
    lengths = {vid: clip_length(v["duration"], v["fps"]) for vid, v in db.items()}
    feats = tmp_path_factory.mktemp("thumos_feats")
    write_features(feats, lengths, 8)
    return FeatureFolder(str(thumos_json), str(feats), 8, lengths)


# A few leaf classes of ActivityNet 1.3's taxonomy, with their real parents.
_ANET_TAXONOMY = [
    {"nodeId": 1, "nodeName": "Root", "parentId": None, "parentName": None},
    {
        "nodeId": 2,
        "nodeName": "Sports, Exercise, and Recreation",
        "parentId": 1,
        "parentName": "Root",
    },
    {"nodeId": 3, "nodeName": "Household Activities", "parentId": 1, "parentName": "Root"},
    {
        "nodeId": 10,
        "nodeName": "Long jump",
        "parentId": 2,
        "parentName": "Sports, Exercise, and Recreation",
    },
    {
        "nodeId": 11,
        "nodeName": "Playing squash",
        "parentId": 2,
        "parentName": "Sports, Exercise, and Recreation",
    },
    {
        "nodeId": 12,
        "nodeName": "Vacuuming floor",
        "parentId": 3,
        "parentName": "Household Activities",
    },
    {
        "nodeId": 13,
        "nodeName": "Ironing clothes",
        "parentId": 3,
        "parentName": "Household Activities",
    },
]


def _anet_database(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = [t["nodeName"] for t in _ANET_TAXONOMY[3:]]
    subsets = ["training", "validation", "testing"]
    db = {}
    for i in range(n):
        vid = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-"), 11))
        duration = float(np.round(rng.uniform(20, 200), 2))
        subset = subsets[i % 3]
        anns = []
        if subset != "testing":  # the official file has no labels for `testing`
            for _ in range(int(rng.integers(1, 4))):
                s = float(np.round(rng.uniform(0, duration * 0.8), 2))
                e = float(np.round(min(duration, s + rng.uniform(1, duration * 0.5)), 2))
                anns.append({"segment": [s, e], "label": str(rng.choice(labels))})
        db[vid] = {
            "duration": duration,
            "subset": subset,
            "resolution": "1280x720",
            "url": f"https://www.youtube.com/watch?v={vid}",
            "annotations": anns,
        }
    return db


@pytest.fixture
def anet_folder(tmp_path) -> FeatureFolder:
    """The official ActivityNet 1.3 schema; ``v_``-prefixed .npy of varying length."""
    db = _anet_database(18, seed=1)
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(
        json.dumps({"version": "VERSION 1.3", "taxonomy": _ANET_TAXONOMY, "database": db})
    )
    rng = np.random.default_rng(2)
    lengths = {vid: int(rng.integers(30, 300)) for vid in db}
    write_features(tmp_path / "features", lengths, 16, prefix="v_")
    return FeatureFolder(str(ann), str(tmp_path / "features"), 16, lengths, prefix="v_")


@pytest.fixture
def bmn_csv_folder(tmp_path) -> FeatureFolder:
    """BMN's layout: one .csv per video (header row, 100 rows = already rescaled steps)."""
    db = _anet_database(9, seed=3)
    ann = tmp_path / "anet_anno_action.json"
    ann.write_text(json.dumps({"database": db}))
    lengths = dict.fromkeys(db, 100)
    write_features(tmp_path / "csv_mean_100", lengths, 12, prefix="v_", ext=".csv")
    return FeatureFolder(
        str(ann), str(tmp_path / "csv_mean_100"), 12, lengths, prefix="v_", ext=".csv"
    )


@pytest.fixture
def make_folder(tmp_path) -> Callable[..., FeatureFolder]:
    """Build a small custom dataset: ``make_folder(videos, dim=4, lengths=None)``.

    ``videos``: {video_id: {"subset", "duration", "fps"?, "annotations"}} (the JSON's
    database). ``lengths`` default to clip features at the video's fps (30 if absent).
    """

    def make(
        videos: dict,
        *,
        dim: int = 4,
        lengths: dict[str, int] | None = None,
        ext: str = ".npy",
        skip: Sequence[str] = (),
    ) -> FeatureFolder:
        ann = tmp_path / "annotations.json"
        ann.write_text(json.dumps({"database": videos}))
        if lengths is None:
            lengths = {k: clip_length(v["duration"], v.get("fps", 30)) for k, v in videos.items()}
        write_features(
            tmp_path / "features",
            {k: t for k, t in lengths.items() if k not in skip},
            dim,
            ext=ext,
        )
        return FeatureFolder(str(ann), str(tmp_path / "features"), dim, lengths, ext=ext)

    return make
