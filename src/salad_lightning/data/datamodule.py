"""``SaladDataModule``: splits, datasets and loaders from typed arguments.

Defaults are THUMOS14's (train ``Validation``, validate on a 10% holdout of it,
test ``Test``); ActivityNet 1.3 sets ``train_subset="training"``,
``test_subset="validation"``, ``prefix="v_"``, ``resize_to=100``.

Under DDP every rank builds the same datasets (cheap: annotations, file checks and
``.npy`` headers) and :class:`BucketBatchSampler` gives each rank its own share of
batches, for every stage. Build the ``Trainer`` with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from salad_lightning.data.annotations import (
    AnnotationSet,
    ClassIndex,
    VideoRecord,
    load_annotations,
)
from salad_lightning.data.dataset import (
    CROP_MIN_KEEP,
    TADDataset,
    collate_videos,
    max_gt_steps,
    video_mapping,
)
from salad_lightning.data.detections import VideoGroundTruth
from salad_lightning.data.extracted import ExtractedFolder, config_record, read_extracted
from salad_lightning.data.features import FeatureSource
from salad_lightning.data.preflight import FileProblem, check_split
from salad_lightning.data.report import SplitData, build_report, summary_line
from salad_lightning.data.sampler import BucketBatchSampler

log = logging.getLogger(__name__)
PREFLIGHT_MODES = ("full", "headers")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
# geometry: "auto" reads a feature folder's features.json (salad-extract) when it has one;
# "config" takes stride, window, fps and feature_dim from the arguments alone
GEOMETRY_MODES = ("auto", "config")
# stride and window when neither the arguments nor a features.json give them: THUMOS14's
# layout in ActionFormer's I3D release
DEFAULT_STRIDE, DEFAULT_WINDOW = 4, 16


@dataclass(frozen=True)
class DataFacts:
    """What a model is built with from its data (:meth:`SaladDataModule.facts`).

    ``model_inputs``: values the data computes for the model when a run fits (SALAD's
    ``max_offset``: the longest training ground truth in steps); the session gives each
    to the model when its config leaves the key null.
    """

    class_names: tuple[str, ...] | None  # None: the data does not name its classes
    ground_truth_only: dict[str, tuple[VideoGroundTruth, ...]]  # per split: no features
    model_inputs: dict[str, Any] = field(default_factory=dict)
    # the features the stages read: their features.json's settings, or the config's geometry
    # (`SaladDataModule.features_record`); a checkpoint keeps it
    features: dict[str, Any] | None = None


def holdout_split(
    videos: list[VideoRecord], fraction: float, seed: int
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Deterministic (train, val) split: a seeded permutation of the sorted video ids.

    The holdout has ``round(fraction * n)`` videos, at least one (when ``fraction > 0``
    and there are two videos or more), and never all of them.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_holdout must be in [0, 1), found {fraction}")
    n = len(videos)
    n_val = 0 if fraction == 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    ids = sorted(v.video_id for v in videos)
    held = {ids[i] for i in np.random.default_rng(seed).permutation(n)[:n_val]}
    return [v for v in videos if v.video_id not in held], [v for v in videos if v.video_id in held]


class SplitDataModule(pl.LightningDataModule):
    """The loaders a data module gives Lightning, by split (``self.datasets`` after
    ``setup``; no validation loader when there is no ``val`` split): the subclass says
    how a split's loader is made (``_loader``)."""

    datasets: dict[str, Any]

    def _loader(self, split: str, *, training: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", training=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", training=False)


class SaladDataModule(SplitDataModule):
    """Datasets and loaders for training, validation, test and prediction.

    ``num_classes``, ``class_index``, ``max_offset`` and ``feature_dim`` work before
    ``setup`` (they read the annotation file, and one feature header for
    ``feature_dim`` when it is not given). ``setup(stage)`` builds the datasets of the
    stage and checks their feature files.

    ``predict_path``: a folder of feature files or one file, predicted whole; each
    video's duration and fps come from the annotation file when it lists the video,
    else from the folder's features.json, else from the feature length:
    ``T * stride / default_fps``. Without it, predict runs over every file of
    ``feature_dir`` (``rgb_dir``).

    ``geometry``: ``"auto"`` (default) reads ``features.json`` in ``feature_dir`` (and in
    the predict folder) when there is one (``salad-extract`` writes it,
    ``data/extracted.py``): fps, stride, window and feature_dim come from it, every
    video's time mapping uses the extraction's fps (the annotation file's per-video
    ``fps`` is the source video's rate, not the features'), and an argument that
    contradicts the file is an error naming both. ``stride`` / ``window`` left None
    are the file's, else 4 / 16. ``"config"``: the arguments alone, as without the file.
    """

    def __init__(
        self,
        *,
        annotation_file: str | None = None,
        num_classes: int | None = None,
        feature_dir: str | None = None,
        rgb_dir: str | None = None,
        flow_dir: str | None = None,
        prefix: str = "",
        ext: str = ".npy",
        feature_dim: int | None = None,
        train_subset: str | list[str] = "Validation",
        val_subset: str | list[str] | None = None,
        val_holdout: float = 0.1,
        split_seed: int = 0,
        test_subset: str | list[str] | None = "Test",
        stride: int | None = None,
        window: int | None = None,
        default_fps: float | None = None,
        downsample: int = 1,
        resize_to: int | None = None,
        max_seq_len: int | None = None,
        crop_min_keep: float = CROP_MIN_KEEP,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        bucket: bool = True,
        bucket_batches: int = 50,
        skip_missing: bool = False,
        preflight: str = "full",
        class_index_file: str | None = None,
        predict_path: str | None = None,
        geometry: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if preflight not in PREFLIGHT_MODES:
            raise ValueError(
                f"dataset.datamodule.preflight must be one of {PREFLIGHT_MODES}, found {preflight!r}"
            )
        if geometry not in GEOMETRY_MODES:
            raise ValueError(
                f"dataset.datamodule.geometry must be one of {GEOMETRY_MODES}, found {geometry!r}"
            )
        self.save_hyperparameters(logger=False)
        self.source: FeatureSource | None = None
        if predict_path is None or any(d is not None for d in (feature_dir, rgb_dir, flow_dir)):
            self.source = FeatureSource(
                feature_dir=feature_dir,
                rgb_dir=rgb_dir,
                flow_dir=flow_dir,
                prefix=prefix,
                ext=ext,
                feature_dim=feature_dim,
            )
        self._annotations: AnnotationSet | None = None
        self._class_index: ClassIndex | None = None
        self._feature_dim = feature_dim
        self._extracted: dict[str, ExtractedFolder | None] = {}  # features.json per folder
        self.datasets: dict[str, TADDataset] = {}
        # set by the pre-flight: a split's missing or unreadable files are reported
        # together instead of stopping at the first
        self._defer_file_errors = False

    # -- facts about the data ---------------------------------------------------
    @property
    def annotations(self) -> AnnotationSet:
        if self._annotations is None:
            if self.hparams.annotation_file is None:
                raise ValueError("annotation_file is not set (only predict runs without one)")
            given = self._given_class_index()
            self._annotations = load_annotations(
                self.hparams.annotation_file,
                class_index=given,
                num_classes=self.hparams.num_classes,
            )
            self._class_index = self._annotations.class_index
        return self._annotations

    def _given_class_index(self) -> ClassIndex | None:
        if self._class_index is not None:
            return self._class_index
        if self.hparams.class_index_file is not None:
            index = ClassIndex.load(self.hparams.class_index_file)
            k = self.hparams.num_classes
            if k is not None and len(index) != k:
                raise ValueError(
                    f"{self.hparams.class_index_file}: {len(index)} classes but "
                    f"dataset.num_classes is {k}"
                )
            self._class_index = index
        return self._class_index

    @property
    def class_index(self) -> ClassIndex:
        if self._given_class_index() is not None:
            return self._class_index
        return self.annotations.class_index

    @property
    def num_classes(self) -> int:
        return len(self.class_index)

    # -- geometry: the arguments', or a feature folder's features.json -------------
    def _folder_features(self, folder: str | None) -> ExtractedFolder | None:
        """``folder``'s features.json (read once), checked against the arguments; None
        when it has none or with ``geometry="config"``."""
        if folder is None or self.hparams.geometry == "config":
            return None
        key = str(Path(folder).resolve())
        if key not in self._extracted:
            found = read_extracted(folder)
            if found is not None:
                self._check_arguments(found)
                log.info(
                    "%s: features at %g fps, stride %d, window %d, %d-d; every video's time "
                    "mapping uses this fps (not the source videos')",
                    found.path, found.fps, found.stride, found.window, found.feature_dim,
                )  # fmt: skip
            self._extracted[key] = found
        return self._extracted[key]

    def _check_arguments(self, found: ExtractedFolder) -> None:
        """An argument that contradicts the file is an error naming both: the features were
        made with the file's settings, so a typed value is a mistake (or another folder)."""
        h = self.hparams
        given = [
            ("dataset.datamodule.stride", h.stride, "stride", found.stride),
            ("dataset.datamodule.window", h.window, "window", found.window),
            ("dataset.datamodule.default_fps", h.default_fps, "fps", found.fps),
            ("dataset.feature_dim", h.feature_dim, "feature_dim", found.feature_dim),
        ]
        wrong = [
            f"{key}={mine} but {name} {theirs:g} in the file"
            for key, mine, name, theirs in given
            if mine is not None and float(mine) != float(theirs)
        ]
        if wrong:
            raise ValueError(
                f"{found.path} contradicts the config: " + "; ".join(wrong) + ". The features "
                "were made with the file's settings: set these keys to null to take them from "
                "it (dataset=extracted does), or set dataset.datamodule.geometry=config to "
                "ignore the file"
            )

    def _geometry(self, folder: str | None) -> tuple[ExtractedFolder | None, dict[str, Any]]:
        """``folder``'s features.json (None without one) and the time-mapping arguments of
        its videos (`video_mapping`'s keywords): the file's geometry, else the arguments'."""
        h = self.hparams
        found = self._folder_features(folder)
        if found is not None:
            stride, window, fps = found.stride, found.window, found.fps
        else:
            stride = h.stride if h.stride is not None else DEFAULT_STRIDE
            window = h.window if h.window is not None else DEFAULT_WINDOW
            fps = h.default_fps
        return found, {
            "stride": stride,
            "window": window,
            "default_fps": fps,
            "downsample": h.downsample,
            "resize_to": h.resize_to,
        }

    @staticmethod
    def _at_features_fps(videos: Sequence[VideoRecord], found: ExtractedFolder | None) -> list:
        """The videos of an extracted folder map at the extraction's fps: the features are
        at that rate whatever the source video's (the annotation file's ``fps``)."""
        if found is None:
            return list(videos)
        return [v if v.fps == found.fps else dataclasses.replace(v, fps=found.fps) for v in videos]

    def _predict_folder(self) -> str | None:
        path = self.hparams.predict_path
        if path is None:
            return self.hparams.feature_dir
        return str(Path(path).parent) if Path(path).is_file() else str(path)

    def features_record(self, stages: Sequence[str] = ("fit",)) -> dict[str, Any]:
        """What the features that ``stages`` read are (``predict``: the predict folder's;
        otherwise ``feature_dir``'s): their features.json's settings with the file's path as
        ``source``, else the arguments' geometry with ``source`` ``"config"`` and backbone
        ``"unknown"`` (`~salad_lightning.data.extracted`). A checkpoint keeps it."""
        h = self.hparams
        folder = self._predict_folder() if "predict" in stages else h.feature_dir
        found, geometry = self._geometry(folder)
        if found is not None:
            return found.record()
        try:
            dim: int | None = self.feature_dim
        except (ValueError, OSError):  # no file to read it from (yet)
            dim = None
        return config_record(
            fps=geometry["default_fps"],
            stride=geometry["stride"],
            window=geometry["window"],
            feature_dim=dim,
            resize_to=h.resize_to,
        )

    @property
    def max_offset(self) -> int:
        """Longest training ground truth in feature steps, rounded up (docs/method.md §2 default W)."""
        found, geometry = self._geometry(self.hparams.feature_dir)
        train = self._at_features_fps(self._train_val_records()[0], found)
        return max_gt_steps(train, [video_mapping(v, **geometry) for v in train])

    @property
    def feature_dim(self) -> int:
        """C after RGB+flow concatenation (before any resampling)."""
        if self._feature_dim is None:
            found = self._folder_features(self.hparams.feature_dir)
            if found is not None:
                self._feature_dim = found.feature_dim
        if self._feature_dim is None:
            if self.datasets:
                ds = next(iter(self.datasets.values()))
                self._feature_dim = int(ds.source.load(ds.video_ids[0]).shape[1])
            elif self.source is None:
                raise ValueError("feature_dim: set it, or call setup('predict') first")
            else:
                train, _ = self._train_val_records()
                present = self.source.missing([v.video_id for v in train])
                present = [v.video_id for v in train if v.video_id not in set(present)]
                if not present:
                    raise FileNotFoundError("feature_dim: no training video has a feature file")
                shape = self.source.scan_shape(present[0]) or self.source.load(present[0]).shape
                self._feature_dim = int(shape[1])
        return self._feature_dim

    # -- splits -----------------------------------------------------------------
    def _train_val_records(self) -> tuple[list[VideoRecord], list[VideoRecord]]:
        h = self.hparams
        train = self.annotations.select(h.train_subset)
        if h.val_subset is not None:
            return train, self.annotations.select(h.val_subset)
        return holdout_split(train, h.val_holdout, h.split_seed)

    def _dataset(
        self,
        videos: list[VideoRecord],
        *,
        training: bool,
        name: str,
        source: FeatureSource | None = None,
    ) -> TADDataset:
        h = self.hparams
        source = source or self.source
        if source is None:
            raise ValueError(f"{name}: set feature_dir (or rgb_dir and flow_dir)")
        found, geometry = self._geometry(source.feature_dir)
        if found is not None and source.feature_dim is None:
            source = dataclasses.replace(source, feature_dim=found.feature_dim)
        return TADDataset(
            self._at_features_fps(videos, found),
            source,
            training=training,
            max_seq_len=h.max_seq_len,
            crop_min_keep=h.crop_min_keep,
            seed=h.seed,
            skip_missing=h.skip_missing,
            name=name,
            defer_file_errors=self._defer_file_errors,
            **geometry,
        )

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        # idempotent: Lightning calls setup again after the pipeline's own call
        if stage in ("fit", "validate", None):
            train, val = self._train_val_records()
            if stage != "validate" and "train" not in self.datasets:
                self.datasets["train"] = self._dataset(train, training=True, name="train")
            if val and "val" not in self.datasets:
                self.datasets["val"] = self._dataset(val, training=False, name="val")
        if stage in ("test", None) and h.test_subset is not None and "test" not in self.datasets:
            test = self.annotations.select(h.test_subset)
            self.datasets["test"] = self._dataset(test, training=False, name="test")
        if stage == "predict":
            records, source = self._predict_records()
            self.datasets["predict"] = self._dataset(
                records, training=False, name="predict", source=source
            )

    def preflight_report(
        self, stages: Sequence[str], *, workers: int | None = None, log_summary: bool = True
    ) -> tuple[dict[str, Any], list[FileProblem]]:
        """Build the splits of ``stages`` (``fit``, ``validate``, ``test``, ``predict``),
        check every feature file they read (:mod:`~salad_lightning.data.preflight`; values
        too with ``preflight="full"``) and return ``data_report.json``'s content and the
        unusable files (missing ones without ``skip_missing`` among them). Logs one summary
        line per split."""
        self._defer_file_errors = True
        try:
            for stage in stages:
                self.setup(stage)
        finally:
            self._defer_file_errors = False
        names = [n for st in stages for n in STAGE_SPLITS.get(st, (st,)) if n in self.datasets]
        names = list(dict.fromkeys(names))
        values = self.hparams.preflight == "full"
        problems: list[FileProblem] = []
        splits = []
        for name in names:
            ds = self.datasets[name]
            problems += [FileProblem(name, v, path, why) for v, path, why in ds.file_errors]
            problems += check_split(
                ds.source, ds.video_ids, split=name, values=values, workers=workers
            )
            splits.append(
                SplitData(
                    name=name,
                    subsets=sorted({v.subset for v in ds.records}),
                    records=ds.records,
                    kept_ids=ds.video_ids,
                    missing_ids=list(ds.missing),
                    raw_lengths=dict(zip(ds.video_ids, ds.raw_lengths)),
                    stride=None if ds.resize_to is not None else ds.stride,
                    default_fps=ds.default_fps,
                )
            )
        h = self.hparams
        readable = h.annotation_file is not None and Path(h.annotation_file).is_file()
        annotations = self.annotations if readable or "predict" not in stages else None
        index = self._given_class_index() or (annotations and annotations.class_index)
        report = build_report(
            annotation_file=h.annotation_file,
            annotations=annotations,
            class_index=index,
            splits=splits,
            problems=problems,
            checked_values=values,
        )
        for name, split in report["splits"].items() if log_summary else ():
            log.info(summary_line(name, split))
        for name in names:  # a split that left videos out is rebuilt (and raises) on use
            if self.datasets[name].file_errors:
                del self.datasets[name]
        return report, problems

    def ground_truth_without_features(self, split: str) -> list[VideoGroundTruth]:
        """Ground truth of the split's videos that have no feature file (skipped with
        ``skip_missing``). The official evaluator counts them (positives that nothing
        detects), so a run's evaluation store takes them too, with no detection."""
        if split not in self.datasets:
            return []
        ds = self.datasets[split]
        gone = set(ds.missing)
        return [v.ground_truth() for v in ds.records if v.video_id in gone]

    @property
    def has_annotations(self) -> bool:
        """Whether the annotation file is there to read (``predict`` runs without one)."""
        path = self.hparams.annotation_file
        return path is not None and Path(path).is_file()

    def facts(self, stages: Sequence[str]) -> DataFacts:
        """What a model is built with from this data, for the given stages (``fit``,
        ``validate``, ``test``, ``predict``): the class names when the data names them
        (an annotation file or a class index file), the longest training ground truth in
        steps when fitting, and the evaluated splits' videos without features. Builds the
        stages' datasets (as ``setup`` does: idempotent)."""
        for stage in stages:
            self.setup(stage)
        names = None
        if self.has_annotations or self.hparams.class_index_file is not None:
            names = tuple(self.class_index.names)
        return DataFacts(
            class_names=names,
            model_inputs={"max_offset": self.max_offset} if "fit" in stages else {},
            features=self.features_record(stages),
            ground_truth_only={
                split: tuple(self.ground_truth_without_features(split))
                for stage in stages
                for split in STAGE_SPLITS.get(stage, ())
                if split != "train"
            },
        )

    def _predict_records(self) -> tuple[list[VideoRecord], FeatureSource]:
        h, src = self.hparams, self.source
        if h.predict_path is not None and Path(h.predict_path).is_file():
            path = Path(h.predict_path)
            # the dataset's file prefix (ActivityNet's "v_") is not part of the video id
            prefix = h.prefix if h.prefix and path.stem.startswith(h.prefix) else ""
            src = FeatureSource(
                feature_dir=str(path.parent),
                prefix=prefix,
                ext=path.suffix,
                feature_dim=h.feature_dim,
            )
            ids = [path.stem[len(prefix) :]]
        else:
            folder = Path(h.predict_path) if h.predict_path is not None else Path(src.dirs[0])
            if not folder.is_dir():
                raise FileNotFoundError(f"predict_path: no such file or folder: {folder}")
            if h.predict_path is not None:
                src = FeatureSource(
                    feature_dir=str(folder), prefix=h.prefix, ext=h.ext, feature_dim=h.feature_dim
                )
            pattern = f"{src.prefix}*{src.ext}"
            ids = sorted(p.name[len(src.prefix) : -len(src.ext)] for p in folder.glob(pattern))
            if not ids:
                raise FileNotFoundError(f"predict_path: no {pattern} files in {folder}")
        # Features alone are enough: an annotation file that is not there (the dataset's
        # default path on a machine that only has the new videos) is not needed.
        has_file = h.annotation_file is not None and Path(h.annotation_file).is_file()
        if h.annotation_file is not None and not has_file:
            log.info(
                "predict: no annotation file %s; durations from the features", h.annotation_file
            )
        known = self.annotations.videos if has_file else {}
        found, geometry = self._geometry(src.feature_dir)
        records = []
        for vid in ids:
            if vid in known:
                duration, fps = known[vid].duration, known[vid].fps
            elif found is not None and vid in found.durations:  # the video's own length
                duration, fps = found.durations[vid], found.fps
            else:
                if h.resize_to is not None:
                    raise ValueError(
                        f"predict: video {vid} is not in the annotation file, and its duration "
                        f"cannot come from its features: this dataset resizes every video to "
                        f"resize_to={h.resize_to} steps, so a step has no fixed length in "
                        "seconds. Add the video with its duration to the annotation file "
                        "(dataset.datamodule.annotation_file)"
                    )
                if geometry["default_fps"] is None:
                    raise ValueError(
                        f"predict: video {vid} is not in the annotation file; set "
                        "dataset.datamodule.default_fps=<frames per second> (and "
                        "dataset.datamodule.stride, frames per feature step) to derive its "
                        "duration from its feature length"
                    )
                t = src.scan_shape(vid) or src.load(vid).shape
                duration, fps = t[0] * geometry["stride"] / geometry["default_fps"], None
            records.append(
                VideoRecord(vid, "predict", duration, fps, np.zeros((0, 2)), np.zeros(0, np.int64))
            )
        return records, src

    # -- loaders ----------------------------------------------------------------
    def _loader(self, split: str, *, training: bool) -> DataLoader:
        h = self.hparams
        if split not in self.datasets:
            raise RuntimeError(f"no {split} dataset: call setup() first, or set its subset")
        ds = self.datasets[split]
        bs = h.batch_size if training else (h.eval_batch_size or h.batch_size)
        sampler = BucketBatchSampler(
            ds.sample_lengths,
            bs,
            shuffle=training,
            bucket=h.bucket,
            bucket_batches=h.bucket_batches,
            seed=h.seed,
            with_epoch=training,
        )
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate_videos,
            num_workers=h.num_workers,
            pin_memory=h.pin_memory,
            persistent_workers=h.persistent_workers and h.num_workers > 0,
        )

    def whole_dataset(self, split: str, sample: int | None = None, seed: int = 0) -> TADDataset:
        """``split``'s videos whole (no crops): ``train`` (all training videos, or a fixed
        sample of ``sample`` of those with features, drawn with ``seed``), ``val``,
        ``test`` or ``predict`` (built as ``setup`` builds them). A second stage reads its
        videos from here."""
        if split != "train":
            stage = {"val": "validate", "test": "test", "predict": "predict"}.get(split)
            if stage is None:
                raise ValueError(
                    f"whole_dataset: unknown split {split!r} (train, val, test, predict)"
                )
            if split not in self.datasets:
                self.setup(stage)
            if split not in self.datasets:
                raise ValueError(f"whole_dataset: the data has no {split} split")
            return self.datasets[split]
        name = "train_whole" if sample is None else f"train_sample_{sample}_{seed}"
        if name not in self.datasets:
            train, _ = self._train_val_records()
            if sample is not None:
                if "train" not in self.datasets:
                    self.setup("fit")
                ids = sorted(self.datasets["train"].video_ids)
                rng = np.random.default_rng(seed)
                chosen = {ids[i] for i in rng.permutation(len(ids))[: int(sample)]}
                train = [v for v in train if v.video_id in chosen]
            self.datasets[name] = self._dataset(train, training=False, name="train")
        return self.datasets[name]

    def whole_train_dataloader(self, sample: int | None = None, seed: int = 0) -> DataLoader:
        """Training videos whole (no crops), longest first: all of them (e.g. to export
        per-video values), or a fixed sample of ``sample`` of those with features, drawn
        with ``seed`` (a run's train fit is measured on it)."""
        ds = self.whole_dataset("train", sample, seed)
        name = next(k for k, v in self.datasets.items() if v is ds)
        return self._loader(name, training=False)
