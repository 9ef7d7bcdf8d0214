"""Samples and batches: index units by hand, crops, collate contract, checks, real formats."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from salad_lightning.data.annotations import DataWarning, VideoRecord, load_annotations
from salad_lightning.data.dataset import TADDataset, collate_videos, max_gt_steps, video_mapping
from salad_lightning.data.features import FeatureSource
from salad_lightning.data.mapping import TimeMapping

BATCH_KEYS = {
    "features",
    "frame_mask",
    "lengths",
    "gt_segments",
    "gt_labels",
    "gt_mask",
    "scale",
    "offset",
    "duration",
    "meta",
    "lengths_host",
}
META_KEYS = {
    "video_id",
    "duration",
    "fps",
    "crop_start",
    "gt_index",
    "ground_truth",
}


def _thumos(folder, subset, dim=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ann = load_annotations(folder.annotation_file)
    src = FeatureSource(feature_dir=folder.feature_dir, feature_dim=dim or folder.feature_dim)
    return ann, TADDataset(ann.select(subset), src, stride=4, window=16, **kw)


def _record(vid="v", duration=60.0, fps=30.0, segments=(), labels=None):
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    labs = np.zeros(len(segs), np.int64) if labels is None else np.asarray(labels, np.int64)
    return VideoRecord(vid, "train", duration, fps, segs, labs)


# -- seconds -> index -> seconds, hand-computed (stride 4, window 16) --------------
# i = t * fps / 4 - 2 ; t = (4 i + 8) / fps
HAND = [
    # fps 30: i = 7.5 t - 2
    (30.0, [0.2, 1.1, 11.4, 12.2], [-0.5, 6.25, 83.5, 89.5]),
    # fps 29.97: i = 7.4925 t - 2
    (29.97, [10.5, 11.6, 24.3, 25.9], [76.67125, 84.913, 180.06775, 192.05575]),
    # fps 25: i = 6.25 t - 2
    (25.0, [0.6, 8.2, 25.7, 33.9], [1.75, 49.25, 158.625, 209.875]),
]


@pytest.mark.parametrize(("fps", "seconds", "index"), HAND)
def test_round_trip_by_hand(fps, seconds, index):
    m = TimeMapping.from_clip(fps=fps, stride=4, window=16, duration=1000.0)
    np.testing.assert_allclose(m.to_index(seconds), index, rtol=0, atol=1e-9)
    np.testing.assert_allclose(m.to_seconds(index), seconds, rtol=0, atol=1e-9)


def test_to_seconds_clamps_to_the_video():
    m = TimeMapping.from_clip(fps=30.0, stride=4, window=16, duration=33.83)
    # index -3 -> (-12 + 8) / 30 < 0 ; index 300 -> 1208 / 30 = 40.27 > 33.83
    np.testing.assert_allclose(m.to_seconds([-3.0, -2.0, 300.0]), [0.0, 0.0, 33.83])


@pytest.mark.parametrize(
    ("vid", "first_two"),
    [
        ("video_test_0000004", [[-0.5, 6.25], [83.5, 89.5]]),  # 30 fps
        ("video_test_0000591", [[76.67125, 84.913], [180.06775, 192.05575]]),  # 29.97 fps
        ("video_test_0001058", [[1.75, 49.25], [158.625, 209.875]]),  # 25 fps
    ],
)
def test_real_thumos_videos_in_index_units(thumos_folder, vid, first_two):
    ann, ds = _thumos(thumos_folder, "Test")
    sample = ds[ds.video_ids.index(vid)]
    np.testing.assert_allclose(sample["gt_segments"][:2].numpy(), first_two, atol=1e-4)
    assert sample["features"].shape == (thumos_folder.lengths[vid], 8)
    assert sample["meta"]["crop_start"] == 0
    back = sample["mapping"].to_seconds(sample["gt_segments"].double().numpy())
    np.testing.assert_allclose(back, ann.videos[vid].segments, atol=1e-5)


def test_real_thumos_file_against_random_features(thumos_folder):
    """Every one of the 412 videos loads whole; lengths and fps come from the JSON."""
    for subset, n in (("Validation", 200), ("Test", 212)):
        _, ds = _thumos(thumos_folder, subset)
        assert len(ds) == n
        assert ds.lengths == [thumos_folder.lengths[v] for v in ds.video_ids]
        for i in range(len(ds)):
            s = ds[i]
            assert s["features"].dtype == torch.float32
            assert s["features"].shape == (ds.lengths[i], 8)
            assert s["gt_segments"].shape == (ds.videos[i].num_segments, 2)


def test_real_thumos_at_2048_dims(tmp_path, thumos_json):
    from conftest import FeatureFolder, clip_length, write_features

    ids = ["video_test_0000004", "video_test_0000591"]
    fps = {"video_test_0000004": 30.0, "video_test_0000591": 29.97}
    dur = {"video_test_0000004": 33.83, "video_test_0000591": 33.57}
    lengths = {v: clip_length(dur[v], fps[v]) for v in ids}
    write_features(tmp_path, lengths, 2048)
    folder = FeatureFolder(str(thumos_json), str(tmp_path), 2048, lengths)
    with pytest.warns(DataWarning, match="210 of 212 videos have no feature file"):
        _, ds = _thumos(folder, "Test", skip_missing=True)
    assert sorted(ds.video_ids) == ids
    batch = collate_videos([ds[0], ds[1]])
    assert batch.features.shape == (2, max(lengths.values()), 2048)


def test_downsampled_and_resized_mappings_by_hand():
    v = _record(duration=50.0, fps=30.0, segments=[[10.0, 20.0]])
    # downsample 4: stride 16, window 28 frames -> i = 30 t / 16 - 14 / 16
    m = video_mapping(v, stride=4, window=16, downsample=4)
    np.testing.assert_allclose(m.to_index([10.0, 20.0]), [17.875, 36.625])
    # resized to 100 steps over 50 s: i = t / 0.5 - 0.5
    m = video_mapping(v, resize_to=100)
    np.testing.assert_allclose(m.to_index([10.0, 20.0]), [19.5, 39.5])


def test_training_crop_by_hand(make_folder, monkeypatch):
    videos = {
        "v": {
            "subset": "train",
            "duration": 60.0,
            "fps": 30,
            "annotations": [
                {"label": "A", "segment": [10.0, 20.0]},  # index [73, 148]
                {"label": "A", "segment": [2.0, 14.0]},  # index [13, 103]
                {"label": "B", "segment": [30.0, 31.0]},  # index [223, 230.5]
            ],
        }
    }
    folder = make_folder(videos, dim=3)
    ann = load_annotations(folder.annotation_file)
    src = FeatureSource(feature_dir=folder.feature_dir)
    ds = TADDataset(ann.select("train"), src, training=True, max_seq_len=100, default_fps=30)
    monkeypatch.setattr(torch, "randint", lambda lo, hi, size: torch.tensor([100]))
    s = ds[0]
    # crop [100, 200): gt 0 -> [-27, 48] clipped to [-0.5, 48]: 48.5 / 75 = 0.65 kept;
    # gt 1 -> [-87, 3] clipped to [-0.5, 3]: 3.5 / 90 = 0.04 dropped; gt 2 outside
    np.testing.assert_allclose(s["gt_segments"].numpy(), [[-0.5, 48.0]])
    assert s["gt_labels"].tolist() == [0]
    assert s["meta"]["gt_index"].tolist() == [0]
    assert s["meta"]["crop_start"] == 100
    assert s["features"].shape == (100, 3)
    raw = np.load(f"{folder.feature_dir}/v.npy")
    np.testing.assert_array_equal(s["features"].numpy(), raw[100:200])
    assert s["mapping"].offset == pytest.approx(8 / 30 + 100 * 4 / 30)
    # the whole video's ground truth stays in the meta, for the evaluation store
    truth = s["meta"]["ground_truth"]
    np.testing.assert_array_equal(truth.segments, ann.videos["v"].raw_segments)
    assert truth.labels.tolist() == [0, 0, 1] and truth.video_id == "v"  # A, A, B


def test_random_crops_keep_their_invariants(thumos_folder):
    torch.manual_seed(0)
    _, ds = _thumos(thumos_folder, "Validation", training=True, max_seq_len=256)
    starts = set()
    for i in range(0, 200, 5):
        s, base = ds[i], ds.mappings[i]
        start, n = s["meta"]["crop_start"], s["features"].shape[0]
        starts.add(start)
        assert n == min(256, ds.lengths[i]) and 0 <= start <= ds.lengths[i] - n
        full = base.to_index(ds.videos[i].segments).reshape(-1, 2) - start
        kept = s["meta"]["gt_index"]
        lo = -0.5 if start > 0 else -np.inf
        hi = n - 0.5 if start + n < ds.lengths[i] else np.inf
        clipped = np.stack([np.maximum(full[:, 0], lo), np.minimum(full[:, 1], hi)], 1)
        share = (clipped[:, 1] - clipped[:, 0]) / (full[:, 1] - full[:, 0])
        assert kept.tolist() == np.flatnonzero(share >= 0.3).tolist()
        np.testing.assert_allclose(s["gt_segments"].numpy(), clipped[kept], atol=1e-3)
        assert s["mapping"].offset == pytest.approx(base.offset + start * base.scale)
    assert len(starts) > 10  # crops do move


def test_eval_uses_whole_videos(thumos_folder):
    _, ds = _thumos(thumos_folder, "Test", training=False, max_seq_len=256)
    i = int(np.argmax(ds.lengths))
    assert ds[i]["features"].shape[0] == ds.lengths[i] > 256


def test_collate_matches_the_contract():
    def sample(vid, t, segs, crop_start=0):
        m = TimeMapping.from_clip(fps=30, stride=4, window=16, duration=t / 7.5)
        segs = torch.tensor(segs, dtype=torch.float32).reshape(-1, 2)
        return {
            "features": torch.ones(t, 3),
            "gt_segments": segs,
            "gt_labels": torch.arange(len(segs)),
            "mapping": m.shifted(crop_start),
            "meta": {"video_id": vid, "crop_start": crop_start},
        }

    b = collate_videos([sample("a", 5, [[0, 1]]), sample("b", 3, [[0, 1], [1, 2]], crop_start=2)])
    assert {f.name for f in dataclasses.fields(b)} == BATCH_KEYS
    assert b.features.shape == (2, 5, 3) and b.features[1, 3:].abs().sum() == 0
    assert b.frame_mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert b.lengths.tolist() == [5, 3] and b.lengths.dtype == torch.int64
    assert b.gt_segments.shape == (2, 2, 2) and b.gt_segments.dtype == torch.float32
    assert b.gt_mask.tolist() == [[True, False], [True, True]]
    assert b.gt_labels.tolist() == [[0, 0], [0, 1]] and b.gt_labels.dtype == torch.int64
    for key in ("scale", "offset", "duration"):
        assert getattr(b, key).dtype == torch.float64 and getattr(b, key).shape == (2,)
    assert b.offset[1].item() == pytest.approx(8 / 30 + 2 * 4 / 30)
    assert [m["video_id"] for m in b.meta] == ["a", "b"]
    empty = collate_videos([sample("a", 4, []), sample("b", 2, [])])
    assert empty.gt_segments.shape == (2, 0, 2) and empty.gt_mask.shape == (2, 0)
    assert b.lengths_host.tolist() == [5, 3] and b.lengths_host.device.type == "cpu"


def test_sample_meta_keys(thumos_folder):
    _, ds = _thumos(thumos_folder, "Test")
    b = collate_videos([ds[0], ds[1]])
    assert {f.name for f in dataclasses.fields(b)} == BATCH_KEYS
    assert META_KEYS <= set(b.meta[0])


def test_max_gt_steps_by_hand(make_folder):
    videos = {
        "a": {
            "subset": "train",
            "duration": 60.0,
            "fps": 30,
            "annotations": [{"label": "A", "segment": [1.0, 11.1]}],
        },
        "b": {
            "subset": "train",
            "duration": 60.0,
            "fps": 25,
            "annotations": [{"label": "A", "segment": [0.0, 12.0]}],
        },
    }
    folder = make_folder(videos)
    ds = TADDataset(
        load_annotations(folder.annotation_file).select("train"),
        FeatureSource(feature_dir=folder.feature_dir),
    )
    # a: 10.1 s * 30 / 4 = 75.75 steps; b: 12 s * 25 / 4 = 75 steps -> ceil(75.75) = 76
    assert max_gt_steps(ds.videos, ds.mappings) == 76


def test_thumos_longest_validation_segment(thumos_folder):
    _, ds = _thumos(thumos_folder, "Validation")
    # video_validation_0000158: 118.1 s at 30 fps, stride 4 -> 885.75 steps
    assert max_gt_steps(ds.videos, ds.mappings) == 886


# -- input checks ----------------------------------------------------------------
def _three_videos(make_folder, **kw):
    videos = {
        f"vid{i}": {"subset": "train", "duration": 20.0, "fps": 30, "annotations": []}
        for i in range(3)
    }
    return make_folder(videos, **kw)


def test_missing_files_listed_up_front(make_folder):
    folder = _three_videos(make_folder, skip=["vid0", "vid2"])
    ann = load_annotations(folder.annotation_file)
    src = FeatureSource(feature_dir=folder.feature_dir)
    with pytest.raises(
        FileNotFoundError,
        match=r"train: 2 of 3 videos have no feature file \(.*/features/\{video_id\}.npy\): vid0, vid2; to run without them, set dataset.datamodule.skip_missing=true",
    ):
        TADDataset(ann.select("train"), src, name="train")
    with pytest.warns(
        DataWarning, match=r"train: 2 of 3 videos have no feature file .*: vid0, vid2; skipped"
    ):
        ds = TADDataset(ann.select("train"), src, name="train", skip_missing=True)
    assert ds.video_ids == ["vid1"]


def test_many_missing_files_show_the_first_few(make_folder):
    videos = {
        f"v{i:02d}": {"subset": "s", "duration": 9.0, "fps": 30, "annotations": []}
        for i in range(12)
    }
    folder = make_folder(videos, skip=list(videos))
    ann = load_annotations(folder.annotation_file)
    with pytest.raises(
        FileNotFoundError, match=r"12 of 12 videos .*: v00, v01, v02, v03, v04, \.\.\. \(7 more\)"
    ):
        TADDataset(ann.select("s"), FeatureSource(feature_dir=folder.feature_dir))


def test_wrong_dimension_fails_at_construction(make_folder):
    folder = _three_videos(make_folder, dim=4)
    ann = load_annotations(folder.annotation_file)
    src = FeatureSource(feature_dir=folder.feature_dir, feature_dim=2048)
    with pytest.raises(
        ValueError, match=r"vid0.npy \(video vid0\): expected feature_dim 2048, found 4"
    ):
        TADDataset(ann.select("train"), src)


@pytest.mark.parametrize("resize_to", [None, 50])
def test_nan_fails_on_load_naming_the_file(make_folder, resize_to):
    folder = _three_videos(make_folder, dim=4)
    path = f"{folder.feature_dir}/vid1.npy"
    x = np.load(path)
    x[5, 2] = np.nan
    np.save(path, x)
    ds = TADDataset(
        load_annotations(folder.annotation_file).select("train"),
        FeatureSource(feature_dir=folder.feature_dir),
        resize_to=resize_to,
    )
    ds[0]
    with pytest.raises(
        ValueError, match=r"vid1.npy \(video vid1\): features must be finite, found 1 NaN and 0 Inf"
    ):
        ds[1]


def test_length_far_from_duration_warns(make_folder):
    # 20 s at 30 fps, stride 4: about 150 clips expected
    folder = _three_videos(make_folder, lengths={"vid0": 150, "vid1": 40, "vid2": 400})
    ann = load_annotations(folder.annotation_file)
    with pytest.warns(
        DataWarning,
        match=r"2 videos have a feature length outside \(0.5, 2.0\) x duration\*fps/stride \(stride 4\): "
        r"vid1 \(40 steps, expected ~150\), vid2 \(400 steps, expected ~150\)",
    ):
        TADDataset(ann.select("train"), FeatureSource(feature_dir=folder.feature_dir))


def test_length_check_for_pt_on_load(make_folder):
    folder = _three_videos(make_folder, lengths={"vid0": 150, "vid1": 30, "vid2": 150}, ext=".pt")
    ann = load_annotations(folder.annotation_file)
    ds = TADDataset(ann.select("train"), FeatureSource(feature_dir=folder.feature_dir, ext=".pt"))
    with pytest.warns(DataWarning, match=r"vid1.pt \(video vid1\): 30 steps, expected ~150"):
        ds[1]


def test_fps_needed_for_clip_features(make_folder):
    folder = make_folder({"nofps": {"subset": "train", "duration": 20.0, "annotations": []}})
    ann = load_annotations(folder.annotation_file)
    with pytest.raises(
        ValueError, match="video nofps: no 'fps' in the annotation file and no default_fps"
    ):
        TADDataset(ann.select("train"), FeatureSource(feature_dir=folder.feature_dir))
    ds = TADDataset(
        ann.select("train"), FeatureSource(feature_dir=folder.feature_dir), default_fps=30
    )
    assert ds[0]["meta"]["fps"] == 30


# -- the other layouts -------------------------------------------------------------
def test_activitynet13_resized_to_100(anet_folder):
    ann = load_annotations(anet_folder.annotation_file)
    src = FeatureSource(feature_dir=anet_folder.feature_dir, prefix="v_", feature_dim=16)
    ds = TADDataset(ann.select("training"), src, resize_to=100)
    assert ds.lengths == [100] * len(ds)
    b = collate_videos([ds[i] for i in range(len(ds))])
    assert b.features.shape == (len(ds), 100, 16) and b.frame_mask.all()
    v = ds.videos[0]
    np.testing.assert_allclose(b.scale[0].item(), v.duration / 100)
    # i = t / (duration / 100) - 0.5
    expected = v.segments / (v.duration / 100) - 0.5
    np.testing.assert_allclose(b.gt_segments[0, : v.num_segments].numpy(), expected, rtol=1e-5)


def test_bmn_csv_layout(bmn_csv_folder):
    ann = load_annotations(bmn_csv_folder.annotation_file)
    src = FeatureSource(
        feature_dir=bmn_csv_folder.feature_dir, prefix="v_", ext=".csv", feature_dim=12
    )
    ds = TADDataset(ann.select("validation"), src, resize_to=100)
    b = collate_videos([ds[i] for i in range(len(ds))])
    assert b.features.shape == (len(ds), 100, 12)
    assert b.gt_mask.sum().item() == sum(v.num_segments for v in ds.videos)
