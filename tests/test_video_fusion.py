"""Video-level classifier fusion (models/video_fusion.py, `postprocess.video_scores`):
hand-worked cases of each mode, the scores file's layouts and checks, and runs whose
scores file gives every test video its true classes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from _runcfg import compose_cfg
from salad_lightning.data.detections import VideoDetections
from salad_lightning.models.video_fusion import (
    VideoFusion,
    fuse_video_scores,
    load_video_fusion,
    read_video_scores,
)
from salad_lightning.pipeline import run as run_pipeline
from salad_lightning.utils.instantiate import build

# Three detections of classes a, b, a (indices 0, 1, 0), scores 0.9, 0.5, 0.2; the
# external classifier says a 0.2, b 0.7, c 0.1.
SEGMENTS = [[0.0, 10.0], [5.0, 15.0], [20.0, 30.0]]
DETS = VideoDetections("v", SEGMENTS, [0.9, 0.5, 0.2], [0, 1, 0], best_score=0.95)
CLASS_SCORES = np.array([0.2, 0.7, 0.1])


def test_topk_gives_every_detection_the_videos_best_classes():
    out = fuse_video_scores(DETS, CLASS_SCORES, mode="topk", k=2)
    # top 2: b (0.7), a (0.2). Rows: under b 0.63, 0.35, 0.14; under a 0.18, 0.10, 0.04;
    # sorted by score
    assert out.scores == pytest.approx([0.63, 0.35, 0.18, 0.14, 0.10, 0.04])
    assert out.labels.tolist() == [1, 1, 0, 1, 0, 0]
    assert out.segments.tolist() == [SEGMENTS[i] for i in (0, 1, 0, 2, 1, 2)]
    assert out.video_id == "v" and out.best_score == 0.95  # SALAD's, before NMS


def test_topk_with_the_square_root_as_actionformer():
    out = fuse_video_scores(DETS, CLASS_SCORES, mode="topk", k=1, combine="sqrt")
    # b only: sqrt(0.9 * 0.7), sqrt(0.5 * 0.7), sqrt(0.2 * 0.7)
    assert out.scores == pytest.approx([0.7937254, 0.5916080, 0.3741657])
    assert out.labels.tolist() == [1, 1, 1]


def test_product_keeps_the_labels_and_reranks():
    out = fuse_video_scores(DETS, CLASS_SCORES, mode="product")
    # 0.9 * 0.2 (a) = 0.18, 0.5 * 0.7 (b) = 0.35, 0.2 * 0.2 (a) = 0.04
    assert out.scores == pytest.approx([0.35, 0.18, 0.04])
    assert out.labels.tolist() == [1, 0, 0]
    assert out.segments.tolist() == [SEGMENTS[1], SEGMENTS[0], SEGMENTS[2]]
    root = fuse_video_scores(DETS, CLASS_SCORES, mode="product", combine="sqrt")
    assert root.scores == pytest.approx(np.sqrt([0.35, 0.18, 0.04]))


def test_topk_ties_large_k_no_scores_and_no_detections():
    # equal class scores: the lower class index first; k above K takes every class
    out = fuse_video_scores(DETS, np.array([0.5, 0.5, 0.1]), mode="topk", k=5)
    assert len(out) == 9
    assert out.labels.tolist()[:3] == [0, 1, 0]  # 0.45 (a), 0.45 (b), 0.25 (a), ...
    assert out.scores[:3] == pytest.approx([0.45, 0.45, 0.25])
    assert fuse_video_scores(DETS, None) is DETS  # a video the file does not score
    empty = VideoDetections("e", np.zeros((0, 2)), [], [])
    assert len(fuse_video_scores(empty, CLASS_SCORES, k=2)) == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "top2"}, "unknown video_fusion 'top2'; allowed: topk, product"),
        ({"combine": "mean"}, "unknown video_combine 'mean'; allowed: multiply, sqrt"),
        ({"k": 0}, "video_topk must be a positive integer, found 0"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fuse_video_scores(DETS, CLASS_SCORES, **kwargs)


# ------------------------------------------------------------------ the scores file
NAMES = ["a", "b", "c"]


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_cuhk_layout_in_the_datasets_class_order(tmp_path):
    # the file's own class order (c, a, b) and ids with and without ActivityNet's v_
    doc = {
        "class": ["c", "a", "b"],
        "results": {"vid1": [0.1, 0.2, 0.7], "v_vid2": [0.5, 0.25, 0.25]},
        "version": "VERSION 1.3",
    }
    scores = read_video_scores(_write(tmp_path, doc), NAMES)
    assert scores.row("vid1").tolist() == [0.2, 0.7, 0.1]
    assert scores.row("v_vid1").tolist() == [0.2, 0.7, 0.1]
    assert scores.row("vid2").tolist() == [0.25, 0.25, 0.5]
    assert scores.row("vid3") is None
    assert scores.without_scores(["vid1", "vid2", "vid3", "v_vid9"]) == ["v_vid9", "vid3"]


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_plain_layout_scores_unlisted_classes_zero(tmp_path, caplog, wrapped):
    doc = {"vid1": {"a": 0.9}, "vid2": {"b": 0.4, "a": 0.1}}
    with caplog.at_level(logging.WARNING):
        scores = read_video_scores(_write(tmp_path, {"results": doc} if wrapped else doc), NAMES)
    assert scores.row("vid1").tolist() == [0.9, 0.0, 0.0]
    assert scores.row("vid2").tolist() == [0.1, 0.4, 0.0]
    assert "scores no video for 1 of the dataset's 3 classes (their score is 0): ['c']" in (
        caplog.text
    )


@pytest.mark.parametrize(
    "doc,message",
    [
        (
            {"class": ["a", "zebra", "b", "yak"], "results": {"v": [0.1, 0.2, 0.3, 0.4]}},
            r"2 class name\(s\) not in the dataset's class index: \['yak', 'zebra'\]",
        ),
        ({"v": {"a": 0.5, "okapi": 0.1}}, r"not in the dataset's class index: \['okapi'\]"),
        ({"class": NAMES, "results": {"v": [0.1, 0.2]}}, "video 'v' has 2 scores for the file's 3"),
        ({"results": {"v": [0.1, 0.2, 0.3]}}, "names no classes"),
        ({"v": {"a": -0.5}}, "video 'v', class 'a': scores must be finite and >= 0, found -0.5"),
        ({"v": {"a": "high"}}, "video 'v', class 'a': score 'high'"),
        ({"class": ["a", "a"], "results": {}}, "'class' must be a list of distinct class names"),
    ],
)
def test_a_bad_file_is_an_error_naming_what_is_wrong(tmp_path, doc, message):
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=message) as err:
        read_video_scores(path, NAMES)
    assert str(path) in str(err.value)


def test_the_node_turns_it_on_and_the_model_never_sees_its_keys(tmp_path):
    assert load_video_fusion({"video_scores": None}, NAMES) is None
    path = _write(tmp_path, {"v": {"b": 1.0}})
    node = {"video_scores": str(path), "video_fusion": "product", "video_topk": 3}
    fusion = load_video_fusion(node, NAMES)
    assert (fusion.mode, fusion.k, fusion.combine) == ("product", 3, "multiply")
    assert fusion(DETS).scores == pytest.approx([0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="needs the dataset's class names"):
        load_video_fusion(node, None)
    with pytest.raises(ValueError, match="unknown video_combine 'geo'"):
        load_video_fusion({**node, "video_combine": "geo"}, NAMES)
    with pytest.raises(FileNotFoundError, match="postprocess.video_scores: no such file"):
        load_video_fusion({"video_scores": str(tmp_path / "none.json")}, NAMES)
    cfg = compose_cfg(tmp_path, [f"postprocess.video_scores={path}"])
    model = build(cfg.model)  # built from the config alone: no fusion, no video_* keys
    assert model.video_fusion is None
    assert not any(k.startswith("video_") for k in model.postprocess_kwargs)
    described = fusion.describe(["v", "w"])
    assert described == {
        "mode": "product", "k": None, "combine": "multiply", "file": str(path),
        "videos": 2, "videos_without_scores": 1, "without_scores": ["w"],
    }  # fmt: skip
    assert isinstance(fusion, VideoFusion) and "product" in repr(fusion)


# ------------------------------------------------------------------ runs
DATA = [
    # testing on the training videos gives a tiny model a non-zero mAP within a few epochs
    "dataset.datamodule.test_subset=Validation",
]


def _wrong_label_share(run_dir: Path) -> float:
    """DETAD's share of wrong-label errors among each class's top-G predictions."""
    doc = json.loads((run_dir / "diagnosis" / "diagnosis.json").read_text())
    return doc["false_positive_profile"]["1G"]["wrong_label"]


@pytest.mark.slow
def test_true_classes_do_not_lower_the_map_and_cut_wrong_labels(tmp_path, caplog):
    train = compose_cfg(tmp_path / "train", ["trainer.max_epochs=8", *DATA])
    run_pipeline(train)
    ckpt = Path(train.paths.output_dir) / "checkpoints" / "last.ckpt"
    annotations = tmp_path / "train" / "cache" / "synthetic_tiny_seed0" / "annotations.json"
    database = json.loads(annotations.read_text())["database"]
    tested = [v for v, d in database.items() if d["subset"] == "Validation"]
    # every tested video's true classes score 1, the others 0 (by omission)
    truth = {v: {a["label"]: 1.0 for a in database[v]["annotations"]} for v in tested}
    most = max(len(c) for c in truth.values())  # topk takes all of them
    oracle = tmp_path / "oracle.json"
    oracle.write_text(json.dumps(truth))

    def test_with(name: str, overrides: list[str]) -> tuple[dict, Path]:
        cfg = compose_cfg(tmp_path / name, ["mode=test", f"ckpt_path={ckpt}", *DATA, *overrides])
        return run_pipeline(cfg), Path(cfg.paths.output_dir)

    own, own_dir = test_with("own", [])
    assert "video_fusion" not in own
    on = [f"postprocess.video_scores={oracle}"]
    for mode in ("product", "topk"):
        fused, fused_dir = test_with(
            mode, [*on, f"postprocess.video_fusion={mode}", f"postprocess.video_topk={most}"]
        )
        assert fused["test/mAP"] >= own["test/mAP"]
        assert _wrong_label_share(fused_dir) < _wrong_label_share(own_dir)
        assert fused["video_fusion"]["videos_without_scores"] == 0
        assert fused["video_fusion"]["videos"] == len(tested)

    # a video the file does not score keeps SALAD's detections, and is named and counted
    missing = sorted(tested)[0]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({v: c for v, c in truth.items() if v != missing}))
    caplog.set_level(logging.INFO)
    fused, fused_dir = test_with("partial", [f"postprocess.video_scores={partial}"])
    assert f"1 of the {len(tested)} test videos have no scores in {partial}" in caplog.text
    assert f"['{missing}']" in caplog.text
    entry = json.loads((fused_dir / "metrics.json").read_text())["video_fusion"]
    assert entry == {
        "mode": "topk", "k": 2, "combine": "multiply", "file": str(partial),
        "videos": len(tested), "videos_without_scores": 1, "without_scores": [missing],
    }  # fmt: skip
    ours, theirs = (
        json.loads((d / "results.json").read_text())["results"][missing]
        for d in (fused_dir, own_dir)
    )
    assert ours == theirs
    [table] = [
        r.getMessage() for r in caplog.records if "test mAP (%), video-level" in r.getMessage()
    ]
    assert "classifier fusion (topk, k=2, multiply) with partial.json: 1 of" in table
