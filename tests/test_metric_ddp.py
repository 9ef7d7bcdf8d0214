"""The evaluation store (`DetectionStore`): against the evaluator and the reference,
batches, repeated videos, videos given as ground truth only, and 2 gloo processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _reference_eval import as_instances, reference_evaluate
from salad_lightning.data.detections import VideoDetections, VideoGroundTruth
from salad_lightning.evaluate import evaluate_files
from salad_lightning.metrics import DetectionStore
from salad_lightning.metrics.calibration import expected_calibration_error
from salad_lightning.metrics.functional import (
    Instances,
    evaluate_detections,
    match_detections,
    video_key,
)

THRESHOLDS = (0.3, 0.5, 0.7)


def make_videos(n_videos: int = 7, n_classes: int = 3, seed: int = 0):
    """(preds, targets): one dict per video, numpy arrays, distinct scores."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for v in range(n_videos):
        vid = f"video_{v:03d}"
        n_gt = int(rng.integers(0 if v == 3 else 1, 5))  # video 3 has no ground truth
        start = rng.uniform(0, 80, n_gt)
        gt_seg = np.stack([start, start + rng.uniform(2, 20, n_gt)], axis=1)
        gt_lab = rng.integers(0, n_classes, n_gt)
        n_pred = 0 if v == 5 else 12  # video 5 has no prediction: its gts still count
        base = rng.integers(0, max(n_gt, 1), n_pred)
        seg = (
            gt_seg[base] + rng.normal(0, 3, (n_pred, 2))
            if n_gt
            else rng.uniform(0, 90, (n_pred, 2))
        )
        seg.sort(axis=1)
        lab = np.where(
            rng.random(n_pred) < 0.8,
            gt_lab[base] if n_gt else 0,
            rng.integers(0, n_classes, n_pred),
        )
        preds.append(
            {"video_id": vid, "segments": seg, "scores": rng.random(n_pred), "labels": lab}
        )
        targets.append({"video_id": vid, "segments": gt_seg, "labels": gt_lab})
    return preds, targets


def flat(preds, targets):
    """The reference's flat arrays (`as_instances` makes the evaluator's input of them),
    videos keyed as the metric keys them."""

    def keys(items, field):
        return [np.full(len(x[field]), video_key(x["video_id"]), dtype=np.int64) for x in items]

    pv, gv = np.concatenate(keys(preds, "scores")), np.concatenate(keys(targets, "labels"))
    cat = np.concatenate
    return (
        pv,
        cat([p["segments"].reshape(-1, 2) for p in preds]),
        cat([p["scores"] for p in preds]),
        cat([p["labels"] for p in preds]).astype(np.int64),
        gv,
        cat([t["segments"].reshape(-1, 2) for t in targets]),
        cat([t["labels"] for t in targets]).astype(np.int64),
    )


def run_store(preds, targets, batches, **kwargs):
    store = DetectionStore(THRESHOLDS, **kwargs)
    for idx in batches:
        store.update([preds[i] for i in idx], [targets[i] for i in idx])
    return store.evaluate()


def assert_same(a, b) -> None:
    """Two evaluations hold the same rows, matching and numbers, bit for bit."""
    assert a.video_ids == b.video_ids
    for x, y in ((a.pred, b.pred), (a.gt, b.gt)):
        for field in ("video", "segments", "labels", "scores"):
            u, v = getattr(x, field), getattr(y, field)
            assert (u is None and v is None) or np.array_equal(u, v), field
    for field in ("tiou_thresholds", "tp", "gt", "order"):
        assert np.array_equal(getattr(a.matching, field), getattr(b.matching, field)), field
    np.testing.assert_array_equal(a.durations, b.durations)
    assert a.map_at == b.map_at and a.average_map == b.average_map
    np.testing.assert_array_equal(a.per_class_ap, b.per_class_ap)
    assert a.ece == b.ece


def test_store_equals_the_functional_evaluator_and_the_reference():
    preds, targets = make_videos()
    result = run_store(preds, targets, [[0, 1, 2], [3], [4, 5, 6]])
    args = flat(preds, targets)
    expected = evaluate_detections(*as_instances(*args), tiou_thresholds=THRESHOLDS)
    np.testing.assert_array_equal(result.per_class_ap, expected.ap)
    np.testing.assert_array_equal(result.classes_present, expected.labels)
    assert result.average_map == expected.average_mAP
    classes, ap, mean_ap, avg = reference_evaluate(*args, THRESHOLDS)
    np.testing.assert_allclose(result.map_at, mean_ap, atol=1e-9)
    assert 0 < result.average_map < 1  # the data are neither trivial nor hopeless
    # compute(): the logged scalars of the same result
    store = DetectionStore(THRESHOLDS, split="val")
    store.update(preds, targets)
    values = store.compute()
    assert list(values) == ["mAP@0.3", "mAP@0.5", "mAP@0.7", "mAP", "ece"]
    assert values["mAP"].item() == expected.average_mAP
    # the ECE against true positives at tIoU 0.5, from the reference's own matching
    pred, gt = as_instances(*args)
    tp = match_detections(pred, gt, [0.5]).tp[0]
    assert values["ece"].item() == pytest.approx(
        expected_calibration_error(pred.scores, tp, n_bins=15), abs=1e-12
    )
    assert result.correct.sum() == tp.sum() > 0


def test_batching_does_not_change_the_value():
    preds, targets = make_videos()
    a = run_store(preds, targets, [[0, 1, 2, 3, 4, 5, 6]])
    b = run_store(preds, targets, [[6], [2, 0], [5, 1, 4], [3]])
    assert_same(a, b)


def test_a_repeated_video_counts_once_with_its_first_copy():
    preds, targets = make_videos()
    once = run_store(preds, targets, [[0, 1, 2], [3, 4, 5, 6]])
    # Video 0 again, as DistributedSampler padding repeats it; the copy even differs
    # (an extra false positive), and only the first copy counts.
    copy = dict(preds[0])
    copy["segments"] = np.concatenate([preds[0]["segments"], [[500.0, 510.0]]])
    copy["scores"] = np.concatenate([preds[0]["scores"], [0.999]])
    copy["labels"] = np.concatenate([preds[0]["labels"], [targets[0]["labels"][0]]])
    store = DetectionStore(THRESHOLDS)
    store.update(preds[:3], targets[:3])
    store.update(preds[3:] + [copy], targets[3:] + [targets[0]])
    assert_same(once, store.evaluate())
    # Counting the repeat would have changed the value.
    twice = evaluate_detections(
        *as_instances(*flat(preds + [preds[0]], targets + [targets[0]])),
        tiou_thresholds=THRESHOLDS,
    )
    assert twice.average_mAP != once.average_map


def test_evaluate_matches_once_and_reset_starts_again():
    preds, targets = make_videos()
    store = DetectionStore(THRESHOLDS)
    store.update(preds, targets)
    first = store.evaluate()
    assert store.evaluate() is first  # cached: the readers share one matching
    store.reset()
    store.update(preds[:2], targets[:2])
    assert_same(store.evaluate(), run_store(preds, targets, [[0, 1]]))


def test_per_video_records_carry_the_matching():
    """`Evaluation.videos()`: each video's rows with its true-positive flags and the row
    of its own ground truth each took, as a per-video matching finds them."""
    preds, targets = make_videos()
    result = run_store(preds, targets, [[0, 1, 2, 3, 4, 5, 6]])
    assert sorted(result.video_ids) == [t["video_id"] for t in targets]
    assert list(result.video_ids) == sorted(result.video_ids, key=video_key)
    by_id = {p["video_id"]: (p, t) for p, t in zip(preds, targets)}
    hits = 0
    for video, truth in zip(result.videos(), result.ground_truth()):
        p, t = by_id[video.video_id]
        np.testing.assert_array_equal(video.scores, p["scores"])
        np.testing.assert_array_equal(truth.segments, t["segments"].reshape(-1, 2))
        alone = match_detections(
            Instances(
                np.zeros(len(p["scores"]), int),
                p["segments"].reshape(-1, 2),
                p["labels"],
                p["scores"],
            ),
            Instances(np.zeros(len(t["labels"]), int), t["segments"].reshape(-1, 2), t["labels"]),
            result.matching.tiou_thresholds,
        )
        np.testing.assert_array_equal(video.matched, alone.tp)
        np.testing.assert_array_equal(video.matched_gt, alone.gt)
        hits += int(video.matched.sum())
    assert hits > 0


def test_videos_given_as_ground_truth_only_count_as_missed():
    """A video without features (given to the store as ground truth only) is a positive
    nothing detects, as the official evaluator counts it. By hand: one class, video a
    found exactly at score 0.9 (AP 1 alone); with video b's instance given as ground
    truth only, recall stops at 1/2 with precision 1: AP 0.5."""
    a_det = VideoDetections("a", [[0.0, 10.0]], [0.9], [0])
    a_gt = VideoGroundTruth("a", [[0.0, 10.0]], [0], 100.0)
    b_gt = VideoGroundTruth("b", [[20.0, 30.0]], [0], 80.0)
    alone = DetectionStore((0.5,))
    alone.update([a_det], [a_gt])
    assert alone.evaluate().average_map == 1.0
    store = DetectionStore((0.5,), ground_truth_only=[b_gt])
    store.update([a_det], [a_gt])
    result = store.evaluate()
    assert result.average_map == 0.5
    assert set(result.video_ids) == {"a", "b"}
    assert result.durations[result.video_ids.index("b")] == 80.0
    # given only once: a video the store also saw keeps its detections
    store = DetectionStore((0.5,), ground_truth_only=[a_gt])
    store.update([a_det], [a_gt])
    assert store.evaluate().average_map == 1.0


def test_metric_and_command_agree_even_on_equal_scores(tmp_path):
    # Scores rounded to 0.1 make many ties across videos: the metric and the command
    # both order them by the video key, so they agree exactly.
    preds, targets = make_videos(n_videos=7)
    for p in preds:
        p["scores"] = np.round(p["scores"], 1)
    names = ["c0", "c1", "c2"]
    database = {
        t["video_id"]: {
            "subset": "test",
            "annotations": [
                {"label": names[c], "segment": s.tolist()}
                for c, s in zip(t["labels"], t["segments"])
            ],
        }
        for t in targets
    }
    results = {
        p["video_id"]: [
            {"label": names[c], "score": float(x), "segment": s.tolist()}
            for c, x, s in zip(p["labels"], p["scores"], p["segments"])
        ]
        for p in preds
    }
    (tmp_path / "gt.json").write_text(json.dumps({"database": database}))
    (tmp_path / "pred.json").write_text(json.dumps({"results": results}))
    summary, _ = evaluate_files(
        str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), tiou_thresholds=THRESHOLDS
    )
    result = run_store(preds, targets, [[0, 1, 2], [3, 4, 5, 6]])
    assert summary["mAP"] == list(result.map_at)
    assert summary["per_class"] == {
        names[c]: row
        for c, row in zip(result.classes_present.tolist(), result.per_class_ap.tolist())
    }
    # The ties matter here: ordering the videos by position instead of key differs.
    pv, ps, sc, pl, gv, gs, gl = flat(preds, targets)
    position = {k: i for i, k in enumerate(dict.fromkeys(gv.tolist() + pv.tolist()))}
    by_position = evaluate_detections(
        Instances(np.array([position[k] for k in pv.tolist()]), ps, pl, sc),
        Instances(np.array([position[k] for k in gv.tolist()]), gs, gl),
        tiou_thresholds=THRESHOLDS,
    )
    assert by_position.mAP.tolist() != summary["mAP"]


def test_no_ground_truth_gives_nan():
    store = DetectionStore()
    store.update(
        [{"video_id": "a", "segments": [[0, 1]], "scores": [0.5], "labels": [0]}],
        [{"video_id": "a", "segments": [], "labels": []}],
    )
    assert torch.isnan(store.compute()["mAP"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tiou_thresholds=()), r"\(0, 1\]"),
        (dict(tiou_thresholds=(0.5, 1.5)), r"\(0, 1\]"),
        (dict(tiou_thresholds=("x",)), "sequence of numbers"),
        (dict(tiou_thresholds=(0.5, 0.5000000001)), "same key"),
        (dict(calibration_bins=0), "calibration_bins: expected a positive integer"),
        (dict(calibration_tiou=0.0), r"calibration_tiou: expected a value in \(0, 1\]"),
        (dict(extra_tiou_thresholds=(2.0,)), r"\(0, 1\]"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DetectionStore(**kwargs)


@pytest.mark.parametrize(
    "pred, target, message",
    [
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5]),
            dict(video_id="a", segments=[], labels=[]),
            "missing key",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5], labels=[0]),
            dict(video_id="b", segments=[], labels=[]),
            "ground_truth\\[0\\] of 'b'",
        ),
        (
            dict(video_id="a", segments=[0, 1, 2], scores=[0.5], labels=[0]),
            dict(video_id="a", segments=[], labels=[]),
            r"video 'a': segments must be \(N, 2\)",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5, 0.1], labels=[0]),
            dict(video_id="a", segments=[], labels=[]),
            "2 scores",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5], labels=[-3]),
            dict(video_id="a", segments=[], labels=[]),
            "class indices >= 0, found -3",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5], labels=[0.5]),
            dict(video_id="a", segments=[], labels=[]),
            "labels must be integers",
        ),
    ],
)
def test_bad_updates_are_rejected(pred, target, message):
    store = DetectionStore()
    with pytest.raises(ValueError, match=message):
        store.update([pred], [target])
    with pytest.raises(TypeError, match="video_id: expected a str"):
        store.update([dict(pred, video_id=7, labels=[0])], [dict(target, video_id=7)])


# --- two processes ---------------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, out_file: str, preds, targets, batches) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        store = DetectionStore(THRESHOLDS, ground_truth_only=[EXTRA])
        for idx in batches[rank]:
            store.update([preds[i] for i in idx], [targets[i] for i in idx])
        torch.save(
            {"evaluation": store.evaluate(), "values": store.compute()}, f"{out_file}.{rank}"
        )
    finally:
        dist.destroy_process_group()


EXTRA = VideoGroundTruth("no_features", [[5.0, 9.0]], [1], 60.0)


@pytest.mark.ddp
def test_two_processes_equal_one_process(tmp_path):
    preds, targets = make_videos(n_videos=7)
    # DistributedSampler(shuffle=False) with 7 videos on 2 ranks pads to 8 by
    # repeating video 0: rank 0 gets 0, 2, 4, 6 and rank 1 gets 1, 3, 5, 0.
    # Uneven batches on purpose.
    batches = [[[0, 2, 4], [6]], [[1], [3, 5, 0]]]
    single = run_store(preds, targets, [[0, 1, 2, 3, 4, 5, 6]], ground_truth_only=[EXTRA])
    assert 0 < single.average_map < 1 and 0 < single.ece < 1
    out = str(tmp_path / "values")
    mp.spawn(
        _worker,
        args=(2, str(tmp_path / "init"), out, preds, targets, batches),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=False)
        assert_same(single, got["evaluation"])
        assert got["values"]["mAP"].item() == single.average_map
