"""Annotation files: the real THUMOS14 file, ActivityNet 1.3 schema, class index, checks."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from salad_lightning.data.annotations import ClassIndex, load_annotations

THUMOS_CLASSES = (
    "BaseballPitch BasketballDunk Billiards CleanAndJerk CliffDiving CricketBowling "
    "CricketShot Diving FrisbeeCatch GolfSwing HammerThrow HighJump JavelinThrow LongJump "
    "PoleVault Shotput SoccerPenalty TennisSwing ThrowDiscus VolleyballSpiking"
).split()


def _write(tmp_path, database, **top):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"database": database, **top}))
    return path


def _video(subset="train", duration=100.0, anns=(), **extra):
    return {"subset": subset, "duration": duration, "annotations": list(anns), **extra}


def test_real_thumos14_file(thumos_json):
    ann = load_annotations(thumos_json)
    assert ann.version == "Thumos14-30fps"
    assert ann.subsets() == {"Test": 212, "Validation": 200}
    # label_id 0-19 in alphabetical order (data/thumos14/README.md)
    assert list(ann.class_index.names) == THUMOS_CLASSES and ann.class_source == "label_id"
    # 26 test segments and 4 validation segments start after their video's end: left
    # out of the training targets, kept as published for the evaluator
    assert (ann.num_clipped, ann.num_dropped) == (0, 30)
    assert {r.reason for r in ann.repairs} == {"outside the video"}
    by_video = {}
    for r in ann.repairs:
        by_video[r.video_id] = by_video.get(r.video_id, 0) + 1
    assert by_video["video_test_0000270"] == 22
    assert sum(v.num_segments for v in ann.select("Validation")) == 3007 - 4
    assert sum(v.num_segments for v in ann.select("Test")) == 3358 - 26
    assert sum(len(v.raw_labels) for v in ann.select("Validation")) == 3007
    assert sum(len(v.raw_labels) for v in ann.select("Test")) == 3358
    v = ann.videos["video_test_0000004"]
    assert (v.subset, v.duration, v.fps) == ("Test", 33.83, 30.0)
    np.testing.assert_allclose(v.segments[:2], [[0.2, 1.1], [11.4, 12.2]])
    assert v.labels[0] == THUMOS_CLASSES.index("CricketBowling")
    assert {ann.videos[k].fps for k in ann.videos} == {30.0, 29.97, 25.0, 24.0}


def test_subsets_are_case_insensitive(thumos_json):
    ann = load_annotations(thumos_json)
    assert len(ann.select("validation")) == 200
    assert len(ann.select("TEST")) == 212
    assert len(ann.select(["Validation", "test"])) == 412


def test_missing_subset_names_the_existing_ones(thumos_json):
    ann = load_annotations(thumos_json)
    with pytest.raises(ValueError, match="thumos14.json: subset 'training' has no videos") as e:
        ann.select("training")
    assert "subsets present: Test (212 videos), Validation (200 videos)" in str(e.value)


def test_a_subset_of_the_thumos_file_keeps_its_label_ids(tmp_path, thumos_json):
    # 12 videos keep ActionFormer's label_ids: the index keeps them as given (gaps
    # allowed), unnamed up to dataset.num_classes
    db = json.loads(thumos_json.read_text())["database"]
    keep = sorted(db)[:12]
    path = _write(tmp_path, {k: db[k] for k in keep})
    ann = load_annotations(path, num_classes=20)
    ids = sorted({a["label_id"] for k in keep for a in db[k]["annotations"]})
    assert len(ids) < 20 and len(ann.class_index) == 20
    for i in range(20):
        assert (ann.class_index.names[i] is None) == (i not in ids)
        if i in ids:
            assert ann.class_index.names[i] == THUMOS_CLASSES[i]
    v = ann.videos[keep[0]]
    assert v.labels.tolist() == [a["label_id"] for a in db[keep[0]]["annotations"]]


def test_activitynet13_schema_classes_are_the_taxonomy_leaves(anet_folder):
    ann = load_annotations(anet_folder.annotation_file)
    assert ann.version == "VERSION 1.3"
    assert set(ann.subsets()) == {"training", "validation", "testing"}
    # the taxonomy's leaves, sorted; its parent nodes (Root, the two categories) are not
    # classes, even though no annotation uses them either
    assert ann.class_index.names == (
        "Ironing clothes",
        "Long jump",
        "Playing squash",
        "Vacuuming floor",
    )
    assert ann.class_source == "taxonomy"
    assert all(v.fps is None for v in ann.videos.values())
    assert all(v.num_segments == 0 for v in ann.select("testing"))
    # a subset of the file with dataset.num_classes = 6: the 4 leaves, then 2 unnamed
    assert load_annotations(anet_folder.annotation_file, num_classes=6).class_index.names[4:] == (
        None,
        None,
    )
    with pytest.raises(
        ValueError, match=r"4 classes \(from its taxonomy\) but dataset.num_classes is 3"
    ):
        load_annotations(anet_folder.annotation_file, num_classes=3)


def test_label_not_in_the_taxonomy_names_label_video_and_file(tmp_path):
    taxonomy = [
        {"nodeId": 1, "nodeName": "Root", "parentName": None},
        {"nodeId": 2, "nodeName": "Sports", "parentName": "Root"},
        {"nodeId": 3, "nodeName": "Long jump", "parentName": "Sports"},
    ]
    anns = [{"label": "Sports", "segment": [1, 2]}]  # a parent node is not a class
    path = _write(tmp_path, {"vx": _video(anns=anns)}, taxonomy=taxonomy)
    with pytest.raises(
        ValueError,
        match=r"ann.json: video vx: annotation 0: label 'Sports' is not in the class index",
    ):
        load_annotations(path)


def test_sorted_names_when_some_label_id_is_missing(tmp_path):
    path = _write(
        tmp_path,
        {
            "a": _video(anns=[{"label": "Zebra", "segment": [1, 2], "label_id": 0}]),
            "b": _video(anns=[{"label": "Ant", "segment": [1, 2]}]),
        },
    )
    ann = load_annotations(path)
    assert ann.class_index.names == ("Ant", "Zebra")
    assert ann.videos["a"].labels.tolist() == [1]


def test_label_id_order_is_kept(tmp_path):
    path = _write(
        tmp_path,
        {
            "a": _video(anns=[{"label": "Zebra", "segment": [1, 2], "label_id": 0}]),
            "b": _video(anns=[{"label": "Ant", "segment": [1, 2], "label_id": 1}]),
        },
    )
    assert load_annotations(path).class_index.names == ("Zebra", "Ant")


def test_inconsistent_label_id(tmp_path):
    path = _write(
        tmp_path,
        {
            "a": _video(anns=[{"label": "Run", "segment": [1, 2], "label_id": 0}]),
            "b": _video(anns=[{"label": "Jump", "segment": [1, 2], "label_id": 0}]),
        },
    )
    with pytest.raises(ValueError, match="video b: label_id 0 is 'Jump' here but 'Run' elsewhere"):
        load_annotations(path)


def test_label_ids_may_have_gaps_but_stay_under_num_classes(tmp_path):
    path = _write(
        tmp_path,
        {"a": _video(anns=[{"label": "Run", "segment": [1, 2], "label_id": 7}])},
    )
    assert load_annotations(path).class_index.names == (None,) * 7 + ("Run",)
    assert load_annotations(path, num_classes=9).class_index.names[7:] == ("Run", None)
    with pytest.raises(
        ValueError,
        match=r"ann.json: video a: label 'Run' has label_id 7, outside 0..4 \(dataset.num_classes=5\)",
    ):
        load_annotations(path, num_classes=5)


def test_segments_training_cannot_take_are_dropped_or_clipped_and_listed(tmp_path):
    path = _write(
        tmp_path,
        {
            "v1": _video(
                duration=10.0,
                anns=[
                    {"label": "Run", "segment": [2, 4]},  # fine
                    {"label": "Run", "segment": [8, 12]},  # clipped to [8, 10]
                    {"label": "Run", "segment": [-1, 3]},  # clipped to [0, 3]
                    {"label": "Run", "segment": [11, 12]},  # dropped: outside
                    {"label": "Run", "segment": [5.5, 5.5]},  # dropped: zero length
                    {"label": "Run", "segment": [7, 6]},  # dropped: ends before it starts
                ],
            ),
            "v2": _video(duration=5.0, anns=[{"label": "Run", "segment": [-1, 6]}]),
        },
    )
    ann = load_annotations(path)
    assert (ann.num_clipped, ann.num_dropped) == (3, 3)
    assert [(r.video_id, r.annotation, r.action, r.reason) for r in ann.repairs] == [
        ("v1", 1, "clipped", "ends after the video's end"),
        ("v1", 2, "clipped", "starts before 0"),
        ("v1", 3, "dropped", "outside the video"),
        ("v1", 4, "dropped", "zero length"),
        ("v1", 5, "dropped", "ends before it starts"),
        ("v2", 0, "clipped", "starts before 0 and ends after the video's end"),
    ]
    assert ann.repairs[0].as_dict()["segment"] == [8.0, 12.0]
    np.testing.assert_array_equal(ann.videos["v1"].segments, [[2, 4], [8, 10], [0, 3]])
    np.testing.assert_array_equal(ann.videos["v2"].segments, [[0, 5]])
    # the evaluator's view: every annotation as written, in file order
    np.testing.assert_array_equal(
        ann.videos["v1"].raw_segments, [[2, 4], [8, 12], [-1, 3], [11, 12], [5.5, 5.5], [7, 6]]
    )
    assert len(ann.videos["v1"].raw_labels) == 6


def test_label_missing_from_given_class_index(tmp_path):
    path = _write(tmp_path, {"clip7": _video(anns=[{"label": "Swim", "segment": [1, 2]}])})
    with pytest.raises(
        ValueError,
        match=r"video clip7: annotation 0: label 'Swim' is not in the class index \(2 named classes: Jump, Run\)",
    ):
        load_annotations(path, class_index=ClassIndex(("Run", "Jump")))


def test_given_class_index_defines_the_ids(tmp_path):
    path = _write(
        tmp_path, {"a": _video(anns=[{"label": "Run", "segment": [1, 2], "label_id": 0}])}
    )
    ann = load_annotations(path, class_index=ClassIndex(("Jump", "Run")))
    assert ann.videos["a"].labels.tolist() == [1]


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found: .*nope.json"):
        load_annotations(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_annotations(bad)
    bad.write_text(json.dumps({"videos": {}}))
    with pytest.raises(ValueError, match="bad.json: expected an object with a 'database'"):
        load_annotations(bad)
    path = _write(tmp_path, {"v": {"subset": "train", "annotations": []}})
    with pytest.raises(ValueError, match="video v: missing key 'duration'"):
        load_annotations(path)
    path = _write(tmp_path, {"v": _video(duration=0)})
    with pytest.raises(ValueError, match="video v: duration must be > 0, found 0"):
        load_annotations(path)
    path = _write(tmp_path, {"v": _video(anns=[{"label": "Run", "segment": [1]}])})
    with pytest.raises(ValueError, match="video v: annotation 0: expected 'label' and 'segment'"):
        load_annotations(path)


def test_class_index_round_trip_and_errors(tmp_path):
    idx = ClassIndex(("Run", "Jump", "Swim"))
    idx.save(tmp_path / "classes.json")
    again = ClassIndex.load(tmp_path / "classes.json")
    assert again == idx and again.name_to_id == {"Run": 0, "Jump": 1, "Swim": 2}
    assert len(again) == 3 and again.num_named == 3
    unnamed = ClassIndex(("Run", None, "Swim"))
    unnamed.save(tmp_path / "classes.json")
    assert ClassIndex.load(tmp_path / "classes.json").names == ("Run", None, "Swim")
    assert unnamed.name_to_id == {"Run": 0, "Swim": 2} and unnamed.num_named == 2
    with pytest.raises(ValueError, match=r"duplicate class names \['Run'\]"):
        ClassIndex(("Run", "Run"))


def test_no_torch_import():
    # the evaluation command reads annotations and must start fast
    import subprocess

    code = "import sys, salad_lightning.data.annotations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
