"""TemporalActionDetectionMAP: single process, repeated videos, and 2 gloo processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _reference_eval import as_instances, reference_evaluate
from salad_lightning.evaluate import evaluate_files
from salad_lightning.metrics import TemporalActionDetectionMAP
from salad_lightning.metrics.functional import Instances, evaluate_detections, video_key

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


def run_metric(preds, targets, batches) -> dict[str, torch.Tensor]:
    metric = TemporalActionDetectionMAP(tiou_thresholds=THRESHOLDS)
    for idx in batches:
        metric.update([preds[i] for i in idx], [targets[i] for i in idx])
    return metric.compute()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, a[k], b[k])


def test_metric_equals_the_functional_evaluator_and_the_reference():
    preds, targets = make_videos()
    values = run_metric(preds, targets, [[0, 1, 2], [3], [4, 5, 6]])
    assert list(values) == [
        "mAP@0.3",
        "mAP@0.5",
        "mAP@0.7",
        "mAP",
        "per_class_ap",
        "classes_present",
    ]
    args = flat(preds, targets)
    result = evaluate_detections(*as_instances(*args), tiou_thresholds=THRESHOLDS)
    np.testing.assert_array_equal(values["per_class_ap"].numpy(), result.ap)
    np.testing.assert_array_equal(values["classes_present"].numpy(), result.labels)
    assert values["mAP"].item() == result.average_mAP
    classes, ap, mean_ap, avg = reference_evaluate(*args, THRESHOLDS)
    np.testing.assert_allclose(
        [values[f"mAP@{t:g}"].item() for t in THRESHOLDS], mean_ap, atol=1e-9
    )
    assert 0 < values["mAP"].item() < 1  # the data are neither trivial nor hopeless


def test_batching_does_not_change_the_value():
    preds, targets = make_videos()
    a = run_metric(preds, targets, [[0, 1, 2, 3, 4, 5, 6]])
    b = run_metric(preds, targets, [[6], [2, 0], [5, 1, 4], [3]])
    assert_same(a, b)


def test_a_repeated_video_counts_once_with_its_first_copy():
    preds, targets = make_videos()
    once = run_metric(preds, targets, [[0, 1, 2], [3, 4, 5, 6]])
    # Video 0 again, as DistributedSampler padding repeats it; the copy even differs
    # (an extra false positive), and only the first copy counts.
    copy = dict(preds[0])
    copy["segments"] = np.concatenate([preds[0]["segments"], [[500.0, 510.0]]])
    copy["scores"] = np.concatenate([preds[0]["scores"], [0.999]])
    copy["labels"] = np.concatenate([preds[0]["labels"], [targets[0]["labels"][0]]])
    metric = TemporalActionDetectionMAP(tiou_thresholds=THRESHOLDS)
    metric.update(preds[:3], targets[:3])
    metric.update(preds[3:] + [copy], targets[3:] + [targets[0]])
    assert_same(once, metric.compute())
    # Counting the repeat would have changed the value.
    twice = evaluate_detections(
        *as_instances(*flat(preds + [preds[0]], targets + [targets[0]])),
        tiou_thresholds=THRESHOLDS,
    )
    assert twice.average_mAP != once["mAP"].item()


def test_reset_and_per_class_table():
    preds, targets = make_videos()
    metric = TemporalActionDetectionMAP(tiou_thresholds=THRESHOLDS, class_names=["a", "b", "c"])
    metric.update(preds, targets)
    values = metric.compute()
    table = metric.per_class_table(values)
    assert table == {
        ["a", "b", "c"][c]: row
        for c, row in zip(values["classes_present"].tolist(), values["per_class_ap"].tolist())
    }
    metric.reset()
    metric.update(preds[:2], targets[:2])
    assert_same(metric.compute(), run_metric(preds, targets, [[0, 1]]))


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
    values = run_metric(preds, targets, [[0, 1, 2], [3, 4, 5, 6]])
    assert summary["mAP"] == [values[f"mAP@{t:g}"].item() for t in THRESHOLDS]
    assert summary["per_class"] == {
        names[c]: row
        for c, row in zip(values["classes_present"].tolist(), values["per_class_ap"].tolist())
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
    metric = TemporalActionDetectionMAP()
    metric.update(
        [{"video_id": "a", "segments": [[0, 1]], "scores": [0.5], "labels": [0]}],
        [{"video_id": "a", "segments": [], "labels": []}],
    )
    assert torch.isnan(metric.compute()["mAP"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tiou_thresholds=()), r"\(0, 1\]"),
        (dict(tiou_thresholds=(0.5, 1.5)), r"\(0, 1\]"),
        (dict(tiou_thresholds=("x",)), "sequence of numbers"),
        (dict(tiou_thresholds=(0.5, 0.5000000001)), "same key"),
        (dict(class_names="abc"), "list of non-empty strings"),
        (dict(class_names=["a", "a"]), "unique"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalActionDetectionMAP(**kwargs)


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
            "target\\[0\\] is 'b'",
        ),
        (
            dict(video_id="a", segments=[0, 1, 2], scores=[0.5], labels=[0]),
            dict(video_id="a", segments=[], labels=[]),
            r"\(M, 2\)",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5, 0.1], labels=[0]),
            dict(video_id="a", segments=[], labels=[]),
            "2 scores",
        ),
        (
            dict(video_id="a", segments=[[0, 1]], scores=[0.5], labels=[3]),
            dict(video_id="a", segments=[], labels=[]),
            r"\[0, 2\)",
        ),
        (
            dict(video_id=7, segments=[[0, 1]], scores=[0.5], labels=[0]),
            dict(video_id=7, segments=[], labels=[]),
            "must be a str",
        ),
    ],
)
def test_bad_updates_are_rejected(pred, target, message):
    metric = TemporalActionDetectionMAP(class_names=["x", "y"])
    with pytest.raises(ValueError, match=message):
        metric.update([pred], [target])


# --- two processes ---------------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, out_file: str, preds, targets, batches) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metric = TemporalActionDetectionMAP(tiou_thresholds=THRESHOLDS)
        for idx in batches[rank]:
            metric.update([preds[i] for i in idx], [targets[i] for i in idx])
        values = metric.compute()
        torch.save(values, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_processes_equal_one_process(tmp_path):
    preds, targets = make_videos(n_videos=7)
    # DistributedSampler(shuffle=False) with 7 videos on 2 ranks pads to 8 by
    # repeating video 0: rank 0 gets 0, 2, 4, 6 and rank 1 gets 1, 3, 5, 0.
    # Uneven batches on purpose.
    batches = [[[0, 2, 4], [6]], [[1], [3, 5, 0]]]
    single = run_metric(preds, targets, [[0, 1, 2, 3, 4, 5, 6]])
    out = str(tmp_path / "values")
    mp.spawn(
        _worker,
        args=(2, str(tmp_path / "init"), out, preds, targets, batches),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        assert_same(single, torch.load(f"{out}.{rank}"))


def _collection_worker(rank, world, init_file, out_file, preds, targets, batches) -> None:
    from salad_lightning.metrics.detection_calibration import DetectionCalibrationError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = _collection(DetectionCalibrationError)
        for idx in batches[rank]:
            metrics.update([preds[i] for i in idx], [targets[i] for i in idx])
        torch.save(metrics.compute(), f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def _collection(calibration_cls):
    from torchmetrics import MetricCollection

    return MetricCollection(
        {
            "map": TemporalActionDetectionMAP(tiou_thresholds=THRESHOLDS),
            "calibration": calibration_cls(n_bins=10),
        },
        compute_groups=False,
    )


@pytest.mark.ddp
def test_the_metric_collection_on_two_processes_equals_one_process(tmp_path):
    """mAP and calibration in one MetricCollection, as the module holds them: the same
    values from two processes (uneven, with a repeated video) as from one."""
    from salad_lightning.metrics.detection_calibration import DetectionCalibrationError

    preds, targets = make_videos(n_videos=7)
    batches = [[[0, 2, 4], [6]], [[1], [3, 5, 0]]]
    single = _collection(DetectionCalibrationError)
    single.update(preds, targets)
    ref = single.compute()
    assert 0 < float(ref["ece"]) < 1 and len(ref["confidences"]) > 0
    out = str(tmp_path / "values")
    mp.spawn(
        _collection_worker,
        args=(2, str(tmp_path / "init"), out, preds, targets, batches),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert set(got) == set(ref)
        assert float(got["ece"]) == pytest.approx(float(ref["ece"]), abs=1e-12)
        assert got["mAP"] == pytest.approx(float(ref["mAP"]), abs=1e-12)
        assert sorted(got["confidences"].tolist()) == sorted(ref["confidences"].tolist())
