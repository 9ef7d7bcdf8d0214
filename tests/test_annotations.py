"""Annotation files: the real THUMOS14 file, ActivityNet 1.3 schema, class index, checks."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from salad_lightning.data.annotations import (
    ClassIndex,
    DataWarning,
    load_annotations,
)

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
    with pytest.warns(DataWarning) as rec:
        ann = load_annotations(thumos_json)
    assert ann.version == "Thumos14-30fps"
    assert ann.subsets() == {"Test": 212, "Validation": 200}
    # label_id 0-19 in alphabetical order (SOURCE.md)
    assert list(ann.class_index.names) == THUMOS_CLASSES
    # 26 test segments and 4 validation segments start after their video's end
    assert (ann.num_clipped, ann.num_dropped) == (0, 30)
    msg = str(rec[0].message)
    assert "30 segments reach outside" in msg and "video_test_0000270 (Test): 22" in msg
    assert sum(v.num_segments for v in ann.select("Validation")) == 3007 - 4
    assert sum(v.num_segments for v in ann.select("Test")) == 3358 - 26
    v = ann.videos["video_test_0000004"]
    assert (v.subset, v.duration, v.fps) == ("Test", 33.83, 30.0)
    np.testing.assert_allclose(v.segments[:2], [[0.2, 1.1], [11.4, 12.2]])
    assert v.labels[0] == THUMOS_CLASSES.index("CricketBowling")
    assert {ann.videos[k].fps for k in ann.videos} == {30.0, 29.97, 25.0, 24.0}


def test_subsets_are_case_insensitive(thumos_json):
    with pytest.warns(DataWarning):
        ann = load_annotations(thumos_json)
    assert len(ann.select("validation")) == 200
    assert len(ann.select("TEST")) == 212
    assert len(ann.select(["Validation", "test"])) == 412


def test_missing_subset_names_the_existing_ones(thumos_json):
    with pytest.warns(DataWarning):
        ann = load_annotations(thumos_json)
    with pytest.raises(ValueError, match="thumos14.json: subset 'training' has no videos") as e:
        ann.select("training")
    assert "subsets present: Test (212 videos), Validation (200 videos)" in str(e.value)


def test_activitynet13_schema_labels_by_name(anet_folder):
    ann = load_annotations(anet_folder.annotation_file)
    assert ann.version == "VERSION 1.3"
    assert set(ann.subsets()) == {"training", "validation", "testing"}
    # no label_id: the class index is the sorted set of names used in the file
    used = sorted(
        {
            str(n)
            for v in json.load(open(anet_folder.annotation_file))["database"].values()
            for n in (a["label"] for a in v["annotations"])
        }
    )
    assert list(ann.class_index.names) == used
    assert all(v.fps is None for v in ann.videos.values())
    assert all(v.num_segments == 0 for v in ann.select("testing"))


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


def test_label_ids_must_be_contiguous(tmp_path):
    path = _write(
        tmp_path,
        {"a": _video(anns=[{"label": "Run", "segment": [1, 2], "label_id": 7}])},
    )
    with pytest.raises(ValueError, match=r"label_id values must be 0..K-1, found \[7\]"):
        load_annotations(path)


def test_end_not_after_start_names_video_and_segment(tmp_path):
    path = _write(
        tmp_path,
        {
            "vid42": _video(
                anns=[{"label": "Run", "segment": [1, 2]}, {"label": "Run", "segment": [5.5, 5.5]}]
            )
        },
    )
    with pytest.raises(
        ValueError,
        match=r"video vid42: annotation 1 \(Run\): segment end must be > start, found \[5.5, 5.5\]",
    ):
        load_annotations(path)


def test_segments_beyond_duration_are_clipped_or_dropped_and_counted(tmp_path):
    path = _write(
        tmp_path,
        {
            "v1": _video(
                duration=10.0,
                anns=[
                    {"label": "Run", "segment": [2, 4]},  # fine
                    {"label": "Run", "segment": [8, 12]},  # clipped to [8, 10]
                    {"label": "Run", "segment": [-1, 3]},  # clipped to [0, 3]
                    {"label": "Run", "segment": [11, 12]},  # dropped
                ],
            ),
            "v2": _video(duration=5.0, anns=[{"label": "Run", "segment": [4, 6]}]),
        },
    )
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ann = load_annotations(path)
    assert len(rec) == 1 and rec[0].category is DataWarning  # warned once
    assert str(rec[0].message).endswith(
        "4 segments reach outside [0, duration] of their video: 3 clipped to it, "
        "1 entirely outside and dropped (v1 (train): 3, v2 (train): 1)"
    )
    assert (ann.num_clipped, ann.num_dropped) == (3, 1)
    np.testing.assert_array_equal(ann.videos["v1"].segments, [[2, 4], [8, 10], [0, 3]])
    np.testing.assert_array_equal(ann.videos["v2"].segments, [[4, 5]])


def test_label_missing_from_given_class_index(tmp_path):
    path = _write(tmp_path, {"clip7": _video(anns=[{"label": "Swim", "segment": [1, 2]}])})
    with pytest.raises(
        ValueError,
        match=r"video clip7: annotation 0: label 'Swim' is not in the class index \(2 classes: Jump, Run\)",
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
    assert len(again) == 3 and again.id_of("Swim") == 2
    with pytest.raises(KeyError, match="label 'Fly' is not in the class index"):
        idx.id_of("Fly")
    with pytest.raises(ValueError, match=r"duplicate class names \['Run'\]"):
        ClassIndex(("Run", "Run"))


def test_no_torch_import():
    # the evaluation command reads annotations and must start fast
    import subprocess

    code = "import sys, salad_lightning.data.annotations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
