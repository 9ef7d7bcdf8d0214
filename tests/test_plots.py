"""The project's figures: which videos the timelines show, and PNGs that are really drawn."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from salad_lightning import plots
from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.metrics.diagnosis import PRESETS, diagnose
from salad_lightning.metrics.evaluation import evaluate_videos
from salad_lightning.metrics.functional import Instances


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def video(video_id: str, gts: list[tuple[float, float]], dets: list[tuple[float, float, float]]):
    """One video's (detections, ground truth): class 0 everywhere; ``dets`` as
    (start, end, score)."""
    return (
        VideoDetections(
            video_id,
            np.array([d[:2] for d in dets], dtype=float).reshape(-1, 2),
            np.array([d[2] for d in dets], dtype=float),
            np.zeros(len(dets), dtype=int),
        ),
        VideoGroundTruth(
            video_id, np.array(gts, dtype=float).reshape(-1, 2), np.zeros(len(gts), dtype=int)
        ),
    )


def evaluation(videos, tiou=(0.5,)):
    """The evaluation of (detections, ground truth) pairs, and the videos' positions in it."""
    result = evaluate_videos([d for d, _ in videos], [g for _, g in videos], list(tiou))
    return result, [result.video_ids.index(g.video_id) for _, g in videos]


FOUR = [(0, 10), (20, 30), (40, 50), (60, 70)]
OUTPUTS = [
    # AP@0.5 of each video, by hand (one class, precision 1 at each true positive, so
    # AP = recall): 1/4, 1, 0 (a false positive only), 1/2, 3/4; and no ground truth.
    video("quarter", FOUR, [(0, 10, 0.9)]),
    video("full", [(0, 10)], [(1, 10, 0.8)]),
    video("zero", [(0, 10)], [(50, 60, 0.9)]),
    video("half", [(0, 10), (20, 30)], [(20, 30, 0.7)]),
    video("three_quarters", FOUR, [(0, 10, 0.9), (20, 30, 0.8), (40, 50, 0.7)]),
    video("no_ground_truth", [], [(0, 10, 0.9)]),
]


def test_video_ap_by_hand():
    result, at = evaluation(OUTPUTS)
    aps = plots.video_aps(result)[at]
    np.testing.assert_allclose(aps[:5], [0.25, 1.0, 0.0, 0.5, 0.75])
    assert np.isnan(aps[5])
    # Two classes in one video: class 0 found (AP 1), class 1 missed (0), and a
    # detection of class 2, absent from the video, changes nothing: mean 1/2.
    dets, truth = video("two", [(0, 10), (20, 30)], [(0, 10, 0.9), (20, 30, 0.8), (40, 50, 0.95)])
    two = (
        VideoDetections("two", dets.segments, dets.scores, [0, 2, 2]),
        VideoGroundTruth("two", truth.segments, [0, 1]),
    )
    alone, _ = evaluation([two])
    assert plots.video_aps(alone).tolist() == [0.5]
    # All videos in one evaluation give the same values (the chooser's view).
    result, at = evaluation([*OUTPUTS, two])
    np.testing.assert_array_equal(plots.video_aps(result)[at], [*aps, 0.5])


@pytest.mark.parametrize(
    "num, expected",
    [
        (3, ["full", "half", "zero"]),  # best, median, worst of 1, .75, .5, .25, 0
        (1, ["half"]),
        (2, ["full", "zero"]),
        (4, ["full", "half", "quarter", "zero"]),  # evenly spaced: places 0 1 3 4, 1 -> median
        (5, ["full", "three_quarters", "half", "quarter", "zero"]),
        (9, ["full", "three_quarters", "half", "quarter", "zero"]),  # never the video without
    ],
)
def test_timelines_are_best_median_and_worst(num, expected):
    result, _ = evaluation(OUTPUTS)
    chosen = plots.choose_timelines(result, num)
    assert [result.video_ids[i] for i, _ in chosen] == expected
    captions = [c.split(" of ")[0] for _, c in chosen]
    assert captions[0] == ("median" if num == 1 else "best")
    if num >= 2:
        assert captions[-1] == "worst"


def test_equal_aps_prefer_the_video_with_more_ground_truths():
    outputs = [video("one", [(0, 10)], [(0, 10, 0.9)]), video("two", FOUR[:2], [])]
    outputs.append(video("two_found", FOUR[:2], [(0, 10, 0.9), (20, 30, 0.8)]))
    result, _ = evaluation(outputs)
    assert [result.video_ids[i] for i, _ in plots.choose_timelines(result, 2)] == [
        "two_found",
        "two",
    ]


def test_write_plots(tmp_path):
    result, _ = evaluation(OUTPUTS)
    images = plots.write_plots(result, ["Jump"], tmp_path, num_timelines=3)
    assert list(images) == [
        "timeline/full",
        "timeline/half",
        "timeline/zero",
        "calibration/reliability",
    ]
    for key, path in images.items():
        assert path.parent == tmp_path and path.stat().st_size > 10_000, key
        width, height = png_size(path)
        assert 400 <= width <= 2000 and 300 <= height <= 2000, (key, width, height)
    assert images["timeline/half"].name == "timeline_half.png"
    # a second report into the folder (a resumed run tests again): its timelines alone
    again = plots.write_plots(result, ["Jump"], tmp_path, num_timelines=1)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "reliability.png",
        "timeline_half.png",
    ]
    assert list(again) == ["timeline/half", "calibration/reliability"]
    empty, _ = evaluation([video("none", [(0, 10)], [])])
    assert plots.write_plots(empty, [], tmp_path / "x", num_timelines=0) == {}


def test_timeline_flags_come_from_the_evaluations_matching(tmp_path):
    """The drawn true positives are the evaluation's: a flag array of the wrong length is
    refused, naming the video."""
    dets, truth = video("t", [(0, 10)], [(0, 10, 0.9), (30, 40, 0.2)])
    with pytest.raises(ValueError, match="2 detections of video 't' but 1 true-positive flags"):
        plots.plot_timeline(dets, truth, ["Jump"], tmp_path / "t.png", true_positive=[True])
    plots.plot_timeline(dets, truth, ["Jump"], tmp_path / "t.png", true_positive=[True, False])
    assert png_size(tmp_path / "t.png")[0] > 400


def test_crowded_timeline_wraps_into_rows(tmp_path):
    # 50 instances of 4 s every 20 s: five rows of about ten, each taller than one row.
    gts = [(20 * i, 20 * i + 4) for i in range(50)]
    dets = [(s + 0.5, e, 0.9 - 0.01 * i) for i, (s, e) in enumerate(gts)] + [(5, 9, 0.01)]
    one, many = tmp_path / "one.png", tmp_path / "many.png"
    plots.plot_timeline(*video("v", gts[:5], dets[:5]), ["Jump"], one, true_positive=[True] * 5)
    flags = [True] * 50 + [False]
    plots.plot_timeline(*video("v", gts, dets), ["Jump"], many, true_positive=flags)
    assert png_size(many)[1] > 3 * png_size(one)[1]


def test_diagnosis_figures_with_empty_bins(tmp_path):
    # One ground truth: most bins and profile groups are empty (NaN) and must still draw.
    d = diagnose(
        Instances(
            video=[0, 0], segments=[[0.0, 10.0], [50.0, 60.0]], labels=[0, 0], scores=[0.9, 0.5]
        ),
        Instances(video=[0], segments=[[0.0, 10.0]], labels=[0]),
        [100.0],
        **PRESETS["activitynet"],
    )
    for draw in (
        plots.plot_false_positive_analysis,
        plots.plot_sensitivity_analysis,
        plots.plot_false_negative_analysis,
    ):
        path = tmp_path / f"{draw.__name__}.png"
        draw(d, path)
        width, height = png_size(path)
        assert path.stat().st_size > 10_000 and 600 <= width <= 2000 and 250 <= height <= 1000


def test_importing_plots_does_not_import_matplotlib_or_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; import salad_lightning.plots; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
