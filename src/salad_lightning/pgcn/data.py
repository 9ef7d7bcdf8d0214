"""P-GCN's data: a first stage's proposals over the same videos, features and splits.

`PGCNDataModule` wraps the first stage's datamodule (`SaladDataModule`, built from the
first stage's dataset config) and reads the proposals it wrote for each split
(``<proposals_dir>/<split>.json``, `pgcn/proposals.py`). Each split's videos are the
datamodule's, whole (`SaladDataModule.whole_dataset`): the same feature files, time
mappings (`data/mapping.py`), ground truth as published and videos without features.

- **Training** (`PGCNTrainingSet`): every training video with ground truth has its pool
  (`pgcn/targets.py::label_proposals`, in seconds) and its child slots
  (`pgcn/graph.py::neighbour_slots`), made once; each item draws the video's 8 centres
  and their 21-node neighbourhoods from a generator seeded by (seed, epoch, index) (a
  resumed run draws as an uninterrupted one) and pools the features of those nodes
  only (`pgcn/features.py`, in feature-index units: the proposals' seconds through the
  video's `TimeMapping`). An epoch sees every training video ``epoch_multiplier``
  times (P-GCN: 20).
- **Evaluation** (`PGCNVideoSet`): every proposal of a video (its ``top_k`` best) is a
  centre; the neighbourhoods are drawn with a generator seeded by (seed, video index)
  (P-GCN samples at test time too); the item holds each proposal's features once and
  the (P, 21) node indices, gathered on the device in chunks
  (`pgcn/module.py::PGCNLitModule.detect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from salad_lightning.data.datamodule import SplitDataModule
from salad_lightning.data.dataset import TADDataset
from salad_lightning.data.sampler import BucketBatchSampler
from salad_lightning.pgcn.features import pool_proposal_features
from salad_lightning.pgcn.graph import neighbour_slots, sample_neighbourhoods
from salad_lightning.pgcn.proposals import VideoProposals, read_proposals
from salad_lightning.pgcn.targets import (
    RegressionStats,
    TrainingPool,
    label_proposals,
    sample_centres,
    sample_targets,
    samples_per_kind,
)

SPLIT_FILES = {
    "train": "train.json",
    "val": "val.json",
    "test": "test.json",
    "predict": "predict.json",
}
TEST_SEED = 777  # P-GCN seeds its test-time neighbourhood sampling with 777


def _features(item: dict[str, Any]) -> np.ndarray:
    x = item["features"]
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _pooled(x: np.ndarray, mapping, duration: float, segments: np.ndarray):
    """Activity and completeness features of ``segments`` (seconds) in ``x``'s index units,
    the completeness parts cut at the video's ends."""
    bounds = (float(mapping.to_index(0.0)), float(mapping.to_index(duration)))
    return pool_proposal_features(x, mapping.to_index(segments), bounds=bounds)


# ---------------------------------------------------------------------------- batches
@dataclass
class PGCNTrainBatch:
    """B videos' S sampled centres each: node features, labels, kinds, targets."""

    activity: Tensor  # (B, S, 21, C)
    completeness: Tensor  # (B, S, 21, 3C)
    labels: Tensor  # (B, S) int64: class + 1, 0 background
    kinds: Tensor  # (B, S) int64: foreground, incomplete, background
    reg_targets: Tensor  # (B, S, 2) normalised
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.activity.shape[0]

    def to(self, device, non_blocking: bool = False) -> PGCNTrainBatch:
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return PGCNTrainBatch(**moved, meta=self.meta)


@dataclass
class PGCNVideo:
    """One video's proposals ready for the network: each proposal's features once, and
    the (P, 21) nodes of the neighbourhood it is the centre of."""

    activity: Tensor  # (P, C)
    completeness: Tensor  # (P, 3C)
    nodes: Tensor  # (P, 21) int64
    segments: np.ndarray  # (P, 2) seconds

    def to(self, device, non_blocking: bool = False) -> PGCNVideo:
        return PGCNVideo(
            self.activity.to(device, non_blocking=non_blocking),
            self.completeness.to(device, non_blocking=non_blocking),
            self.nodes.to(device, non_blocking=non_blocking),
            self.segments,
        )


@dataclass
class PGCNEvalBatch:
    """Whole videos: their proposals (`PGCNVideo`) and meta (video id, duration, ground
    truth as published), as `DetectorModule.store_batch` reads them."""

    videos: list[PGCNVideo]
    meta: list[dict[str, Any]]

    @property
    def size(self) -> int:
        return len(self.videos)

    def to(self, device, non_blocking: bool = False) -> PGCNEvalBatch:
        return PGCNEvalBatch([v.to(device, non_blocking) for v in self.videos], self.meta)


def collate_train(items: Sequence[dict[str, Any]]) -> PGCNTrainBatch:
    def stack(key: str, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(np.stack([it[key] for it in items]), dtype=dtype)

    return PGCNTrainBatch(
        activity=stack("activity", torch.float32),
        completeness=stack("completeness", torch.float32),
        labels=stack("labels", torch.int64),
        kinds=stack("kinds", torch.int64),
        reg_targets=stack("reg_targets", torch.float32),
        meta=[{"video_id": it["video_id"]} for it in items],
    )


def collate_videos(items: Sequence[dict[str, Any]]) -> PGCNEvalBatch:
    return PGCNEvalBatch([it["video"] for it in items], [it["meta"] for it in items])


# ---------------------------------------------------------------------------- datasets
class PGCNTrainingSet(Dataset):
    """Training samples of the videos of ``videos`` (whole) that have ground truth."""

    def __init__(
        self,
        videos: TADDataset,
        proposals: dict[str, VideoProposals],
        *,
        per_video: int = 8,
        ratios: tuple[int, int, int] = (1, 6, 1),
        top_k: int | None = None,
        epoch_multiplier: int = 1,
        seed: int = 0,
        graph: dict[str, Any] | None = None,
    ) -> None:
        self.videos, self.per_video, self.ratios = videos, int(per_video), tuple(ratios)
        self.multiplier, self.seed = int(epoch_multiplier), int(seed)
        self.index: list[int] = []  # rows of `videos` used (with ground truth)
        self.pools: list[TrainingPool] = []
        self.slots: list[np.ndarray] = []
        for i, record in enumerate(videos.videos):
            truth = record.ground_truth()
            kept = (truth.segments[:, 1] > truth.segments[:, 0]) & (
                truth.segments[:, 0] < record.duration
            )
            if not kept.any():
                continue  # P-GCN trains on videos with ground truth only
            props = proposals[record.video_id]
            props = props if top_k is None else props.top(top_k)
            pool = label_proposals(props.segments, truth.segments, truth.labels, record.duration)
            self.index.append(i)
            self.pools.append(pool)
            self.slots.append(neighbour_slots(pool.segments, **(graph or {})))
        if not self.index:
            raise ValueError("P-GCN: no training video has ground truth to learn from")
        self.stats: RegressionStats | None = None  # set by the datamodule (all pools)

    def __len__(self) -> int:
        return len(self.index) * self.multiplier

    @property
    def sample_lengths(self) -> list[int]:
        return [self.per_video] * len(self)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        k, epoch = item if isinstance(item, tuple) else (item, 0)
        j = k % len(self.index)
        rng = np.random.default_rng([self.seed, int(epoch), int(k)])
        pool, record = self.pools[j], self.videos.videos[self.index[j]]
        sample = self.videos[self.index[j]]
        centres, kinds = sample_centres(
            pool, rng, per_video=self.per_video, ratios=self.ratios, video_id=record.video_id
        )
        nodes = sample_neighbourhoods(self.slots[j], centres, rng)
        used, inverse = np.unique(nodes, return_inverse=True)
        act, comp = _pooled(
            _features(sample), sample["mapping"], record.duration, pool.segments[used]
        )
        labels, reg = sample_targets(pool, centres, kinds, self.stats)
        shape = nodes.shape
        return {
            "activity": act[inverse.reshape(-1)].reshape(*shape, -1),
            "completeness": comp[inverse.reshape(-1)].reshape(*shape, -1),
            "labels": labels,
            "kinds": kinds,
            "reg_targets": reg,
            "video_id": record.video_id,
        }


class PGCNVideoSet(Dataset):
    """Whole videos with their ``top_k`` best proposals, each proposal a centre."""

    def __init__(
        self,
        videos: TADDataset,
        proposals: dict[str, VideoProposals],
        *,
        top_k: int | None = 800,
        seed: int = TEST_SEED,
        graph: dict[str, Any] | None = None,
    ) -> None:
        self.videos, self.top_k, self.seed, self.graph = videos, top_k, int(seed), graph or {}
        self.proposals = proposals

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def sample_lengths(self) -> list[int]:
        return list(self.videos.lengths)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        i = item[0] if isinstance(item, tuple) else item
        sample = self.videos[i]
        record = self.videos.videos[i]
        props = self.proposals[record.video_id]
        props = props if self.top_k is None else props.top(self.top_k)
        seg = np.clip(props.segments, 0.0, record.duration)
        seg = seg[seg[:, 1] > seg[:, 0]]
        rng = np.random.default_rng([self.seed, i])
        if len(seg):
            nodes = sample_neighbourhoods(
                neighbour_slots(seg, **self.graph), np.arange(len(seg)), rng
            )
        else:
            nodes = np.zeros((0, 21), dtype=np.int64)
        act, comp = _pooled(_features(sample), sample["mapping"], record.duration, seg)
        video = PGCNVideo(
            torch.from_numpy(np.ascontiguousarray(act, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(comp, dtype=np.float32)),
            torch.from_numpy(nodes),
            seg,
        )
        return {"video": video, "meta": sample["meta"]}


# ---------------------------------------------------------------------------- datamodule
class PGCNDataModule(SplitDataModule):
    """The first stage's videos and splits (``base``) with its proposals.

    Args:
        base: the first stage's datamodule (its dataset config, as the first stage ran).
        first_stage: the first stage's run folder; its ``proposals/`` holds
            ``train.json``, ``val.json``, ``test.json`` (and ``predict.json``), written by
            ``mode=proposals`` from one of its checkpoints on this data (checked: a file
            made from another run's checkpoint or another annotation file is refused).
        per_video, ratios: training samples per video and the kinds' ratio (P-GCN: 8,
            1 : 6 : 1).
        batch_size: training videos per batch (P-GCN: 32); ``eval_batch_size``: videos
            per evaluation batch.
        epoch_multiplier: times an epoch sees each training video (P-GCN: 20).
        train_top_k / test_top_k: the best proposals per video used (None: all; P-GCN's
            THUMOS14 test: 800).
        graph: `neighbour_slots`' settings (P-GCN's by default).
    """

    def __init__(
        self,
        *,
        base: Any,
        first_stage: str,
        per_video: int = 8,
        ratios: Sequence[int] = (1, 6, 1),
        batch_size: int = 32,
        eval_batch_size: int = 1,
        epoch_multiplier: int = 1,
        train_top_k: int | None = None,
        test_top_k: int | None = 800,
        graph: dict[str, Any] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.base = base
        self.first_stage = Path(first_stage)
        self.proposals_dir = self.first_stage / "proposals"
        self.options = {
            "per_video": int(per_video),
            "ratios": tuple(int(r) for r in ratios),
            "top_k": train_top_k,
            "epoch_multiplier": int(epoch_multiplier),
            "seed": int(seed),
            "graph": dict(graph or {}),
        }
        if samples_per_kind(int(per_video), self.options["ratios"])[0] < 1:
            raise ValueError(f"per_video {per_video} with ratios {ratios} samples no foreground")
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.test_top_k, self.num_workers, self.seed = test_top_k, int(num_workers), int(seed)
        self.datasets: dict[str, Dataset] = {}
        self._proposals: dict[str, tuple[dict[str, VideoProposals], dict[str, Any]]] = {}
        self.stats: RegressionStats | None = None

    # -- what the base knows ---------------------------------------------------------
    @property
    def class_index(self):
        return self.base.class_index

    def proposals(self, split: str) -> tuple[dict[str, VideoProposals], dict[str, Any]]:
        """``split``'s proposals file, read once: (per video, made_by)."""
        if split not in self._proposals:
            path = self.proposals_dir / SPLIT_FILES[split]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: no proposals for the {split} split; write them with "
                    "`python -m salad_lightning.run mode=proposals ckpt_path=<the first "
                    "stage's checkpoint>`"
                )
            found, made_by = read_proposals(path)
            self._check_made_by(path, made_by)
            self._proposals[split] = found, made_by
        return self._proposals[split]

    def _check_made_by(self, path: Path, made_by: dict[str, Any]) -> None:
        """The file was made from a checkpoint of the first stage, on this data."""
        ckpt = Path(str(made_by.get("checkpoint", ""))).resolve()
        if self.first_stage.resolve() not in ckpt.parents:
            raise ValueError(
                f"{path}: made from the checkpoint {ckpt}, not one of {self.first_stage}'s; "
                "write this run's proposals with mode=proposals"
            )
        ours = self.base.hparams.annotation_file
        theirs = made_by.get("annotation_file")
        if (
            ours is not None
            and theirs is not None
            and Path(ours).resolve() != Path(theirs).resolve()
        ):
            raise ValueError(
                f"{path}: made for the annotation file {theirs}, but this run's data is {ours} "
                "(dataset.datamodule.annotation_file); write the proposals for this data"
            )

    def _videos(self, split: str) -> tuple[TADDataset, dict[str, VideoProposals]]:
        videos = self.base.whole_dataset(split)
        props, _ = self.proposals(split)
        missing = [v for v in videos.video_ids if v not in props]
        if missing:
            raise ValueError(
                f"{self.proposals_dir / SPLIT_FILES[split]}: no proposals for {len(missing)} of "
                f"the {split} split's {len(videos)} videos, e.g. {missing[:3]}; write them "
                "again with mode=proposals on this data"
            )
        return videos, props

    # -- set-up ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            train = PGCNTrainingSet(*self._videos("train"), **self.options)
            self.stats = RegressionStats.from_pools(train.pools)
            train.stats = self.stats
            self.datasets["train"] = train
        for split, stages in (
            ("val", ("fit", "validate")),
            ("test", ("test",)),
            ("predict", ("predict",)),
        ):
            if (stage is None or stage in stages) and split not in self.datasets:
                if split == "val" and not self._has_val():
                    continue
                if split == "test" and self.base.hparams.test_subset is None:
                    continue
                self.datasets[split] = PGCNVideoSet(
                    *self._videos(split), top_k=self.test_top_k, graph=self.options["graph"]
                )

    def _has_val(self) -> bool:
        try:
            self.base.whole_dataset("val")
        except ValueError:
            return False
        return True

    def facts(self, stages: Sequence[str]):
        """The base's facts, with the training set's regression statistics when fitting
        (the module keeps them: test and predict use the training set's)."""
        facts = self.base.facts(stages)
        for stage in stages:
            self.setup(stage)
        if "fit" in stages:
            facts.model_inputs["regression_stats"] = self.stats.to_dict()
        return facts

    def preflight_report(self, stages: Sequence[str], **kwargs: Any):
        """The base's pre-flight (every feature file), then every split's proposals."""
        report, problems = self.base.preflight_report(stages, **kwargs)
        for stage in stages:
            self.setup(stage)
        report["proposals"] = {
            split: {"file": str(self.proposals_dir / SPLIT_FILES[split]), **made_by}
            for split, (_, made_by) in self._proposals.items()
        }
        return report, problems

    # -- loaders -----------------------------------------------------------------------
    def _loader(self, split: str, *, training: bool, dataset: Dataset | None = None) -> DataLoader:
        ds = dataset if dataset is not None else self.datasets[split]
        sampler = BucketBatchSampler(
            ds.sample_lengths,
            self.batch_size if training else self.eval_batch_size,
            shuffle=training,
            bucket=not training,
            seed=self.seed,
            with_epoch=training,
        )
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate_train if training else collate_videos,
            num_workers=self.num_workers,
        )

    def whole_train_dataloader(self, sample: int | None = None, seed: int = 0) -> DataLoader:
        """Training videos whole with their proposals (all, or a fixed sample): the train
        fit (`train_fit.TrainFit`)."""
        videos = self.base.whole_dataset("train", sample, seed)
        props, _ = self.proposals("train")
        data = PGCNVideoSet(videos, props, top_k=self.test_top_k, graph=self.options["graph"])
        return self._loader("train_fit", training=False, dataset=data)
