"""python -m salad_lightning.evaluate, through main(argv) and once as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from salad_lightning.evaluate import main

# Subset "Test": a has two Jump, b and c one Run each (c gets no prediction but counts).
# Subset "Validation": v1 (Swim). Taxonomy adds Dance, which has no annotation.
GROUND_TRUTH = {
    "version": "test",
    "taxonomy": [{"nodeName": "Dance", "nodeId": 9, "parentId": 0}],
    "database": {
        "a": {
            "subset": "Test",
            "annotations": [
                {"label": "Jump", "segment": [0, 10]},
                {"label": "Jump", "segment": [20, 30]},
            ],
        },
        "b": {"subset": "Test", "annotations": [{"label": "Run", "segment": [5, 15]}]},
        "c": {"subset": "Test", "annotations": [{"label": "Run", "segment": [0, 5]}]},
        "v1": {"subset": "Validation", "annotations": [{"label": "Swim", "segment": [0, 10]}]},
    },
}
PREDICTIONS = {
    "version": "test",
    "external_data": {},
    "results": {
        "a": [
            {"label": "Jump", "score": 0.9, "segment": [0, 10]},  # tIoU 1
            {"label": "Jump", "score": 0.7, "segment": [40, 50]},  # nothing there
            {"label": "Jump", "score": 0.6, "segment": [21, 30]},  # tIoU 0.9
        ],
        "b": [
            {"label": "Run", "score": 0.8, "segment": [5, 14]},  # tIoU 0.9
            {"label": "Dance", "score": 0.5, "segment": [5, 15]},  # a class with no gt here
        ],
        "v1": [{"label": "Swim", "score": 0.95, "segment": [0, 10]}],  # outside "Test"
    },
}
# At 0.5: Jump TP, FP, TP over 2 gts -> 0.5 * 1 + 0.5 * 2/3 = 5/6; Run TP over 2 gts -> 1/2.
# At 0.95: Jump TP, FP, FP -> 1/2; Run FP -> 0.
EXPECTED = {"Jump": [5 / 6, 0.5], "Run": [0.5, 0.0]}


def assert_expected(result):
    assert list(result["per_class"]) == list(EXPECTED)
    for name, row in EXPECTED.items():
        assert result["per_class"][name] == pytest.approx(row, abs=1e-12), name


@pytest.fixture
def files(tmp_path):
    def write(gt=GROUND_TRUTH, pred=PREDICTIONS):
        gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
        gt_path.write_text(json.dumps(gt))
        pred_path.write_text(json.dumps(pred))
        return ["--ground-truth", str(gt_path), "--predictions", str(pred_path)]

    return write


def run_json(argv, capsys):
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_json_output_by_hand(files, capsys):
    result, err = run_json([*files(), "--subset", "Test", "--tiou", "0.5", "0.95"], capsys)
    assert list(result) == ["tiou_thresholds", "mAP", "average_mAP", "per_class"]
    assert result["tiou_thresholds"] == [0.5, 0.95]
    assert_expected(result)
    assert result["mAP"] == pytest.approx([(5 / 6 + 0.5) / 2, 0.25], abs=1e-12)
    assert result["average_mAP"] == pytest.approx(((5 / 6 + 0.5) / 2 + 0.25) / 2, abs=1e-12)
    # The prediction for v1 (subset Validation) was ignored and reported on stderr.
    assert "1 predictions for videos outside the evaluated subset were ignored" in err


def test_default_thresholds(files, capsys):
    result, _ = run_json([*files(), "--subset", "test"], capsys)
    assert result["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]


@pytest.mark.parametrize("name", ["test", "TEST", "tEsT"])
def test_subset_matches_case_insensitively(files, capsys, name):
    result, _ = run_json([*files(), "--subset", name, "--tiou", "0.5", "0.95"], capsys)
    assert_expected(result)


def test_unknown_or_missing_subset_lists_the_subsets(files, capsys):
    argv = files()
    assert main([*argv, "--subset", "training"]) == 2
    err = capsys.readouterr().err
    assert "no subset named 'training'" in err and "'Test', 'Validation'" in err
    assert main(argv) == 2  # two subsets and no --subset
    assert "choose one with --subset" in capsys.readouterr().err


def test_unknown_label_is_an_error_unless_ignored(files, capsys):
    pred = json.loads(json.dumps(PREDICTIONS))
    pred["results"]["a"].insert(0, {"label": "Fly", "score": 0.99, "segment": [0, 10]})
    argv = [*files(pred=pred), "--subset", "Test", "--tiou", "0.5", "0.95"]
    assert main(argv) == 2
    assert "'Fly'" in capsys.readouterr().err
    result, err = run_json([*argv, "--ignore-unknown-labels"], capsys)
    assert "1 predictions with labels unknown to the ground truth" in err
    # A false positive of a class outside the mean changes nothing.
    assert_expected(result)


def test_labels_of_other_subsets_are_known(files, capsys):
    pred = json.loads(json.dumps(PREDICTIONS))
    pred["results"]["a"].append({"label": "Swim", "score": 0.3, "segment": [0, 10]})
    result, _ = run_json([*files(pred=pred), "--subset", "Test", "--tiou", "0.5", "0.95"], capsys)
    assert_expected(result)


def test_duplicated_and_zero_length_ground_truths_behave_as_officially(files, capsys):
    gt = json.loads(json.dumps(GROUND_TRUTH))
    anns = gt["database"]["b"]["annotations"]
    anns.append(dict(anns[0]))  # a duplicate: npos 3 for Run
    anns.append({"label": "Run", "segment": [7, 7]})  # zero length: npos 4
    pred = json.loads(json.dumps(PREDICTIONS))
    pred["results"]["b"].append({"label": "Run", "score": 0.4, "segment": [5, 14]})  # 2nd dup
    pred["results"]["b"].append({"label": "Run", "score": 0.3, "segment": [3, 3]})  # 0/0 tIoU
    result, _ = run_json([*files(gt, pred), "--subset", "Test", "--tiou", "0.5"], capsys)
    # Run: TP, TP, TP (the zero-length pair matches, as NaN in the official code) over 4.
    assert result["per_class"]["Run"] == pytest.approx([0.75], abs=1e-12)


def test_table_has_map_and_per_class_rows(files, capsys):
    assert main([*files(), "--subset", "Test", "--tiou", "0.5", "0.95"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("mAP (%)") and "66.67" in line and "45.83" in line for line in lines)
    assert any(line.startswith("Jump") and "83.33" in line and "50.00" in line for line in lines)
    assert any(line.startswith("Run") and "50.00" in line and "0.00" in line for line in lines)
    assert "1 predictions for videos outside the evaluated subset were ignored" in out


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"results": {"a": [{"label": "Jump", "segment": [0, 1]}]}}, "prediction 0"),
        ({"results": {"a": [{"label": "Jump", "score": 1, "segment": [0]}]}}, "segment"),
        ({"results": {"a": [{"label": "Jump", "score": "x", "segment": [0, 1]}]}}, "score"),
        ({"results": []}, '"results" object'),
        ({"version": 1}, '"results" object'),
    ],
)
def test_malformed_predictions_are_named(files, capsys, broken, message):
    assert main([*files(pred=broken), "--subset", "Test"]) == 2
    err = capsys.readouterr().err
    assert message in err and "pred.json" in err


def test_segments_taken_as_published(files, capsys):
    # The official evaluator reads zero-length and inverted segments as they are; so
    # do we, with a note. b's Run gt becomes [15, 5] (length -10): only a prediction of
    # length +10 matches it (0/0). The first b prediction, [5, 14], no longer matches:
    # Run at 0.5 is FP, TP (the added [0, 10]) over 2 gts -> precision 0, 1/2 -> AP 1/4.
    gt = json.loads(json.dumps(GROUND_TRUTH))
    gt["database"]["b"]["annotations"][0]["segment"] = [15, 5]
    pred = json.loads(json.dumps(PREDICTIONS))
    pred["results"]["b"].append({"label": "Run", "score": 0.3, "segment": [0, 10]})
    pred["results"]["a"].append({"label": "Jump", "score": 0.1, "segment": [9, 3]})
    assert main([*files(gt=gt, pred=pred), "--subset", "Test", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["per_class"]["Run"][2] == pytest.approx(0.25, abs=1e-12)
    assert "1 ground truths have zero length or end before they start" in captured.err
    assert "1 predictions end before they start" in captured.err


def test_missing_file_and_bad_threshold(files, capsys, tmp_path):
    argv = files()
    assert main(["--ground-truth", str(tmp_path / "nope.json"), *argv[2:], "--subset", "Test"]) == 2
    assert "nope.json: cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--tiou", "1.5"])


def test_subprocess_prints_exactly_one_json_object_without_torch(files):
    argv = [*files(), "--subset", "Test", "--tiou", "0.5", "0.95", "--json"]
    code = (
        "import runpy, sys; sys.argv = ['evaluate'] + sys.argv[1:]; "
        "sys.modules['torch'] = None; "  # importing torch would now fail
        "runpy.run_module('salad_lightning.evaluate', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    decoder = json.JSONDecoder()
    result, end = decoder.raw_decode(proc.stdout)
    assert proc.stdout[end:].strip() == ""  # nothing but the one object
    assert_expected(result)
    proc = subprocess.run(
        [sys.executable, "-m", "salad_lightning.evaluate", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 0 and json.loads(proc.stdout) == result


def test_diagnose_writes_detads_analyses_without_torch(files, tmp_path):
    """--diagnose: diagnosis.json (DETAD's schema) and three figures, equal to `diagnose`
    on the same rows (videos in key order), from a process where torch cannot load."""
    import numpy as np

    from salad_lightning.metrics.diagnosis import PRESETS, diagnose
    from salad_lightning.metrics.functional import Instances, video_key

    gt = json.loads(json.dumps(GROUND_TRUTH))
    for i, video in enumerate(gt["database"].values()):
        video["duration"] = 200.0 + 100 * i
    argv = [*files(gt=gt), "--subset", "Test", "--diagnose", str(tmp_path / "diag")]
    code = (
        "import runpy, sys; sys.argv = ['evaluate'] + sys.argv[1:]; "
        "sys.modules['torch'] = None; "
        "runpy.run_module('salad_lightning.evaluate', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the data: instances of 5-10 s in videos of 200-400 s, a median coverage of 0.05
    assert "DETAD diagnosis at tIoU [0.5] with thumos14's bins (the ground truth" in proc.stdout
    written = json.loads((tmp_path / "diag" / "diagnosis.json").read_text())
    for name in ("false_positive_analysis", "sensitivity_analysis", "false_negative_analysis"):
        assert (tmp_path / "diag" / f"{name}.png").stat().st_size > 10_000

    videos = sorted(("a", "b", "c"), key=video_key)  # the Test subset, in key order
    index = {v: i for i, v in enumerate(videos)}
    labels = {"Jump": 0, "Run": 1, "Dance": 2}
    gt_rows = [(v, a) for v in videos for a in gt["database"][v]["annotations"]]
    preds = [(v, p) for v in videos for p in PREDICTIONS["results"].get(v, [])]
    expected = diagnose(
        Instances(
            video=np.array([index[v] for v, _ in preds]),
            segments=np.array([p["segment"] for _, p in preds], dtype=float),
            labels=np.array([labels[p["label"]] for _, p in preds]),
            scores=np.array([p["score"] for _, p in preds]),
        ),
        Instances(
            video=np.array([index[v] for v, _ in gt_rows]),
            segments=np.array([a["segment"] for _, a in gt_rows], dtype=float),
            labels=np.array([labels[a["label"]] for _, a in gt_rows]),
        ),
        np.array([gt["database"][v]["duration"] for v in videos]),
        **PRESETS["thumos14"],
    )
    assert written == json.loads(json.dumps(expected.to_json()))
    assert written["false_positive_profile"]["1G"]["true_positive"] > 0


def _long_actions(gt: dict) -> dict:
    """GROUND_TRUTH with durations that make its instances ActivityNet-like (coverage
    0.27-0.8 of their video)."""
    gt = json.loads(json.dumps(gt))
    for video in gt["database"].values():
        ends = [a["segment"][1] for a in video["annotations"]] or [10.0]
        video["duration"] = max(ends) * 1.25
    return gt


@pytest.mark.parametrize(
    "extra, data, preset, thresholds",
    [
        # ActivityNet's ten thresholds and no preset: those ten, with ActivityNet's bins
        (["--tiou", *[f"{0.5 + 0.05 * i:.2f}" for i in range(10)]], "short", "activitynet", None),
        # no --tiou and no preset: the preset the data looks like, at its thresholds
        ([], "long", "activitynet", None),
        ([], "short", "thumos14", None),
        # thresholds of no preset: those thresholds, with the bins the data looks like
        (["--tiou", "0.3", "0.6"], "long", "activitynet", (0.3, 0.6)),
        # a named preset wins over the data; --tiou still sets the thresholds
        (["--diagnose-preset", "thumos14", "--tiou", "0.4"], "long", "thumos14", (0.4,)),
    ],
)
def test_the_diagnosis_follows_the_thresholds_and_the_data(
    files, tmp_path, extra, data, preset, thresholds
):
    """The command's diagnosis is `diagnose` with the bins of the preset the user named,
    else of the one whose thresholds --tiou gives, else of the one the data looks like;
    at the thresholds of --tiou when given. The note says which and why."""
    import numpy as np

    from salad_lightning.metrics.diagnosis import PRESETS, diagnose
    from salad_lightning.metrics.functional import Instances, video_key

    gt = json.loads(json.dumps(GROUND_TRUTH))
    for i, video in enumerate(gt["database"].values()):
        video["duration"] = 200.0 + 100 * i  # coverages 0.05, 0.05, 0.033, 0.0125
    if data == "long":
        gt = _long_actions(gt)
    out = tmp_path / "diag"
    argv = [*files(gt=gt), "--subset", "Test", "--diagnose", str(out), *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "salad_lightning.evaluate", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    settings = dict(PRESETS[preset])
    if thresholds is not None or "--tiou" in extra:
        settings["tiou_thresholds"] = thresholds or PRESETS[preset]["tiou_thresholds"]
    expect = [float(t) for t in settings["tiou_thresholds"]]
    assert f"DETAD diagnosis at tIoU {expect} with {preset}'s bins (" in proc.stdout
    coverage = settings["coverage_bins"].edges
    assert f"coverage {list(coverage)}" in proc.stdout

    videos = sorted(("a", "b", "c"), key=video_key)
    index = {v: i for i, v in enumerate(videos)}
    labels = {"Jump": 0, "Run": 1, "Dance": 2}
    gt_rows = [(v, a) for v in videos for a in gt["database"][v]["annotations"]]
    preds = [(v, p) for v in videos for p in PREDICTIONS["results"].get(v, [])]
    expected = diagnose(
        Instances(
            video=np.array([index[v] for v, _ in preds]),
            segments=np.array([p["segment"] for _, p in preds], dtype=float),
            labels=np.array([labels[p["label"]] for _, p in preds]),
            scores=np.array([p["score"] for _, p in preds]),
        ),
        Instances(
            video=np.array([index[v] for v, _ in gt_rows]),
            segments=np.array([a["segment"] for _, a in gt_rows], dtype=float),
            labels=np.array([labels[a["label"]] for _, a in gt_rows]),
        ),
        np.array([gt["database"][v]["duration"] for v in videos]),
        **settings,
    )
    written = json.loads((out / "diagnosis.json").read_text())
    assert written == json.loads(json.dumps(expected.to_json()))
    assert written["tiou_thresholds"] == expect
