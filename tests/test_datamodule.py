"""SaladDataModule: splits, loaders under the batch contract, Lightning, DDP shares."""

from __future__ import annotations

import math
import pickle
import shutil
import time
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from salad_lightning.data.annotations import DataWarning
from salad_lightning.data.batch import Batch
from salad_lightning.data.datamodule import SaladDataModule, holdout_split
from salad_lightning.data.dataset import max_gt_steps
from salad_lightning.data.detections import VideoGroundTruth
from salad_lightning.data.sampler import BucketBatchSampler


def _thumos_dm(folder, **kw) -> SaladDataModule:
    args = dict(
        annotation_file=folder.annotation_file,
        feature_dir=folder.feature_dir,
        feature_dim=folder.feature_dim,
        max_seq_len=256,
        batch_size=4,
        eval_batch_size=8,
    )
    return SaladDataModule(**{**args, **kw})


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        yield


def _check_batch(b, c, max_len=None):
    assert isinstance(b, Batch)
    assert torch.equal(b.lengths_host, b.lengths.cpu())
    bsz, t, ch = b.features.shape
    assert ch == c and b.frame_mask.shape == (bsz, t)
    assert b.lengths.tolist() == b.frame_mask.sum(1).tolist() and int(b.lengths.max()) == t
    if max_len is not None:
        assert t <= max_len
    n = b.gt_segments.shape[1]
    assert b.gt_segments.shape == (bsz, n, 2) and b.gt_labels.shape == b.gt_mask.shape == (
        bsz,
        n,
    )
    for k in ("scale", "offset", "duration"):
        assert getattr(b, k).shape == (bsz,) and getattr(b, k).dtype == torch.float64
    assert len(b.meta) == bsz
    for m in b.meta:
        assert {"video_id", "duration", "fps", "crop_start", "gt_index", "ground_truth"} <= set(m)
        truth = m["ground_truth"]
        assert isinstance(truth, VideoGroundTruth) and truth.video_id == m["video_id"]
        assert truth.duration == m["duration"]


def test_thumos_splits_and_facts(thumos_folder, quiet):
    dm = _thumos_dm(thumos_folder, feature_dim=None)
    # before setup: read from the annotation file and one .npy header
    assert dm.num_classes == 20 and dm.class_index.names[0] == "BaseballPitch"
    assert dm.feature_dim == 8
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert (len(train), len(val)) == (180, 20)  # a 10% holdout of Validation
    assert not set(train.video_ids) & set(val.video_ids)
    assert all(v.startswith("video_validation") for v in train.video_ids + val.video_ids)
    assert train.training and not val.training
    dm.setup("test")
    assert len(dm.datasets["test"]) == 212
    longest = max_gt_steps(train.videos, train.mappings)
    assert dm.max_offset == longest


def test_holdout_is_deterministic_and_seeded(thumos_folder, quiet):
    def val_ids(seed):
        dm = _thumos_dm(thumos_folder, split_seed=seed)
        _, val = dm._train_val_records()
        return sorted(v.video_id for v in val)

    assert val_ids(0) == val_ids(0)
    assert val_ids(0) != val_ids(1)
    # the order of the JSON does not matter: ids are sorted before the permutation
    dm = _thumos_dm(thumos_folder)
    recs = dm.annotations.select("Validation")
    a = holdout_split(recs, 0.1, 0)[1]
    b = holdout_split(recs[::-1], 0.1, 0)[1]
    assert {v.video_id for v in a} == {v.video_id for v in b}
    assert [len(holdout_split(recs[:n], 0.1, 0)[1]) for n in (1, 2, 10, 14, 15)] == [0, 1, 1, 1, 2]


def test_loaders_follow_the_contract(thumos_folder, quiet):
    dm = _thumos_dm(thumos_folder)
    dm.setup("fit")
    dm.setup("test")
    tl = dm.train_dataloader()
    assert isinstance(tl.batch_sampler, BucketBatchSampler)
    seen = []
    for b in tl:
        _check_batch(b, 8, max_len=256)
        seen += [m["video_id"] for m in b.meta]
    assert sorted(seen) == sorted(dm.datasets["train"].video_ids)
    val = list(dm.val_dataloader())
    assert sum(len(b.meta) for b in val) == 20
    for b in val:
        _check_batch(b, 8)
        assert all(m["crop_start"] == 0 for m in b.meta)
    full = [m for b in dm.whole_train_dataloader() for m in b.meta]
    assert sorted(m["video_id"] for m in full) == sorted(dm.datasets["train"].video_ids)
    assert all(m["crop_start"] == 0 for m in full)
    test = list(dm.test_dataloader())
    assert len(test) == math.ceil(212 / 8)
    longest = max(int(b.lengths.max()) for b in test)
    assert longest == max(dm.datasets["test"].lengths) > 256  # whole videos


def test_explicit_val_subset_and_no_val(thumos_folder, quiet):
    dm = _thumos_dm(thumos_folder, val_subset="test")
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 212 and len(dm.datasets["train"]) == 200
    dm = _thumos_dm(thumos_folder, val_holdout=0.0)
    dm.setup("fit")
    assert "val" not in dm.datasets and dm.val_dataloader() == []


def test_missing_subset_through_the_datamodule(thumos_folder, quiet):
    dm = _thumos_dm(thumos_folder, train_subset="training")
    with pytest.raises(
        ValueError, match=r"subset 'training' has no videos; subsets present: Test \(212"
    ):
        dm.setup("fit")


def test_picklable_and_fast_to_construct(thumos_folder, quiet):
    t0 = time.perf_counter()
    dm = _thumos_dm(thumos_folder)
    assert time.perf_counter() - t0 < 0.5  # nothing is read in __init__
    dm.setup("fit")
    again = pickle.loads(pickle.dumps(dm))
    assert again.datasets["train"].video_ids == dm.datasets["train"].video_ids


def test_facts_a_model_is_built_with(thumos_folder, tmp_path, quiet):
    """`facts`: the class names (from the annotation file, or a class index file), the
    longest training ground truth when fitting, and the evaluated splits' videos without
    features, as published (what the evaluation store is given)."""
    dm = _thumos_dm(thumos_folder)
    facts = dm.facts(["fit", "test"])
    assert facts.class_names[:2] == ("BaseballPitch", "BasketballDunk")
    assert facts.model_inputs == {"max_offset": dm.max_offset} and dm.max_offset > 0
    assert facts.ground_truth_only == {"val": (), "test": ()}
    assert _thumos_dm(thumos_folder).facts(["test"]).model_inputs == {}  # not fitting
    dm.class_index.save(tmp_path / "classes.json")
    named = _thumos_dm(thumos_folder, class_index_file=str(tmp_path / "classes.json"))
    assert named.num_classes == 20 and named.facts([]).class_names == facts.class_names
    # a test video without features: skipped, and given to the store as ground truth only
    feats = tmp_path / "feats"
    shutil.copytree(thumos_folder.feature_dir, feats)
    gone = "video_test_0000004"
    (feats / f"{gone}.npy").unlink()
    dm = _thumos_dm(thumos_folder, feature_dir=str(feats), skip_missing=True)
    with pytest.warns(Warning):
        only = dm.facts(["test"]).ground_truth_only["test"]
    published = dm.annotations.videos[gone]
    assert [g.video_id for g in only] == [gone]
    np.testing.assert_array_equal(only[0].segments, published.raw_segments)
    assert only[0].duration == published.duration and len(only[0].labels) > 0


def test_activitynet_layout(anet_folder):
    dm = SaladDataModule(
        annotation_file=anet_folder.annotation_file,
        feature_dir=anet_folder.feature_dir,
        prefix="v_",
        feature_dim=16,
        train_subset="training",
        test_subset="validation",
        resize_to=100,
        max_seq_len=100,
        batch_size=2,
    )
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 6
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for b in loader:
            _check_batch(b, 16)
            assert b.features.shape[1] == 100
    assert dm.num_classes == 4
    longest = max(
        float(np.max(v.segments[:, 1] - v.segments[:, 0]) / (v.duration / 100))
        for v in dm.datasets["train"].videos
    )
    assert dm.max_offset == math.ceil(longest)


def test_bmn_csv_layout(bmn_csv_folder):
    dm = SaladDataModule(
        annotation_file=bmn_csv_folder.annotation_file,
        feature_dir=bmn_csv_folder.feature_dir,
        prefix="v_",
        ext=".csv",
        train_subset="training",
        test_subset="validation",
        resize_to=100,
        batch_size=2,
    )
    assert dm.feature_dim == 12
    dm.setup("fit")
    for b in dm.train_dataloader():
        _check_batch(b, 12)


def test_predict_a_folder_without_annotations(tmp_path):
    from conftest import write_features

    write_features(tmp_path, {"clipA": 75, "clipB": 30}, 6)
    dm = SaladDataModule(feature_dir=str(tmp_path), default_fps=25.0, stride=4, window=16)
    dm.setup("predict")
    ds = dm.datasets["predict"]
    assert ds.video_ids == ["clipA", "clipB"]
    # duration = T * stride / fps: 75 * 4 / 25 = 12 s, 30 * 4 / 25 = 4.8 s
    assert [v.duration for v in ds.videos] == [12.0, 4.8]
    (b,) = list(dm.predict_dataloader())
    _check_batch(b, 6)
    assert b.gt_segments.shape == (2, 0, 2)
    one = SaladDataModule(predict_path=str(tmp_path / "clipB.npy"), default_fps=25.0)
    one.setup("predict")
    assert one.datasets["predict"].video_ids == ["clipB"]
    with pytest.raises(
        ValueError,
        match="video clipA is not in the annotation file; set dataset.datamodule.default_fps",
    ):
        SaladDataModule(feature_dir=str(tmp_path)).setup("predict")


def test_predict_one_file_drops_the_dataset_prefix_and_needs_a_fixed_stride(tmp_path):
    from conftest import write_features

    write_features(tmp_path, {"v_clipC": 40}, 6)
    one = SaladDataModule(predict_path=str(tmp_path / "v_clipC.npy"), prefix="v_", default_fps=10.0)
    one.setup("predict")
    ds = one.datasets["predict"]
    assert ds.video_ids == ["clipC"]  # the id the annotation file would use
    assert ds.videos[0].duration == 40 * 4 / 10.0  # stride 4 (the default) / 10 fps
    resized = SaladDataModule(
        predict_path=str(tmp_path / "v_clipC.npy"), prefix="v_", default_fps=10.0, resize_to=8
    )
    with pytest.raises(ValueError, match=r"video clipC .* resize_to=8 steps"):
        resized.setup("predict")


def test_predict_takes_durations_from_the_annotation_file(thumos_folder, quiet):
    dm = _thumos_dm(thumos_folder)
    dm.setup("predict")
    ds = dm.datasets["predict"]
    assert len(ds) == 412
    i = ds.video_ids.index("video_test_0000591")
    assert (ds.videos[i].duration, ds.videos[i].fps) == (33.57, 29.97)


class _Recorder(pl.LightningModule):
    """A stand-in model: checks every batch and remembers which videos it saw."""

    def __init__(self, c):
        super().__init__()
        self.lin = torch.nn.Linear(c, 1)
        self.seen = {"train": [], "val": [], "test": []}
        self.c = c

    def _step(self, batch, split):
        _check_batch(batch, self.c)
        self.seen[split].append([m["video_id"] for m in batch.meta])
        return self.lin(batch.features).masked_select(batch.frame_mask[..., None]).mean()

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def predict_step(self, batch, _):
        _check_batch(batch, self.c)
        return [m["video_id"] for m in batch.meta]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_fit_validate_test(thumos_folder, quiet, tmp_path):
    dm = _thumos_dm(thumos_folder, max_seq_len=64, batch_size=16, eval_batch_size=16)
    model = _Recorder(8)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    epochs = model.seen["train"]
    n = len(epochs) // 2
    assert len(epochs) == 2 * math.ceil(180 / 16)
    assert epochs[:n] != epochs[n:]  # Lightning's set_epoch reached the sampler
    assert trainer.train_dataloader.batch_sampler.epoch == 1
    assert sum(len(b) for b in model.seen["val"]) == 2 * 20
    trainer.test(model, datamodule=dm)
    assert sorted(v for b in model.seen["test"] for v in b) == sorted(dm.datasets["test"].video_ids)
    from conftest import write_features

    write_features(tmp_path / "new", {f"new{i}": 20 + i for i in range(5)}, 8)
    dm = SaladDataModule(predict_path=str(tmp_path / "new"), default_fps=30.0, eval_batch_size=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
        predicted = trainer.predict(model, datamodule=dm)
    assert sorted(v for b in predicted for v in b) == [f"new{i}" for i in range(5)]


def _ddp_worker(rank, world, init_file, folder, out):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        dm = _thumos_dm(folder, eval_batch_size=4)
        dm.setup("fit")
        dm.setup("test")
    got = {}
    for split, loader in (
        ("train", dm.train_dataloader()),
        ("val", dm.val_dataloader()),
        ("test", dm.test_dataloader()),
    ):
        # the samplers take their rank from torch.distributed
        assert loader.batch_sampler.rank == rank and loader.batch_sampler.num_replicas == world
        got[split] = [[m["video_id"] for m in b.meta] for b in loader]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, got)
    if rank == 0:
        torch.save(gathered, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_read_disjoint_shares(thumos_folder, tmp_path):
    out = tmp_path / "seen.pt"
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, str(tmp_path / "init"), thumos_folder, str(out)), nprocs=2
    )
    seen = torch.load(out, weights_only=False)
    expected = {"train": 180, "val": 20, "test": 212}
    for split, n in expected.items():
        a, b = seen[0][split], seen[1][split]
        assert len(a) == len(b)  # lock-step
        ids_a = [v for batch in a for v in batch]
        ids_b = [v for batch in b for v in batch]
        assert not set(ids_a) & set(ids_b)
        assert len(ids_a) + len(ids_b) == len(set(ids_a) | set(ids_b)) == n
